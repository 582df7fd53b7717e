//! The sans-IO RTMP core: handshake, chunk stream, protocol control, AMF0/AMF3 and the
//! NetConnection/NetStream command exchange, for both ends of a connection.
//!
//! - [`RtmpServerConn`]: one accepted connection (a publisher or a player). Bytes and
//!   time in, [`RtmpEvent`]s out; the driver answers connect/publish/play requests with
//!   the decision methods.
//! - [`RtmpClientConn`]: the other end, for tests, relaying and the benchmark swarm.
//! - [`serialize_media`]: one audio/video/data message as complete chunks with a type 0
//!   header and an absolute timestamp, so the same bytes go to every player.
//!
//! A driver's loop for one server connection:
//!
//! ```text
//! conn.handle_timeout(now)                      // once, at accept: starts the handshake timer
//! loop {
//!     read bytes -> conn.handle_bytes(now, &bytes)?   (error: log it, close the socket)
//!     or the timer fired -> conn.handle_timeout(now)
//!     while let Some(ev) = conn.poll_event() {
//!         Transmit(b)            -> write b
//!         ConnectRequested{..}   -> conn.accept_connect()? / conn.reject_connect(why)?
//!         PublishRequested{..}   -> conn.accept_publish()? / conn.reject_publish(code, why)?
//!         PlayRequested{..}      -> conn.accept_play()? / conn.reject_play(code, why)?
//!         Media{..}              -> hand to proto::flv / the stream
//!         Unpublished | PlayStopped | ReceiveAudio(_) | ReceiveVideo(_) -> update the stream
//!         Closed(_)              -> close after writing what came before
//!     }
//!     while playing: write serialize_media(..) bytes shared by all players,
//!                    conn.record_media_sent(n); on publisher loss conn.publish_ended()
//!     sleep until readable or conn.poll_timeout()
//! }
//! ```
//!
//! What this module does not do: parse FLV tag bodies (audio/video/data payloads are
//! opaque `Bytes` here; `proto::flv` reads them), map app/stream names to stream keys,
//! authenticate, or touch sockets and clocks.

pub mod amf0;
pub mod amf3;
pub mod chunk;
mod client;
pub mod command;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod handshake;
pub mod message;
mod server;
mod session;

pub use amf0::{Amf0Value, AmfError};
pub use amf3::Amf3Value;
pub use chunk::{serialize_media, serialize_message, ChunkDecoder, ChunkDecoderConfig, RawMessage};
pub use client::{ClientMode, RtmpClientConfig, RtmpClientConn, RtmpClientEvent};
pub use handshake::HandshakeKind;
pub use message::{MediaKind, PublishType};
pub use server::{CloseReason, PlayStart, RtmpEvent, RtmpServerConfig, RtmpServerConn};

/// Chunk stream id the server uses for video messages to players.
pub const VIDEO_CSID: u32 = 6;
/// Chunk stream id for audio messages.
pub const AUDIO_CSID: u32 = 4;
/// Chunk stream id for data (`onMetaData`) messages.
pub const DATA_CSID: u32 = 5;
/// Chunk stream id for protocol control messages (fixed by the spec).
pub const CONTROL_CSID: u32 = 2;
/// Chunk stream id for command messages.
pub const COMMAND_CSID: u32 = 3;
/// The message stream id the server hands out from `createStream` and plays on.
pub const PLAY_STREAM_ID: u32 = 1;
/// The chunk size the server announces after connect and uses for everything it sends.
pub const OUTGOING_CHUNK_SIZE: u32 = 4096;
/// The chunk size every RTMP connection starts with (spec 5.4.1).
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Largest chunk size accepted from a peer. The spec allows up to 2^31-1 but no chunk can
/// be larger than a message, whose length field has 24 bits.
pub const MAX_CHUNK_SIZE: u32 = 1 << 24;
/// Default limit on one message's length.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 << 20;
/// Default limit on chunk streams with state at once.
pub const DEFAULT_MAX_CHUNK_STREAMS: usize = 64;
/// Longest app (in connect) or stream name (in publish and play), without its `?query`.
/// A stream key allows 128 bytes per part (`media::StreamKey`); this bounds what a peer
/// can put into events, replies and logs at all.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest query string (the part after `?`, which carries tokens) of an app, a tcUrl or
/// a stream name.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Longest tcUrl in connect: a host, a port and an app, with a query.
pub const MAX_TC_URL_BYTES: usize = 1024 + MAX_QUERY_BYTES;

/// Errors of the RTMP layer. Any of them ends the connection: the driver logs it and
/// closes the socket.
#[derive(Debug, thiserror::Error)]
pub enum RtmpError {
    #[error("peer asked for RTMP version {version} in its handshake; only version 3 (plain RTMP) is supported (6 is RTMPE, not supported)")]
    BadHandshakeVersion { version: u8 },
    #[error("handshake failed: {detail}")]
    Handshake { detail: &'static str },
    #[error("peer set chunk size {size}; valid sizes are 1 to {max}")]
    ChunkSizeOutOfRange { size: u32, max: u32 },
    #[error("message of {size} bytes on chunk stream {csid} exceeds the {max} byte limit")]
    MessageTooLarge { csid: u32, size: usize, max: usize },
    #[error("peer opened more than {max} chunk streams")]
    TooManyChunkStreams { max: usize },
    #[error("peer has {bytes} bytes of partial messages buffered, over the {max} byte limit")]
    TooMuchBuffered { bytes: usize, max: usize },
    #[error("chunk stream {csid} began with a type {fmt} header; a chunk stream's first chunk must have a type 0 header")]
    MissingMessageHeader { csid: u32, fmt: u8 },
    #[error("chunk stream id {csid} cannot be encoded (valid: 2 to 65599)")]
    BadChunkStreamId { csid: u32 },
    #[error("unknown RTMP message type {type_id} on chunk stream {csid}; the chunk stream is probably corrupt")]
    UnknownMessageType { type_id: u8, csid: u32 },
    #[error("malformed {what} message: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("malformed AMF in a {what} message: {source}")]
    Amf {
        what: &'static str,
        #[source]
        source: AmfError,
    },
    #[error("{bytes} bytes arrived while a decision was pending, over the {max} byte limit")]
    Backlog { bytes: usize, max: usize },
    #[error("{action} is not possible now: {state}")]
    InvalidState {
        action: &'static str,
        state: &'static str,
    },
}

impl RtmpError {
    pub(crate) fn amf(what: &'static str) -> impl FnOnce(AmfError) -> RtmpError {
        move |source| RtmpError::Amf { what, source }
    }
}
