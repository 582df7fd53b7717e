//! Serving HLS and LL-HLS: requests are answered from the stream's latest snapshot
//! (published by the owner's packagers, `server::streams::packagers`) on whichever
//! shard they land, with no cross-shard call. A blocking playlist reload waits on the
//! shard's stream table, which only holds waiters of streams that exist, a bounded
//! number per stream.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::hls::{HlsLookup, HlsSnapshot, Variant};
use proto::http::{Request, Response, Status};
use proto::media::StreamKey;
use shards::rt;

use crate::server::access::{Action, Attempt, Protocol};
use crate::server::shard::Shard;
use crate::server::streams::{WaitRefused, Waiting};

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
///
/// Access: every request (playlists, segments, parts, init) passes the token check;
/// the entry playlists (`.m3u8`, `/index.m3u8`) also pass the `on_play` hook and are
/// audited. Where play needs a token, playlists carry the viewer's token into every
/// URI they list, so players need no change.
pub async fn route(
    request: &Request,
    shard: &Rc<Shard>,
    peer: Option<std::net::SocketAddr>,
) -> Option<Response> {
    if !shard.config.hls.enabled {
        return None;
    }
    let (key, rest) = split_path(&request.path)?;
    let variant = Variant::for_path(rest)?;
    let query = request.target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let attempt = Attempt {
        protocol: Protocol::Hls,
        action: Action::Play,
        key: &key,
        query,
        peer,
    };
    let entry_point = matches!(
        (variant, rest),
        (Variant::Ts, ".m3u8") | (Variant::Fmp4LowLatency, "/index.m3u8")
    );
    let checked = if entry_point {
        shard.access.decide(&attempt).await.map(drop)
    } else {
        shard.access.check_token(&attempt).map(drop)
    };
    if let Err(denied) = checked {
        return Some(denied.response());
    }
    // Checked above, so it is made of URL-safe characters only.
    let carry = shard
        .config
        .play_needs_token(key.app())
        .then(|| proto::auth::token_in_query(query))
        .flatten()
        .map(|t| format!("token={t}"));
    let started = Instant::now();
    // Registered at the first wait, only for a stream that exists; dropped on return.
    let mut waiting: Option<HlsWait> = None;
    loop {
        let seen = waiting.as_ref().map(|w| w.notify.version());
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
                let body = match &carry {
                    Some(param) if content_type.contains("mpegurl") => {
                        proto::hls::with_query(&body, param)
                    }
                    _ => body,
                };
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
                let Some(seen) = seen else {
                    // Look again once registered: an update may have landed meanwhile.
                    match HlsWait::new(shard, &key) {
                        Ok(w) => waiting = Some(w),
                        Err(WaitRefused) => {
                            tracing::debug!(stream = %key, "too many blocked HLS requests");
                            return Some(
                                Response::error(Status::SERVICE_UNAVAILABLE)
                                    .header("Retry-After", "1"),
                            );
                        }
                    }
                    continue;
                };
                let notify = &waiting.as_ref().expect("registered above").notify;
                // The owner announces each update and the stream's end; the periodic
                // re-check is a safety net only.
                let _ =
                    rt::timeout(left.min(Duration::from_millis(1000)), notify.changed(seen)).await;
            }
        }
    }
}

/// One blocked HLS request's place in the shard's stream table, released on drop.
struct HlsWait {
    shard: Rc<Shard>,
    key: StreamKey,
    notify: Rc<shards::event::Notify>,
}

impl HlsWait {
    fn new(shard: &Rc<Shard>, key: &StreamKey) -> Result<HlsWait, WaitRefused> {
        let Waiting(notify) = shard.streams.borrow_mut().wait(key)?;
        Ok(HlsWait {
            shard: Rc::clone(shard),
            key: key.clone(),
            notify,
        })
    }
}

impl Drop for HlsWait {
    fn drop(&mut self) {
        self.shard.streams.borrow_mut().unwait(&self.key);
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
