//! Sans-IO protocol cores. Nothing here touches a socket, a file, a clock or the runtime:
//! bytes and time go in, events, frames and bytes to send come out.
#![forbid(unsafe_code)]

pub mod flv;
pub mod fmp4;
pub mod hls;
pub mod http;
pub mod mux;
pub mod rtmp;
pub mod ts;

#[cfg(test)]
pub(crate) mod testkit;
