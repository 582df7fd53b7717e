//! Drivers: connect the shard runtime's sockets, files and timers to the sans-IO cores.
//!
//! - [`shard`]: start-up, listeners, shutdown; [`admission`]: who may connect; [`media`]: frames on the rings.
//! - [`rtmp`], [`http`] (HTTP-FLV, HLS, API, metrics): connection drivers.
//! - [`egress`]: the shared viewer write path; [`hls`]: packagers and playlist serving;
//!   [`record`]: recordings through io_uring.

pub mod admission;
pub mod api;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod egress;
pub mod hls;
pub mod http;
pub mod ingest;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod pacing;
pub mod record;
pub mod rtmp;
pub mod shard;

pub use shard::{run, ServerError};
