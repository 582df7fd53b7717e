//! The RTMP chunk stream (spec section 5.3): messages split into chunks of at most the
//! negotiated chunk size, each with a basic header (format + chunk stream id), a message
//! header of 11, 7, 3 or 0 bytes, and an optional extended timestamp.
//!
//! [`ChunkDecoder`] reassembles messages; the [`encoder`] functions split them. Protocol
//! control (Set Chunk Size, Abort) is applied by the caller, which sees those messages
//! before it decodes the next chunk.

pub mod decoder;
pub mod encoder;

pub use decoder::{ChunkDecoder, ChunkDecoderConfig, RawMessage};
pub use encoder::{serialize_media, serialize_message, write_message};

/// The 24-bit timestamp field value that says "the real value is in the 4-byte extended
/// timestamp field".
pub(crate) const EXTENDED_TIMESTAMP: u32 = 0x00FF_FFFF;
