//! What one shard asks of another: the typed commands that cross the shard mesh
//! (`hub.send(to, ShardCmd::..)`; a shard's own commands are handled at once). The
//! composition root (`server::app`) dispatches them to the drivers.
//!
//! Every command owns its data; nothing here runs code or holds a reference to the
//! sending shard.

use std::net::SocketAddr;

use proto::media::StreamKey;
use proto::rtmp::RtmpServerConn;

/// A publisher connection handed to the stream's owner shard: the socket and the
/// connection's state move, the publish is retried there.
pub struct Handover {
    pub fd: std::os::fd::OwnedFd,
    pub conn: RtmpServerConn,
    pub peer: Option<SocketAddr>,
    pub app: Option<String>,
    /// The stream to publish (after any hook redirect): the publish was already
    /// allowed on the first shard and is not decided again.
    pub key: StreamKey,
    /// A hook's recording override for this publish.
    pub record: Option<bool>,
}

pub enum ShardCmd {
    /// Serve this publisher on the receiving shard (which owns `key`'s stream).
    AdoptPublisher(Box<Handover>),
    /// The owner produced a new HLS part or segment of `key`: wake blocked reloads.
    HlsUpdated { key: StreamKey },
    /// Disconnect `key`'s publisher if it is on the receiving shard (API kick).
    Kick { key: StreamKey },
    /// The owner ended `key`'s stream: wake requests blocked on it.
    StreamEnded { key: StreamKey },
}

impl std::fmt::Debug for ShardCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardCmd::AdoptPublisher(h) => write!(f, "AdoptPublisher({})", h.key),
            ShardCmd::HlsUpdated { key } => write!(f, "HlsUpdated({key})"),
            ShardCmd::Kick { key } => write!(f, "Kick({key})"),
            ShardCmd::StreamEnded { key } => write!(f, "StreamEnded({key})"),
        }
    }
}
