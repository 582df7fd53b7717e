//! Recording to disk through io_uring. A recorder is a subscriber of the stream's ring
//! on the owner shard: it never slows ingest or viewers (a slow disk makes it skip
//! forward like a slow viewer, counted), and it writes self-delimiting formats:
//!
//! - FLV: a header, then one complete tag per frame.
//! - Fragmented MP4: an init segment, then one `moof`+`mdat` fragment per keyframe (or
//!   per second at most).
//!
//! Everything written so far is handed to the kernel every time the recorder waits for
//! the next frame, so a `kill -9` of the server leaves a file that plays up to the last
//! complete tag or fragment; `fsync` runs every `record.fsync_ms`. The file is closed
//! (flushed, synced) when the stream ends, after its reconnect grace, and at shutdown
//! (which waits for it); a publisher that comes back within the grace continues the
//! same file. A bad path or a full disk stops
//! that recording with a logged, counted error; the stream keeps flowing to viewers.
//! Timestamps in a file start at 0.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use proto::flv;
use proto::fmp4::Fmp4Muxer;
use proto::media::{Frame, FrameKind, StreamKey, Track};
use proto::mux::Muxer;
use proto::rtmp::amf0::{self, Amf0Value};
use shards::ring::{Next, Ring, Subscriber};
use shards::rt::{self, FileWriter, Queue};

use crate::server::config::RecordFormat;
use crate::server::metrics::ShardMetrics;
use crate::server::shard::Shard;

