//! The media model shared by every protocol: [`Frame`], [`Codec`], [`StreamKey`], and the
//! codec configuration readers in [`codec`]. No I/O, no clock.

pub mod codec;
mod frame;
mod key;
pub mod timeline;

pub use frame::{AudioCodec, Codec, Frame, FrameKind, Track, VideoCodec};
pub use key::{StreamKey, StreamKeyError};
