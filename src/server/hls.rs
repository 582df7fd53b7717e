//! HLS and LL-HLS on the server: the owner shard runs a TS packager and an fMP4/CMAF
//! LL-HLS packager per stream, inline with ingest (pure CPU, no I/O). After each part
//! or segment it publishes the immutable snapshot through the directory (arc-swap) and
//! tells every shard, so blocked playlist requests anywhere re-check at once. Requests
//! are answered from the snapshot on whichever shard they land, with no cross-shard call.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shards::event::Notify;
use shards::rt;

use crate::media::{Frame, FrameKind, StreamKey};
use crate::proto::fmp4::Fmp4Muxer;
use crate::proto::hls::{
    HlsConfig, HlsLookup, HlsSnapshot, Packager, Update, Variant, VariantInfo,
};
use crate::proto::http::{Request, Response, Status};
use crate::proto::ts::TsMuxer;
use crate::server::cmd::ShardCmd;
use crate::server::config::Config;
use crate::server::media::StreamEntry;
use crate::server::metrics::ShardMetrics;
use crate::server::shard::Shard;

/// The packagers of one stream on its owner shard.
pub struct Packagers {
    key: StreamKey,
    ts: Option<Packager<TsMuxer>>,
    ll: Option<Packager<Fmp4Muxer>>,
    errors_logged: bool,
}

fn hls_config(config: &Config) -> HlsConfig {
    HlsConfig {
        segment_target_ms: config.hls.segment_ms,
        part_target_ms: config.hls.part_ms,
        window_segments: config.hls.window_segments as usize,
        blocking_timeout_ms: config.hls.blocking_timeout_ms,
        ..HlsConfig::default()
    }
}

