//! MPEG-TS (ISO/IEC 13818-1) for HLS: the [`TsMuxer`], PSI tables, PES packetization,
//! and a [`reader`] that demuxes our output (and ffmpeg's) for tests and fuzzing.

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod muxer;
pub mod pes;
pub mod psi;
pub mod reader;

pub use muxer::TsMuxer;

pub const PACKET_SIZE: usize = 188;
pub const SYNC_BYTE: u8 = 0x47;
