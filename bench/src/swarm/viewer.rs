//! One swarm viewer's protocol state, sans-IO: bytes from the server in, bytes to send
//! and frame accounting out. The event loop in `net` owns the sockets.
//!
//! - RTMP: the library's client core (handshake, chunk stream, acknowledgements, pings)
//!   in play mode.
//! - HTTP-FLV: one GET, the response head, a chunked or close-delimited body, FLV tags.
//!
//! Every tag goes through `flv::parse_body`, so keyframes are found the way a player
//! finds them, legacy FLV and Enhanced RTMP (FourCC) alike.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use proto::flv::{self, FlvError, FlvReader, TagKind};
use proto::http::{self, ChunkedDecoder, HttpError, Limits};
use proto::media::FrameKind;
use proto::rtmp::{ClientMode, RtmpClientConfig, RtmpClientConn, RtmpClientEvent, RtmpError};

use crate::ledger::{Histograms, Ledger, Tally};

/// The largest HTTP chunk or FLV tag a viewer accepts: a 2.5 Mbps keyframe is well under.
const MAX_TAG_BYTES: usize = 8 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Rtmp,
    HttpFlv,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::HttpFlv => "http-flv",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    #[error("rtmp: {0}")]
    Rtmp(#[from] RtmpError),
    #[error("http: {0}")]
    Http(#[from] HttpError),
    #[error("flv: {0}")]
    Flv(#[from] FlvError),
    #[error("server refused: {0}")]
    Refused(String),
}

/// What a viewer needs to play: where and what.
#[derive(Clone, Debug)]
pub struct Target {
    /// `host:port` for the HTTP Host header and the RTMP tcUrl.
    pub authority: String,
    pub app: String,
    pub stream: String,
}

pub struct Viewer {
    pub protocol: Protocol,
    state: State,
    pub tally: Tally,
    tx: VecDeque<Bytes>,
}

enum State {
    Rtmp(Box<RtmpClientConn>),
    Flv(Box<FlvState>),
}

struct FlvState {
    head: BytesMut,
    /// `None` until the response head is in; then whether the body is chunked.
    body: Option<Option<ChunkedDecoder>>,
    reader: FlvReader,
}

impl Viewer {
    pub fn new(protocol: Protocol, target: &Target, now: Instant) -> Viewer {
        let mut tx = VecDeque::new();
        let state = match protocol {
            Protocol::Rtmp => {
                let tc_url = format!("rtmp://{}/{}", target.authority, target.app);
                let mut config = RtmpClientConfig::new(
                    &tc_url,
                    &target.app,
                    ClientMode::Play {
                        name: target.stream.clone(),
                    },
                );
                config.flash_ver = "LNX 9,0,124,2".into();
                State::Rtmp(Box::new(RtmpClientConn::new(config)))
            }
            Protocol::HttpFlv => {
                tx.push_back(Bytes::from(format!(
                    "GET /{}/{}.flv HTTP/1.1\r\nHost: {}\r\nUser-Agent: shardcast-swarm\r\nAccept: */*\r\n\r\n",
                    target.app, target.stream, target.authority
                )));
                State::Flv(Box::new(FlvState {
                    head: BytesMut::new(),
                    body: None,
                    reader: FlvReader::with_max_tag_bytes(MAX_TAG_BYTES),
                }))
            }
        };
        let mut v = Viewer {
            protocol,
            state,
            tally: Tally::new(now),
            tx,
        };
        v.drain_rtmp_events(now, &Ledger::default(), &mut Histograms::default())
            .expect("a new RTMP client has only its C0+C1 to send");
        v
    }

    /// Bytes to write to the server, in order.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.tx.pop_front()
    }

    /// Whether the server has started sending media (RTMP: play accepted; HTTP: 200).
    pub fn is_playing(&self) -> bool {
        match &self.state {
            State::Rtmp(c) => c.is_playing(),
            State::Flv(f) => f.body.is_some(),
        }
    }

    pub fn handle_bytes(
        &mut self,
        now: Instant,
        bytes: &[u8],
        ledger: &Ledger,
        hist: &mut Histograms,
    ) -> Result<(), ViewerError> {
        match &mut self.state {
            State::Rtmp(c) => {
                c.handle_bytes(now, bytes)?;
                self.drain_rtmp_events(now, ledger, hist)
            }
            State::Flv(f) => {
                let mut tags = Vec::new();
                f.handle_bytes(bytes, &mut tags)?;
                for tag in tags {
                    on_tag(
                        &mut self.tally,
                        now,
                        tag.kind,
                        tag.timestamp_ms,
                        tag.body,
                        ledger,
                        hist,
                    )?;
                }
                Ok(())
            }
        }
    }

    fn drain_rtmp_events(
        &mut self,
        now: Instant,
        ledger: &Ledger,
        hist: &mut Histograms,
    ) -> Result<(), ViewerError> {
        let State::Rtmp(c) = &mut self.state else {
            return Ok(());
        };
        while let Some(ev) = c.poll_event() {
            match ev {
                RtmpClientEvent::Transmit(b) => self.tx.push_back(b),
                RtmpClientEvent::Media {
                    kind,
                    timestamp_ms,
                    body,
                } => {
                    if let Some(kind) = TagKind::from_type_id(kind.type_id()) {
                        on_tag(&mut self.tally, now, kind, timestamp_ms, body, ledger, hist)?;
                    }
                }
                RtmpClientEvent::Status {
                    level,
                    code,
                    description,
                } if level == "error" => {
                    return Err(ViewerError::Refused(format!("{code}: {description}")))
                }
                RtmpClientEvent::CallFailed {
                    command,
                    code,
                    description,
                } => {
                    return Err(ViewerError::Refused(format!(
                        "{command} failed: {code}: {description}"
                    )))
                }
                RtmpClientEvent::Status { .. } | RtmpClientEvent::Connected => {}
            }
        }
        Ok(())
    }
}

/// Classifies one tag and counts it if it is a coded frame.
fn on_tag(
    tally: &mut Tally,
    now: Instant,
    kind: TagKind,
    timestamp_ms: u32,
    body: Bytes,
    ledger: &Ledger,
    hist: &mut Histograms,
) -> Result<(), ViewerError> {
    let len = body.len();
    if let Some(frame) = flv::parse_body(kind, u64::from(timestamp_ms), body)? {
        if frame.kind == FrameKind::Media {
            tally.on_media(now, kind, timestamp_ms, len, frame.keyframe, ledger, hist);
        }
    }
    Ok(())
}

impl FlvState {
    fn handle_bytes(&mut self, bytes: &[u8], tags: &mut Vec<flv::Tag>) -> Result<(), ViewerError> {
        match &mut self.body {
            None => {
                self.head.extend_from_slice(bytes);
                let Some(head) = http::parse_response_head(&mut self.head, &Limits::default())?
                else {
                    return Ok(());
                };
                if head.status.code() != 200 {
                    return Err(ViewerError::Refused(format!("HTTP {}", head.status.code())));
                }
                let mut body = head
                    .is_chunked()
                    .then(|| ChunkedDecoder::new(MAX_TAG_BYTES));
                let rest = std::mem::take(&mut self.head);
                match &mut body {
                    Some(d) => d.push(&rest),
                    None => self.reader.push(&rest),
                }
                self.body = Some(body);
            }
            Some(Some(d)) => d.push(bytes),
            Some(None) => self.reader.push(bytes),
        }
        if let Some(Some(d)) = &mut self.body {
            while let Some(data) = d.poll_data()? {
                self.reader.push(&data);
            }
        }
        while let Some(tag) = self.reader.poll_tag()? {
            tags.push(tag);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::media::{AudioCodec, Codec, Frame, VideoCodec};
    use std::time::Duration;

    fn target() -> Target {
        Target {
            authority: "127.0.0.1:8080".into(),
            app: "live".into(),
            stream: "s".into(),
        }
    }

    fn frame(codec: Codec, kind: FrameKind, keyframe: bool, dts_ms: u64) -> Frame {
        Frame {
            codec,
            kind,
            keyframe,
            dts_ms,
            cts_ms: 0,
            payload: Bytes::from(vec![0x11; 50]),
        }
    }

    /// An HTTP-FLV response: a config, a keyframe, an inter frame and an audio frame.
    fn response(chunked: bool) -> (Vec<u8>, Ledger, Instant) {
        let t0 = Instant::now();
        let mut ledger = Ledger::default();
        let avc = Codec::Video(VideoCodec::H264);
        let aac = Codec::Audio(AudioCodec::Aac);
        let frames = [
            frame(avc, FrameKind::Config, false, 0),
            frame(avc, FrameKind::Media, true, 0),
            frame(aac, FrameKind::Media, false, 10),
            frame(avc, FrameKind::Media, false, 33),
        ];
        let mut body = flv::file_header(true, true).to_vec();
        for f in &frames {
            let tag = flv::write_tag(f, f.dts_ms).unwrap();
            if f.kind == FrameKind::Media {
                let kind = flv::tag_kind(f.codec);
                ledger.record(kind, f.dts_ms as u32, flv::write_body(f).len(), t0);
            }
            body.extend_from_slice(&tag);
        }
        let mut wire = Vec::new();
        if chunked {
            wire.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nTransfer-Encoding: chunked\r\n\r\n");
            for piece in body.chunks(37) {
                wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                wire.extend_from_slice(piece);
                wire.extend_from_slice(b"\r\n");
            }
        } else {
            wire.extend_from_slice(
                b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nConnection: close\r\n\r\n",
            );
            wire.extend_from_slice(&body);
        }
        (wire, ledger, t0)
    }

    fn run(wire: &[&[u8]], ledger: &Ledger, t0: Instant) -> (Tally, u64) {
        let mut v = Viewer::new(Protocol::HttpFlv, &target(), t0);
        let req = v.poll_transmit().unwrap();
        assert!(req.starts_with(b"GET /live/s.flv HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        let mut hist = Histograms::default();
        for piece in wire {
            v.handle_bytes(t0 + Duration::from_millis(5), piece, ledger, &mut hist)
                .unwrap();
        }
        assert!(v.is_playing());
        (v.tally, hist.startup_us.len())
    }

    #[test]
    fn http_flv_counts_media_frames_and_the_first_keyframe_at_every_split() {
        for chunked in [false, true] {
            let (wire, ledger, t0) = response(chunked);
            let (whole, startups) = run(&[&wire], &ledger, t0);
            assert_eq!(whole.frames, 3, "chunked={chunked}");
            assert_eq!(whole.unknown, 0);
            assert_eq!(startups, 1);
            assert!(whole.first_keyframe_at.is_some());
            assert_eq!(whole.expected(&ledger), (3, whole.bytes));
            for at in 0..wire.len() {
                let (a, b) = wire.split_at(at);
                let (split, _) = run(&[a, b], &ledger, t0);
                assert_eq!(
                    split.frames, whole.frames,
                    "chunked={chunked} split at {at}"
                );
                assert_eq!(split.bytes, whole.bytes, "chunked={chunked} split at {at}");
            }
        }
    }

    #[test]
    fn http_error_status_is_a_refusal() {
        let t0 = Instant::now();
        let mut v = Viewer::new(Protocol::HttpFlv, &target(), t0);
        let err = v
            .handle_bytes(
                t0,
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                &Ledger::default(),
                &mut Histograms::default(),
            )
            .unwrap_err();
        assert!(
            matches!(err, ViewerError::Refused(ref s) if s == "HTTP 404"),
            "{err}"
        );
    }

    #[test]
    fn garbage_body_is_an_flv_error_not_a_panic() {
        let t0 = Instant::now();
        let mut v = Viewer::new(Protocol::HttpFlv, &target(), t0);
        let err = v
            .handle_bytes(
                t0,
                b"HTTP/1.1 200 OK\r\n\r\n<html>",
                &Ledger::default(),
                &mut Histograms::default(),
            )
            .unwrap_err();
        assert!(matches!(err, ViewerError::Flv(_)), "{err}");
    }

    #[test]
    fn rtmp_viewer_starts_with_the_handshake() {
        let mut v = Viewer::new(Protocol::Rtmp, &target(), Instant::now());
        let c0c1 = v.poll_transmit().unwrap();
        assert_eq!(c0c1.len(), 1 + 1536);
        assert_eq!(c0c1[0], 3);
        assert!(!v.is_playing());
        let err = v
            .handle_bytes(
                Instant::now(),
                b"HTTP/1.1 400 Bad",
                &Ledger::default(),
                &mut Histograms::default(),
            )
            .unwrap_err();
        assert!(matches!(
            err,
            ViewerError::Rtmp(RtmpError::BadHandshakeVersion { .. })
        ));
    }
}
