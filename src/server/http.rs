//! The HTTP/1.1 driver on every shard's HTTP port: HTTP-FLV viewers, HLS and LL-HLS
//! from memory, the API, `/metrics` and `/healthz`.
//!
//! Routes (stable; documented in the README):
//! - `GET /APP/STREAM.flv`: HTTP-FLV (header, metadata, configs, current GOP, live)
//! - `GET /APP/STREAM.m3u8`, `/APP/STREAM/...`: HLS and LL-HLS (see `server::hls`)
//! - `GET /api/streams`: live streams as JSON; `POST /api/streams/APP/STREAM/kick`
//! - `GET /metrics` (Prometheus), `GET /healthz`

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shards::rt::aio::AsyncReadExt;
use shards::rt::{self, TcpStream};

use crate::media::{Frame, StreamKey};
use crate::proto::flv;
use crate::proto::http::{self as h, Method, Request, Response, Status};
use crate::server::egress::{Egress, EgressEnd, TrackFilter, INPUT_POLL};
use crate::server::media::{format, StreamSubscription};
use crate::server::metrics::ShardMetrics;
use crate::server::shard::Shard;

/// A keep-alive connection with no request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A viewer that accepts no bytes for this long is dropped.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// What a request turned into.
pub(crate) enum Reply {
    Done(Response),
    Flv(Box<StreamSubscription>),
}

pub async fn serve(mut stream: TcpStream, peer: Option<SocketAddr>, shard: Rc<Shard>) {
    let limits = h::Limits {
        max_head_bytes: shard.config.http.max_request_head_bytes,
        ..h::Limits::default()
    };
    let mut buf = BytesMut::with_capacity(2048);
    let mut scratch = vec![0u8; 8192];
    loop {
        let request = loop {
            match h::parse_request(&mut buf, &limits) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(peer = ?peer, error = %e, "bad HTTP request");
                    ShardMetrics::add(&shard.metrics().protocol_errors, 1);
                    let _ = write_response(&mut stream, e.response().close(), None).await;
                    return;
                }
            }
            if shard.stopping.is_fired() {
                return;
            }
            // An idle keep-alive connection also ends when the shard stops accepting.
            let read = async { rt::timeout(IDLE_TIMEOUT, stream.read(&mut scratch)).await };
            let stop = async {
                shard.stopping.wait().await;
                None
            };
            match shards::rt::aio::or(read, stop).await {
                Some(Ok(0)) | None | Some(Err(_)) => return,
                Some(Ok(n)) => {
                    ShardMetrics::add(&shard.metrics().bytes_in, n as u64);
                    buf.extend_from_slice(&scratch[..n]);
                }
            }
        };
        ShardMetrics::add(&shard.metrics().http_requests, 1);
        let reply = route(&request, &shard).await;
        match reply {
            Reply::Done(response) => {
                let keep = match write_response(&mut stream, response, Some(&request)).await {
                    Ok(keep) => keep,
                    Err(_) => return,
                };
                if !keep || shard.stopping.is_fired() {
                    return;
                }
            }
            Reply::Flv(sub) => {
                serve_flv(&mut stream, &request, *sub, &shard).await;
                return;
            }
        }
    }
}

/// Write a complete response; returns whether the connection stays open.
async fn write_response(
    stream: &mut TcpStream,
    response: Response,
    request: Option<&Request>,
) -> std::io::Result<bool> {
    let encoded = match request {
        Some(r) => response.encode(r),
        None => response.encode_standalone(),
    };
    let mut bufs = vec![encoded.head];
    bufs.extend(encoded.body);
    rt::write_all_vectored(stream, &mut bufs).await?;
    Ok(encoded.keep_alive)
}

fn cors(shard: &Shard, response: Response) -> Response {
    response.cors(&shard.config.http.cors_allow_origin)
}

