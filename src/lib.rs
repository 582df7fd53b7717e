//! shardcast: a thread-per-core live video streaming server.
//!
//! - [`server`]: the drivers that connect sockets, files and timers on each shard to the
//!   protocol cores, and the config, CLI and HTTP routes.
//!
//! The data flow: socket → protocol core → stream → viewers. The protocol cores and the
//! media model they share are the `shardcast-proto` crate (`proto/`, written `proto::`
//! here): sans-IO, bytes and time in; events, frames and bytes out. The runtime itself
//! (executors, rings, feeds, the stream directory) is the `shards` crate, which knows
//! nothing of protocols; its rings learn what they need about a frame from
//! `server::media::describe_frame`.

pub mod server;
