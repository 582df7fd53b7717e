//! Drivers: connect the shard runtime's sockets, files and timers to the sans-IO cores.
//!
//! Layers, each importing only the ones above it (`tests/layout.rs` checks the graph):
//! - [`config`], [`metrics`], [`cmd`], [`media`] (frames on the rings), [`budget`]:
//!   plain data;
//! - [`streams`]: the per-shard stream table and the owner-side stream state;
//!   [`admission`]: who may connect (`[limits]`: per IP, accept rate, global);
//!   [`access`]: who may publish and play (tokens, hooks, audit, the API token);
//! - [`shard`]: the shard context every driver takes;
//! - drivers: [`ingest`] (the publishing side), [`egress`] (the viewer write path),
//!   [`rtmp`], [`http`] (HTTP-FLV, [`hls`], [`api`], metrics), [`record`]
//!   (recordings through io_uring), [`pacing`];
//! - [`app`]: the composition root: start-up, listeners, dispatch, shutdown.

pub mod access;
pub mod admission;
pub mod api;
pub mod app;
pub mod budget;
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
pub mod streams;

pub use app::{run, ServerError};
