//! The HLS packagers of a stream on its owner shard: a TS packager and an fMP4/CMAF
//! LL-HLS packager, run inline with ingest (pure CPU, no I/O). After each part or
//! segment the owner publishes the immutable snapshot through the directory (arc-swap)
//! and tells every shard, so blocked playlist requests anywhere re-check at once
//! (`server::hls` answers them).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use proto::fmp4::Fmp4Muxer;
use proto::hls::{HlsConfig, Packager, Update, Variant, VariantInfo};
use proto::media::{Frame, FrameKind, StreamKey};
use proto::ts::TsMuxer;

use crate::server::cmd::ShardCmd;
use crate::server::config::Config;
use crate::server::media::StreamEntry;
use crate::server::metrics::ShardMetrics;
use crate::server::streams::OwnerCtx;

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
    pub fn discontinuity(&mut self, ctx: &OwnerCtx<'_>, entry: &Arc<StreamEntry>) {
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
            self.announce(ctx, entry);
        }
    }

    /// Tell every shard that `entry`'s HLS snapshots changed.
    fn announce(&self, ctx: &OwnerCtx<'_>, entry: &Arc<StreamEntry>) {
        entry
            .shared
            .hls_version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        for to in 0..ctx.shards {
            let key = self.key.clone();
            ctx.hub.send(to, ShardCmd::HlsUpdated { key });
        }
    }

    pub fn push(&mut self, frame: &Frame, ctx: &OwnerCtx<'_>, entry: &Arc<StreamEntry>) {
        let now = wallclock_ms();
        if frame.kind == FrameKind::Config {
            self.update_variant_info(entry);
        }
        let mut updated = false;
        if let Some(p) = &mut self.ts {
            match p.push(frame, now) {
                Ok(Some(u)) => {
                    entry.shared.hls_ts.store(Some(p.snapshot()));
                    count_segments(ctx.metrics, &u);
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
            self.announce(ctx, entry);
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

fn count_segments(metrics: &ShardMetrics, update: &Update) {
    if update.segment.is_some() {
        ShardMetrics::add(&metrics.hls_segments, 1);
    }
}

fn log_once(logged: &mut bool, key: &StreamKey, e: &dyn std::fmt::Display) {
    if !*logged {
        *logged = true;
        tracing::warn!(stream = %key, error = %e, "HLS packaging error (logged once per stream)");
    }
}
