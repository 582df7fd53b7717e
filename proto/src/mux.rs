//! The seam between segment packagers (HLS, recording) and container muxers (MPEG-TS,
//! fMP4/CMAF). A muxer turns frames into container bytes; the packager decides where
//! segments and parts begin and end.

use bytes::Bytes;

use crate::media::Frame;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MuxError {
    #[error("{codec} is not supported by the {container} muxer")]
    UnsupportedCodec {
        codec: String,
        container: &'static str,
    },
    #[error("media frame for {track} arrived before its codec configuration")]
    MissingConfig { track: &'static str },
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
}

/// A container muxer driven by a packager.
///
/// Call order: configs and metadata may come at any time (they update the muxer's
/// track state); `start_segment` before the first media frame of every segment;
/// `push` for each frame in decode order; `take_fragment` whenever the packager closes
/// a part or a segment.
pub trait Muxer {
    /// The initialization segment (fMP4: `ftyp` + `moov`), available once the codec
    /// configs of the tracks are known; `None` for containers that have none (TS), or
    /// before any config arrived. Changes when a codec config changes.
    fn init_segment(&mut self) -> Option<Bytes>;

    /// The next bytes begin a new segment (TS: PAT and PMT go first).
    fn start_segment(&mut self);

    /// Add one frame. Config and metadata frames update state and produce no sample.
    fn push(&mut self, frame: &Frame) -> Result<(), MuxError>;

    /// All bytes muxed since the last call. For fMP4 this is one `moof`+`mdat`
    /// fragment; `end_dts_ms` is where the next fragment starts, and it fixes the
    /// duration of each track's last sample. Empty when nothing was pushed.
    fn take_fragment(&mut self, end_dts_ms: u64) -> Bytes;
}
