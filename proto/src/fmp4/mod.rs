//! Fragmented MP4 / CMAF: the box writer, the init segment (`ftyp` + `moov`), media
//! fragments (`moof` + `mdat`), and a minimal reader for tests and fuzzing.
//!
//! [`Fmp4Muxer`] serves HLS/LL-HLS fMP4 segments and fragmented-MP4 recordings (a file is
//! the init segment followed by fragments, so a crash loses at most the fragment being
//! written).

pub mod boxes;
pub mod fragment;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod init;
pub mod muxer;
pub mod reader;
#[cfg(test)]
pub(crate) mod testsupport;

pub use muxer::Fmp4Muxer;