/// A fragment is cut at least this often (fMP4), so a crash loses at most this much.
const MAX_FRAGMENT_MS: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot write recording {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Start recording `key` if the config asks for it; `wanted` (a hook's `"record"`)
/// overrides the config either way.
pub fn maybe_start(
    shard: &Rc<Shard>,
    key: &StreamKey,
    ring: &Rc<Ring<Frame>>,
    wanted: Option<bool>,
) {
    let rc = &shard.config.record;
    if !wanted.unwrap_or(rc.enabled && rc.records_app(key.app())) {
        return;
    }
    let sub = ring.subscribe();
    let (shard, key) = (Rc::clone(shard), key.clone());
    let k = key.clone();
    let on_panic = move |msg: String| tracing::error!(stream = %k, "bug: recorder panicked: {msg}; the recording stopped");
    rt::spawn_contained(
        Queue::Media,
        async move {
            // A shutdown waits (up to server.shutdown_timeout_ms) for open recordings, so
            // the last fMP4 fragment is written and synced even when no connection is
            // left to hold the shutdown open (SIGTERM within the reconnect grace).
            let _recording = shard.hold(|m| &m.recordings);
            let mut recorder = Recorder::new(&shard, &key);
            if let Err(e) = recorder.run(sub).await {
                ShardMetrics::add(&shard.metrics().recording_errors, 1);
                tracing::error!(stream = %key, "{e}; the recording stopped, the stream goes on");
            }
        },
        on_panic,
    );
}

/// What a file needs to start: the configs and metadata in force.
#[derive(Default)]
struct Configs {
    video: Option<Frame>,
    audio: Option<Frame>,
    metadata: Option<Frame>,
}

impl Configs {
    /// Whether `f` is a config that differs from the one in force.
    fn changes(&self, f: &Frame) -> bool {
        let current = match (f.kind, f.track()) {
            (FrameKind::Config, Track::Video) => &self.video,
            (FrameKind::Config, Track::Audio) => &self.audio,
            _ => return false,
        };
        current
            .as_ref()
            .is_none_or(|c| c.payload != f.payload || c.codec != f.codec)
    }

    fn note(&mut self, f: &Frame) {
        match (f.kind, f.track()) {
            (FrameKind::Config, Track::Video) => self.video = Some(f.clone()),
            (FrameKind::Config, Track::Audio) => self.audio = Some(f.clone()),
            (FrameKind::Metadata, Track::Data) => self.metadata = Some(file_metadata(f)),
            _ => {}
        }
    }

    fn all(&self) -> impl Iterator<Item = &Frame> {
        [&self.metadata, &self.video, &self.audio]
            .into_iter()
            .flatten()
    }
}

/// `onMetaData` keys that describe the publisher's own output, not our file: ffmpeg
/// publishing with `-t 30` sends `duration: 30`, OBS sends `duration: 0`, and players
/// and ffprobe trust the key over the timestamps. Without them a reader measures the
/// file, which is also right for a file cut short by a crash.
const PUBLISHER_ONLY_METADATA: [&str; 2] = ["duration", "filesize"];

/// `f` with the [`PUBLISHER_ONLY_METADATA`] keys removed from its `onMetaData`; any
/// other frame, or metadata we cannot read, is returned as it is.
fn file_metadata(f: &Frame) -> Frame {
    let Ok(mut values) = amf0::decode_all(&f.payload) else {
        return f.clone();
    };
    let Some(Amf0Value::EcmaArray(props) | Amf0Value::Object(props)) = values.get_mut(1) else {
        return f.clone();
    };
    let before = props.len();
    props.retain(|(key, _)| !PUBLISHER_ONLY_METADATA.contains(&key.as_str()));
    if props.len() == before {
        return f.clone();
    }
    match amf0::encode_all(&values) {
        Ok(payload) => Frame {
            payload: payload.freeze(),
            ..f.clone()
        },
        Err(_) => f.clone(),
    }
}

struct OpenFile {
    writer: FileWriter,
    path: PathBuf,
    opened: Instant,
    /// dts of the first frame: file timestamps start at 0.
    base_ms: Option<u64>,
    mp4: Option<Fmp4Muxer>,
    fragment_start_ms: Option<u64>,
    last_dts_ms: u64,
    init_written: bool,
}

struct Recorder {
    shard: Rc<Shard>,
    key: StreamKey,
    format: RecordFormat,
    rotate: Option<Duration>,
    fsync_every: Option<Duration>,
    configs: Configs,
    file: Option<OpenFile>,
    last_sync: Instant,
}

impl Recorder {
    fn new(shard: &Rc<Shard>, key: &StreamKey) -> Self {
        let rc = &shard.config.record;
        Recorder {
            shard: Rc::clone(shard),
            key: key.clone(),
            format: rc.format,
            rotate: (rc.rotate_ms > 0).then(|| Duration::from_millis(rc.rotate_ms)),
            fsync_every: (rc.fsync_ms > 0).then(|| Duration::from_millis(rc.fsync_ms)),
            configs: Configs::default(),
            file: None,
            last_sync: Instant::now(),
        }
    }

    fn io_error(&self, path: &std::path::Path, source: std::io::Error) -> RecordError {
        RecordError::Io {
            path: path.to_owned(),
            source,
        }
    }

    async fn run(&mut self, mut sub: Subscriber<Frame>) -> Result<(), RecordError> {
        loop {
            match sub.next() {
                Next::Item { item, .. } => self.frame(item).await?,
                Next::Pending => {
                    self.flush().await?;
                    sub.wait().await;
                }
                Next::Ended => break,
                Next::TooSlow { skips } => {
                    tracing::warn!(stream = %self.key, skips, "recorder fell behind (slow disk?); the recording has a gap");
                    sub = sub.ring().subscribe();
                }
            }
        }
        self.close().await
    }

    async fn frame(&mut self, frame: Frame) -> Result<(), RecordError> {
        let config_changed = self.configs.changes(&frame);
        self.configs.note(&frame);
        let rotate = match (&self.file, self.rotate) {
            (Some(f), Some(every)) => frame.starts_gop() && f.opened.elapsed() >= every,
            _ => false,
        };
        let config_changed = config_changed
            && self
                .file
                .as_ref()
                .is_some_and(|f| f.init_written && f.mp4.is_some());
        if rotate || config_changed {
            // A new file: rotation, or a codec change in an fMP4 file (one moov per file).
            self.close().await?;
        }
        if self.file.is_none() {
            self.open().await?;
        }
        let file = self.file.as_mut().expect("opened above");
        let base = *file.base_ms.get_or_insert(frame.dts_ms);
        let mut f = frame;
        f.dts_ms = f.dts_ms.saturating_sub(base);
        file.last_dts_ms = file.last_dts_ms.max(f.dts_ms);
        match &mut file.mp4 {
            None => {
                if f.kind == FrameKind::Metadata && f.track() == Track::Data {
                    f = file_metadata(&f);
                }
                let tag = flv::write_tag(&f, f.dts_ms).unwrap_or_default();
                file.writer.append(&tag);
            }
            Some(mux) => {
                let cut = match file.fragment_start_ms {
                    Some(start) => {
                        f.starts_gop() || f.dts_ms.saturating_sub(start) >= MAX_FRAGMENT_MS
                    }
                    None => false,
                };
                if cut && f.kind == FrameKind::Media {
                    let frag = mux.take_fragment(f.dts_ms);
                    file.writer.append(&frag);
                    file.fragment_start_ms = Some(f.dts_ms);
                }
                if f.kind == FrameKind::Media && !file.init_written {
                    // The init segment needs the configs, which come before media.
                    if let Some(init) = mux.init_segment() {
                        file.writer.append(&init);
                        file.init_written = true;
                    }
                }
                if f.kind == FrameKind::Media && file.fragment_start_ms.is_none() {
                    if !f.starts_gop() && self.configs.video.is_some() {
                        return Ok(()); // an fMP4 file starts at a keyframe
                    }
                    file.fragment_start_ms = Some(f.dts_ms);
                }
                if let Err(e) = mux.push(&f) {
                    tracing::debug!(stream = %self.key, error = %e, "frame not recorded");
                }
            }
        }
        Ok(())
    }

    async fn open(&mut self) -> Result<(), RecordError> {
        let path = self
            .shard
            .config
            .record
            .file_path(&self.key, SystemTime::now());
        let mut writer = FileWriter::create_new(&path)
            .await
            .map_err(|e| self.io_error(&path, e))?;
        let mp4 = match self.format {
            RecordFormat::Flv => {
                writer.append(&flv::file_header(true, true));
                None
            }
            RecordFormat::Fmp4 => Some(Fmp4Muxer::new()),
        };
        tracing::info!(stream = %self.key, path = %path.display(), "recording");
        let mut file = OpenFile {
            writer,
            path,
            opened: Instant::now(),
            base_ms: None,
            mp4,
            fragment_start_ms: None,
            last_dts_ms: 0,
            init_written: false,
        };
        // A new file (first, rotated) starts with the configs in force.
        let configs: Vec<Frame> = self.configs.all().cloned().collect();
        for mut c in configs {
            c.dts_ms = 0;
            match &mut file.mp4 {
                None => file
                    .writer
                    .append(&flv::write_tag(&c, 0).unwrap_or_default()),
                Some(mux) => {
                    let _ = mux.push(&c);
                }
            }
        }
        file.base_ms = None;
        self.file = Some(file);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), RecordError> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        if let Err(e) = file.writer.flush().await {
            let path = file.path.clone();
            self.file = None;
            return Err(self.io_error(&path, e));
        }
        if self
            .fsync_every
            .is_some_and(|every| self.last_sync.elapsed() >= every)
        {
            self.last_sync = Instant::now();
            if let Err(e) = file.writer.sync().await {
                let path = file.path.clone();
                self.file = None;
                return Err(self.io_error(&path, e));
            }
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), RecordError> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        if let Some(mux) = &mut file.mp4 {
            // The last sample lasts one typical frame interval.
            let end = file.last_dts_ms + 40;
            let frag: Bytes = mux.take_fragment(end);
            file.writer.append(&frag);
        }
        let path = file.path.clone();
        let bytes = file.writer.position() + file.writer.pending() as u64;
        file.writer
            .close()
            .await
            .map_err(|e| self.io_error(&path, e))?;
        tracing::info!(stream = %self.key, path = %path.display(), bytes, "recording closed");
        let duration_ms = file.last_dts_ms;
        self.shard
            .access
            .record_done(&self.key, &path, bytes, duration_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::media::Codec;

    fn metadata(values: &[Amf0Value]) -> Frame {
        Frame {
            codec: Codec::Script,
            kind: FrameKind::Metadata,
            keyframe: false,
            dts_ms: 7,
            cts_ms: 0,
            payload: amf0::encode_all(values).unwrap().freeze(),
        }
    }

    fn on_metadata(props: Vec<(&str, Amf0Value)>) -> Vec<Amf0Value> {
        let props = props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        vec![
            Amf0Value::String("onMetaData".into()),
            Amf0Value::EcmaArray(props),
        ]
    }

    #[test]
    fn recorded_metadata_drops_the_publishers_duration_and_filesize() {
        // What ffmpeg -t 30 publishes.
        let published = metadata(&on_metadata(vec![
            ("duration", Amf0Value::Number(30.0)),
            ("width", Amf0Value::Number(320.0)),
            ("filesize", Amf0Value::Number(0.0)),
            ("encoder", Amf0Value::String("Lavf59.27.100".into())),
        ]));
        let recorded = file_metadata(&published);
        let expected = metadata(&on_metadata(vec![
            ("width", Amf0Value::Number(320.0)),
            ("encoder", Amf0Value::String("Lavf59.27.100".into())),
        ]));
        assert_eq!(recorded, expected);
    }

    #[test]
    fn other_metadata_is_recorded_as_published() {
        let plain = metadata(&on_metadata(vec![("width", Amf0Value::Number(320.0))]));
        assert_eq!(file_metadata(&plain), plain);
        let unreadable = Frame {
            payload: Bytes::from_static(b"\x02\x00\x0aonMeta"),
            ..plain.clone()
        };
        assert_eq!(file_metadata(&unreadable), unreadable);
        let not_an_object = metadata(&[
            Amf0Value::String("onMetaData".into()),
            Amf0Value::Number(1.0),
        ]);
        assert_eq!(file_metadata(&not_an_object), not_an_object);
    }
}
