//! shardcast: a thread-per-core live video streaming server.
//!
//! - [`media`]: the media model every protocol shares (frames, codecs, stream keys) and
//!   bitstream readers for codec configuration records.
//! - [`proto`]: sans-IO protocol cores (bytes and time in; events, frames and bytes out).
//! - [`server`]: the drivers that connect sockets, files and timers on each shard to the cores.
//!
//! The runtime itself (executors, rings, feeds, the stream directory) is the `shards` crate,
//! which knows nothing of protocols.

pub mod media;
pub mod proto;
pub mod server;