fn wallclock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Packagers {
    /// `None` when HLS is off.
    pub fn new(config: &Config, key: &StreamKey) -> Option<Packagers> {
        if !config.hls.enabled {
            return None;
        }
        let hc = hls_config(config);
        // Media sequence numbers start at the clock's seconds: never reused for a key,
        // even across restarts, so segment URLs can be cached as immutable.
        let first_msn = wallclock_ms() / 1000;
        let ts = config
            .hls
            .ts
            .then(|| {
                Packager::new_at(
                    key.clone(),
                    Variant::Ts,
                    TsMuxer::new(),
                    hc.clone(),
                    first_msn,
                )
            })
            .and_then(|r| {
                r.map_err(|e| tracing::error!(stream = %key, error = %e, "HLS (TS) disabled"))
                    .ok()
            });
        let ll = config
            .hls
            .ll
            .then(|| {
                Packager::new_at(
                    key.clone(),
                    Variant::Fmp4LowLatency,
                    Fmp4Muxer::new(),
                    hc.clone(),
                    first_msn,
                )
            })
            .and_then(|r| {
                r.map_err(|e| tracing::error!(stream = %key, error = %e, "LL-HLS disabled"))
                    .ok()
            });
        Some(Packagers {
            key: key.clone(),
            ts,
            ll,
            errors_logged: false,
        })
    }

    /// The publisher reconnected: the next segments carry EXT-X-DISCONTINUITY (closing
    /// the open segment is itself an update).
    pub fn discontinuity(&mut self, shard: &Rc<Shard>, entry: &Arc<StreamEntry>) {
        let mut updated = false;
        if let Some(p) = &mut self.ts {
            if p.discontinuity().is_some() {
                entry.shared.hls_ts.store(Some(p.snapshot()));
                updated = true;
            }
        }
        if let Some(p) = &mut self.ll {
            if p.discontinuity().is_some() {
                entry.shared.hls_ll.store(Some(p.snapshot()));
                updated = true;
            }
        }
        if updated {
            self.announce(shard, entry);
        }
    }

    /// Tell every shard that `entry`'s HLS snapshots changed.
    fn announce(&self, shard: &Rc<Shard>, entry: &Arc<StreamEntry>) {
        entry
            .shared
            .hls_version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        for to in 0..shard.count {
            let key = self.key.clone();
            shard.hub.send(to, ShardCmd::HlsUpdated { key });
        }
    }

    pub fn push(&mut self, frame: &Frame, shard: &Rc<Shard>, entry: &Arc<StreamEntry>) {
        let now = wallclock_ms();
        if frame.kind == FrameKind::Config {
            self.update_variant_info(entry);
        }
        let mut updated = false;
        if let Some(p) = &mut self.ts {
            match p.push(frame, now) {
                Ok(Some(u)) => {
                    entry.shared.hls_ts.store(Some(p.snapshot()));
                    count_segments(shard, &u);
                    updated = true;
                }
                Ok(None) => {}
                Err(e) => log_once(&mut self.errors_logged, &self.key, &e),
            }
        }
        if let Some(p) = &mut self.ll {
            match p.push(frame, now) {
                Ok(Some(_)) => {
                    entry.shared.hls_ll.store(Some(p.snapshot()));
                    updated = true;
                }
                Ok(None) => {}
                Err(e) => log_once(&mut self.errors_logged, &self.key, &e),
            }
        }
        if updated {
            self.announce(shard, entry);
        }
    }

    fn update_variant_info(&mut self, entry: &Arc<StreamEntry>) {
        let Some(info) = entry.shared.info.load_full() else {
            return;
        };
        let codecs: Vec<&str> = [info.video_codec.as_deref(), info.audio_codec.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let variant = VariantInfo {
            codecs: codecs.join(","),
            resolution: info.width.zip(info.height),
            frame_rate: None,
            bandwidth_bps: None,
        };
        if let Some(p) = &mut self.ts {
            p.set_variant_info(variant.clone());
        }
        if let Some(p) = &mut self.ll {
            p.set_variant_info(variant);
        }
    }
}

fn count_segments(shard: &Rc<Shard>, update: &Update) {
    if update.segment.is_some() {
        ShardMetrics::add(&shard.metrics().hls_segments, 1);
    }
}

fn log_once(logged: &mut bool, key: &StreamKey, e: &dyn std::fmt::Display) {
    if !*logged {
        *logged = true;
        tracing::warn!(stream = %key, error = %e, "HLS packaging error (logged once per stream)");
    }
}

/// Split `/APP/STREAM...` into the stream key and the HLS `rest`
/// (`.m3u8`, `/ts.m3u8`, `/ll.m3u8`, `/s/3.m4s`, ...).
fn split_path(path: &str) -> Option<(StreamKey, &str)> {
    let (app, after) = path.strip_prefix('/')?.split_once('/')?;
    let (stream, rest) = match after.find('/') {
        Some(i) => after.split_at(i),
        None => {
            let stream = after.strip_suffix(".m3u8")?;
            (stream, &after[stream.len()..])
        }
    };
    Some((StreamKey::new(app, stream).ok()?, rest))
}

/// Answer an HLS request, waiting (blocking reload) where the spec says to. `None` when
/// the path is not an HLS path.
pub async fn route(request: &Request, shard: &Rc<Shard>) -> Option<Response> {
    if !shard.config.hls.enabled {
        return None;
    }
    let (key, rest) = split_path(&request.path)?;
    let variant = Variant::for_path(rest)?;
    let query = request.target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let notify = shard.hls_notify(&key);
    let started = Instant::now();
    loop {
        let seen = notify.version();
        let Some(entry) = shard.hub.directory().lookup(&key) else {
            return Some(Response::error(Status::NOT_FOUND));
        };
        let snapshot: Option<Arc<HlsSnapshot>> = match variant {
            Variant::Ts => entry.shared.hls_ts.load_full(),
            Variant::Fmp4LowLatency => entry.shared.hls_ll.load_full(),
        };
        // No segment yet: a new stream's first segment is at most a GOP away.
        let lookup = match &snapshot {
            Some(s) => s.lookup(rest, query),
            None => HlsLookup::Wait { msn: 0, part: None },
        };
        let timeout_ms = snapshot
            .as_ref()
            .map_or(shard.config.hls.blocking_timeout_ms, |s| {
                s.blocking_timeout_ms()
            });
        match lookup {
            HlsLookup::Ready {
                content_type,
                cache_control,
                body,
            } => {
                return Some(
                    Response::with_body(Status::OK, content_type, body)
                        .cache_control(&cache_control.header_value()),
                );
            }
            HlsLookup::NotFound => return Some(Response::error(Status::NOT_FOUND)),
            HlsLookup::BadRequest(reason) => {
                tracing::debug!(stream = %key, %reason, "HLS request rejected");
                return Some(Response::error(Status::BAD_REQUEST));
            }
            HlsLookup::Wait { .. } => {
                let left = Duration::from_millis(timeout_ms).saturating_sub(started.elapsed());
                if left.is_zero() || shard.stopping.is_fired() {
                    return Some(
                        Response::error(Status::SERVICE_UNAVAILABLE).header("Retry-After", "1"),
                    );
                }
                // Re-check at least every 500 ms: a stream that ends wakes nobody.
                let _ =
                    rt::timeout(left.min(Duration::from_millis(500)), notify.changed(seen)).await;
            }
        }
    }
}

impl Shard {
    /// The notification blocked HLS requests for `key` on this shard wait on.
    pub fn hls_notify(&self, key: &StreamKey) -> Rc<Notify> {
        Rc::clone(
            self.hls_waiters
                .borrow_mut()
                .entry(key.clone())
                .or_default(),
        )
    }

    /// The owner shard produced a new part or segment of `key`.
    pub fn hls_updated(&self, key: &StreamKey) {
        let mut waiters = self.hls_waiters.borrow_mut();
        if let Some(n) = waiters.get(key) {
            n.notify();
            if Rc::strong_count(n) == 1 {
                waiters.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_hls_paths() {
        let (k, rest) = split_path("/live/cam.m3u8").unwrap();
        assert_eq!((k.as_str(), rest), ("live/cam", ".m3u8"));
        let (k, rest) = split_path("/live/cam/ll.m3u8").unwrap();
        assert_eq!((k.as_str(), rest), ("live/cam", "/ll.m3u8"));
        let (k, rest) = split_path("/live/cam/p/12.3.m4s").unwrap();
        assert_eq!((k.as_str(), rest), ("live/cam", "/p/12.3.m4s"));
        assert!(split_path("/live/cam.flv").is_none());
        assert!(split_path("/nothing").is_none());
    }
}
