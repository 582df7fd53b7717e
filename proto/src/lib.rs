//! shardcast-proto: shardcast's sans-IO protocol cores and the media model they share.
//! Nothing here touches a socket, a file, a clock or the runtime (no glommio, no
//! `shards`): bytes and time go in, events, frames and bytes to send come out, so every
//! core is tested without sockets and fuzzed.
//!
//! - [`media`]: frames, codecs, stream keys, timestamp repair, and readers for codec
//!   configuration records.
//! - Protocol cores: [`rtmp`] (handshake, chunk stream, commands), [`flv`] (tags and
//!   files), [`http`] (requests, responses, chunked bodies), and the packagers [`ts`],
//!   [`fmp4`] and [`hls`] (playlists, LL-HLS parts) behind the [`mux`] interface.
//! - [`auth`]: signed publish/play tokens (format v1, keyring, the one `check` every
//!   protocol makes) and finding them in URL and RTMP queries.
//!
//! The server (the `shardcast` crate) drives these from its shards: socket → protocol
//! core → stream → viewers.
//!
//! The `fuzzing` modules (one per parser area) hold the fuzz targets' entry points; they
//! are built for tests and with the `fuzzing` feature only.
#![forbid(unsafe_code)]

pub mod media;

pub mod auth;
pub mod flv;
pub mod fmp4;
pub mod hls;
pub mod http;
pub mod mux;
pub mod rtmp;
pub mod ts;

#[cfg(test)]
pub(crate) mod testkit;