async fn route(request: &Request, shard: &Rc<Shard>) -> Reply {
    if Response::is_preflight(request) {
        return Reply::Done(Response::preflight(
            request,
            &shard.config.http.cors_allow_origin,
            "GET, HEAD, OPTIONS",
        ));
    }
    let path = request.path.as_str();
    let read_only = matches!(request.method, Method::Get | Method::Head);
    match path {
        "/healthz" if read_only => {
            return Reply::Done(
                Response::with_body(
                    Status::OK,
                    "text/plain; charset=utf-8",
                    Bytes::from_static(b"ok\n"),
                )
                .cache_control("no-store"),
            )
        }
        "/metrics" if read_only => {
            let text = crate::server::metrics::render(
                &shard.metrics,
                shard.hub.directory(),
                shard.started.elapsed().as_secs_f64(),
            );
            return Reply::Done(
                Response::with_body(
                    Status::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    Bytes::from(text),
                )
                .cache_control("no-store"),
            );
        }
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/api/") {
        if !shard.config.http.api {
            return Reply::Done(Response::error(Status::NOT_FOUND));
        }
        return Reply::Done(cors(
            shard,
            crate::server::api::handle(request, rest, shard),
        ));
    }
    if !read_only {
        return Reply::Done(Response::method_not_allowed("GET, HEAD, OPTIONS"));
    }
    if let Some(stem) = path.strip_suffix(".flv") {
        let Some(key) = stream_key(stem) else {
            return Reply::Done(Response::error(Status::NOT_FOUND));
        };
        return match shard.hub.subscribe(&key) {
            Ok(sub) => Reply::Flv(Box::new(sub)),
            Err(shards::hub::SubscribeError::NotFound { .. }) => {
                Reply::Done(cors(shard, Response::error(Status::NOT_FOUND)))
            }
            Err(e) => {
                ShardMetrics::add(&shard.metrics().rejected, 1);
                tracing::info!(stream = %key, error = %e, "HTTP-FLV viewer refused");
                Reply::Done(cors(shard, Response::error(Status::SERVICE_UNAVAILABLE)))
            }
        };
    }
    if let Some(reply) = crate::server::hls::route(request, shard).await {
        return Reply::Done(cors(shard, reply));
    }
    Reply::Done(cors(shard, Response::error(Status::NOT_FOUND)))
}

/// `/app/stream` → the stream key, if both parts are valid.
pub(crate) fn stream_key(path: &str) -> Option<StreamKey> {
    let (app, stream) = path.strip_prefix('/')?.split_once('/')?;
    StreamKey::new(app, stream).ok()
}

/// The FLV tag of a frame: built once per frame per shard, shared by every HTTP-FLV
/// viewer and the FLV recorder.
pub(crate) fn flv_tag(frame: &Frame) -> Bytes {
    flv::write_tag(frame, frame.dts_ms).unwrap_or_default()
}

async fn serve_flv(
    stream: &mut TcpStream,
    request: &Request,
    mut sub: StreamSubscription,
    shard: &Rc<Shard>,
) {
    let key = sub.key().clone();
    let _viewer = shard.hold(|m| &m.flv_viewers);
    let info = sub.entry().shared.info.load_full();
    let (has_audio, has_video) = match info.as_deref() {
        Some(i) if i.audio_codec.is_some() || i.video_codec.is_some() => {
            (i.audio_codec.is_some(), i.video_codec.is_some())
        }
        _ => (true, true),
    };
    let response = cors(shard, Response::stream("video/x-flv"));
    let encoded = response.encode(request);
    let chunked = encoded.framing == h::Framing::Chunked;
    let mut out = Egress::default();
    out.push(encoded.head);
    if request.method == Method::Head {
        let _ = out.flush(stream, WRITE_STALL).await;
        return;
    }
    let header = Bytes::copy_from_slice(&flv::file_header(has_audio, has_video));
    push_body(&mut out, header, chunked);
    tracing::debug!(stream = %key, remote = sub.is_remote(), "HTTP-FLV viewer joined");
    let mut scratch = [0u8; 512];
    let mut next_input_poll = Instant::now();
    let end = loop {
        let end = out.gather(
            &mut sub,
            format::FLV_TAG,
            TrackFilter::default(),
            flv_tag,
            |o, b| push_body(o, b, chunked),
        );
        match out.flush(stream, WRITE_STALL).await {
            Ok(n) => ShardMetrics::add(&shard.metrics().bytes_out, n as u64),
            Err(e) => {
                tracing::debug!(stream = %key, error = %e, "HTTP-FLV viewer gone");
                break None;
            }
        }
        if let Some(end) = end {
            break Some(end);
        }
        // Wait for frames only (no read or timer per frame); notice a closed connection
        // by draining input without waiting at most every INPUT_POLL.
        sub.wait().await;
        let now = Instant::now();
        if now >= next_input_poll {
            next_input_poll = now + INPUT_POLL;
            if matches!(rt::try_read(stream, &mut scratch), Ok(Some(0)) | Err(_)) {
                break None;
            }
        }
    };
    match end {
        Some(EgressEnd::TooSlow { skips }) => {
            ShardMetrics::add(&shard.metrics().slow_viewers, 1);
            tracing::info!(stream = %key, skips, "HTTP-FLV viewer disconnected: too slow for the stream");
        }
        Some(EgressEnd::StreamEnded) => {
            if chunked {
                out.push(Bytes::from_static(h::LAST_CHUNK));
                let _ = out.flush(stream, WRITE_STALL).await;
            }
        }
        None => {}
    }
}

fn push_body(out: &mut Egress, b: Bytes, chunked: bool) {
    if chunked {
        for part in h::chunk(b) {
            out.push(part);
        }
    } else {
        out.push(b);
    }
}
