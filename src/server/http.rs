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
use proto::flv;
use proto::http::{self as h, Method, Request, Response, Status};
use proto::media::{Frame, StreamKey};
use shards::rt::{self, TcpStream};

use crate::server::access::{Action, Attempt, Ended, Protocol};
use crate::server::egress::{Egress, EgressEnd, EgressError, TrackFilter, Wake};
use crate::server::media::{format, StreamSubscription};
use crate::server::metrics::{Disconnect, ShardMetrics, Timeout};
use crate::server::shard::Shard;

/// What a request turned into.
pub(crate) enum Reply {
    Done(Response),
    /// An HTTP-FLV viewer, with the guard that audits its end.
    Flv(Box<StreamSubscription>, Ended),
}

/// The query part of a request target ("" when none).
pub(crate) fn raw_query(request: &Request) -> &str {
    request.target.split_once('?').map_or("", |(_, q)| q)
}

/// Why an HTTP connection ended before the client or the protocol closed it. Each is
/// counted and answered (where HTTP has an answer) by [`finish`].
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("bad request: {0}")]
    BadRequest(h::HttpError),
    /// The request head was not complete within `limits.http_head_timeout_ms`;
    /// `partial`: some of it had arrived (answered 408; an empty one closes quietly).
    #[error("request head not complete in time")]
    HeadTimeout { partial: bool },
    #[error("no new request within the keep-alive timeout")]
    KeepaliveTimeout,
    #[error("the server is stopping")]
    Stopping,
    #[error("the client closed the connection")]
    PeerClosed,
    #[error("socket: {0}")]
    Socket(std::io::Error),
}

pub async fn serve(mut stream: TcpStream, peer: Option<SocketAddr>, shard: Rc<Shard>) {
    let stall = Duration::from_millis(shard.config.streams.send_stall_timeout_ms);
    if let Err(end) = requests(&mut stream, &shard, peer, stall).await {
        finish(&mut stream, &shard, peer, end, stall).await;
    }
}

/// Log, count and answer the end of a connection.
async fn finish(
    stream: &mut TcpStream,
    shard: &Shard,
    peer: Option<SocketAddr>,
    end: ConnError,
    stall: Duration,
) {
    tracing::debug!(?peer, error = %end, "HTTP connection closed");
    let answer = match end {
        ConnError::BadRequest(e) => {
            ShardMetrics::add(&shard.metrics().protocol_errors, 1);
            Some(e.response())
        }
        ConnError::HeadTimeout { partial } => {
            shard.metrics().timed_out(Timeout::HttpHead);
            // A connection that sent nothing (a browser's preconnect, a scanner) is
            // closed quietly; a partial head gets its 408.
            partial.then(|| Response::error(Status::REQUEST_TIMEOUT))
        }
        ConnError::KeepaliveTimeout => {
            shard.metrics().timed_out(Timeout::HttpKeepalive);
            None
        }
        ConnError::Stopping | ConnError::PeerClosed | ConnError::Socket(_) => None,
    };
    if let Some(response) = answer {
        let _ = write_response(stream, response.close(), None, stall).await;
    }
}

/// Serve requests until the connection ends: `Ok` when the exchange closed it
/// (`Connection: close`, HTTP/1.0, an HTTP-FLV stream's end).
async fn requests(
    stream: &mut TcpStream,
    shard: &Rc<Shard>,
    peer: Option<SocketAddr>,
    stall: Duration,
) -> Result<(), ConnError> {
    let limits = h::Limits {
        max_head_bytes: shard.config.http.max_request_head_bytes,
        ..h::Limits::default()
    };
    // Small: an idle keep-alive connection holds both (a request head rarely exceeds
    // 1 KiB; a larger one takes a few more reads, up to http.max_request_head_bytes).
    let mut buf = BytesMut::with_capacity(1024);
    let mut scratch = vec![0u8; 1024];
    let head_timeout = Duration::from_millis(shard.config.limits.http_head_timeout_ms);
    let keepalive = Duration::from_millis(shard.config.limits.http_keepalive_timeout_ms);
    let mut first = true;
    loop {
        // A request's head must arrive whole within the head timeout of the accept (the
        // first request) or of its first byte (later ones): a slow trickle is cut off,
        // not just an idle socket. Between requests a connection may idle for the
        // keep-alive timeout.
        let mut head_deadline = (first || !buf.is_empty()).then(|| Instant::now() + head_timeout);
        first = false;
        let request = loop {
            if let Some(r) = h::parse_request(&mut buf, &limits).map_err(ConnError::BadRequest)? {
                break r;
            }
            if shard.stopping.is_fired() {
                return Err(ConnError::Stopping);
            }
            let wait = match head_deadline {
                Some(at) => at.saturating_duration_since(Instant::now()),
                None => keepalive,
            };
            // An idle keep-alive connection also ends when the shard stops accepting. A
            // head past its deadline is cut off even while bytes keep coming.
            let read = async {
                if wait.is_zero() {
                    return None;
                }
                rt::timeout(wait, stream.read(&mut scratch)).await
            };
            let stop = async {
                shard.stopping.wait().await;
                None
            };
            match rt::or(read, stop).await {
                Some(Ok(0)) => return Err(ConnError::PeerClosed),
                Some(Err(e)) => return Err(ConnError::Socket(e)),
                None if shard.stopping.is_fired() => return Err(ConnError::Stopping),
                None if head_deadline.is_some() => {
                    return Err(ConnError::HeadTimeout {
                        partial: !buf.is_empty(),
                    })
                }
                None => return Err(ConnError::KeepaliveTimeout),
                Some(Ok(n)) => {
                    ShardMetrics::add(&shard.metrics().bytes_in, n as u64);
                    buf.extend_from_slice(&scratch[..n]);
                    head_deadline.get_or_insert_with(|| Instant::now() + head_timeout);
                }
            }
        };
        ShardMetrics::add(&shard.metrics().http_requests, 1);
        match route(&request, shard, peer).await {
            Reply::Done(response) => {
                let keep = write_response(stream, response, Some(&request), stall)
                    .await
                    .map_err(ConnError::Socket)?;
                if !keep {
                    return Ok(());
                }
                if shard.stopping.is_fired() {
                    return Err(ConnError::Stopping);
                }
            }
            Reply::Flv(sub, _ended) => {
                serve_flv(stream, &request, *sub, shard, stall).await;
                return Ok(());
            }
        }
    }
}

/// Write a complete response; returns whether the connection stays open. A client that
/// stops reading (e.g. one that pipelines requests and never reads the answers) fails
/// the write after `stall` and is closed; it never holds the shard.
async fn write_response(
    stream: &mut TcpStream,
    response: Response,
    request: Option<&Request>,
    stall: Duration,
) -> std::io::Result<bool> {
    let encoded = match request {
        Some(r) => response.encode(r),
        None => response.encode_standalone(),
    };
    let mut bufs = vec![encoded.head];
    bufs.extend(encoded.body);
    stream.write_all_vectored(&mut bufs, stall).await?;
    Ok(encoded.keep_alive)
}

fn cors(shard: &Shard, response: Response) -> Response {
    response.cors(&shard.config.http.cors_allow_origin)
}

/// Whether this request may use the API (or `/metrics`): the bearer token where one is
/// needed. Changing state beyond loopback always needs it.
fn api_allowed(request: &Request, shard: &Shard, peer: Option<SocketAddr>, metrics: bool) -> bool {
    let c = &shard.config;
    let read_only = matches!(request.method, Method::Get | Method::Head);
    let needs = if metrics {
        c.api_needs_token() && !c.http.metrics_public
    } else {
        c.api_needs_token() || (!read_only && !c.server.bind.is_loopback())
    };
    if !needs
        || shard
            .access
            .gate()
            .api_token_matches(request.header("authorization"))
    {
        return true;
    }
    shard.access.api_refused(peer, &request.path);
    false
}

fn api_unauthorized() -> Response {
    Response::with_body(
        Status::UNAUTHORIZED,
        "application/json",
        Bytes::from_static(
            b"{\"error\": \"this needs Authorization: Bearer <token> (http.api_token_file)\"}\n",
        ),
    )
    .header("WWW-Authenticate", "Bearer realm=\"shardcast-api\"")
    .cache_control("no-store")
}

async fn route(request: &Request, shard: &Rc<Shard>, peer: Option<SocketAddr>) -> Reply {
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
            if !api_allowed(request, shard, peer, true) {
                return Reply::Done(api_unauthorized());
            }
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
        if !api_allowed(request, shard, peer, false) {
            return Reply::Done(cors(shard, api_unauthorized()));
        }
        return Reply::Done(cors(
            shard,
            crate::server::api::handle(request, rest, shard, peer),
        ));
    }
    if !read_only {
        return Reply::Done(Response::method_not_allowed("GET, HEAD, OPTIONS"));
    }
    if let Some(stem) = path.strip_suffix(".flv") {
        let Some(key) = StreamKey::from_path(stem) else {
            return Reply::Done(Response::error(Status::NOT_FOUND));
        };
        let attempt = Attempt {
            protocol: Protocol::HttpFlv,
            action: Action::Play,
            key: &key,
            query: raw_query(request),
            peer,
        };
        let key = match shard.access.decide(&attempt).await {
            Ok(allowed) => allowed.key,
            Err(denied) => return Reply::Done(cors(shard, denied.response())),
        };
        return match shard.hub.subscribe(&key) {
            Ok(sub) => {
                let ended = Ended::new(&shard.access, Protocol::HttpFlv, Action::Play, &key, peer);
                Reply::Flv(Box::new(sub), ended)
            }
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
    if let Some(reply) = crate::server::hls::route(request, shard, peer).await {
        return Reply::Done(cors(shard, reply));
    }
    Reply::Done(cors(shard, Response::error(Status::NOT_FOUND)))
}

/// The FLV tag of a frame: built once per frame per shard, shared by every HTTP-FLV
/// viewer and the FLV recorder.
pub(crate) fn flv_tag(frame: &Frame) -> Bytes {
    match flv::write_tag(frame, frame.dts_ms) {
        Ok(tag) => tag,
        Err(e) => {
            // Ingest bounds frames below the FLV tag limit, so this is a bug; the frame
            // is skipped for this format, and the skip is visible.
            crate::server::media::serialize_failed("FLV", frame, &e);
            Bytes::new()
        }
    }
}

/// The FLV tag of a frame as one HTTP chunk (size line, tag, CRLF), built once per
/// frame per shard: chunked HTTP-FLV viewers write it as it is, with no framing per
/// viewer.
pub(crate) fn flv_chunk(frame: &Frame) -> Bytes {
    let tag = flv_tag(frame);
    if tag.is_empty() {
        return tag;
    }
    let mut out = BytesMut::with_capacity(tag.len() + 12);
    let [size_line, data, crlf] = h::chunk(tag);
    out.extend_from_slice(&size_line);
    out.extend_from_slice(&data);
    out.extend_from_slice(&crlf);
    out.freeze()
}

/// A viewer of an FLV stream has nothing to say: what it sends is read and dropped, up to
/// this much, then it is closed.
const FLV_MAX_INPUT: usize = 64 * 1024;

async fn serve_flv(
    stream: &mut TcpStream,
    request: &Request,
    mut sub: StreamSubscription,
    shard: &Rc<Shard>,
    stall: Duration,
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
        let _ = out.flush(stream, stall).await;
        return;
    }
    let header = Bytes::copy_from_slice(&flv::file_header(has_audio, has_video));
    push_body(&mut out, header, chunked);
    let (slot, build): (usize, fn(&Frame) -> Bytes) = if chunked {
        (format::FLV_CHUNK, flv_chunk)
    } else {
        (format::FLV_TAG, flv_tag)
    };
    tracing::debug!(stream = %key, remote = sub.is_remote(), "HTTP-FLV viewer joined");
    let mut scratch = [0u8; 512];
    let mut input = 0usize;
    let why = loop {
        let end = out.gather(&mut sub, slot, TrackFilter::default(), build);
        match out.write(stream, stall) {
            Ok(n) => ShardMetrics::add(&shard.metrics().bytes_out, n as u64),
            Err(e) => {
                tracing::debug!(stream = %key, error = %e, "HTTP-FLV viewer gone");
                break Disconnect::Error;
            }
        }
        match end {
            Some(EgressEnd::TooSlow { skips }) => {
                ShardMetrics::add(&shard.metrics().slow_viewers, 1);
                tracing::info!(stream = %key, skips, "HTTP-FLV viewer disconnected: too slow for the stream");
                break Disconnect::TooSlow;
            }
            Some(EgressEnd::StreamEnded) => {
                if chunked {
                    out.push(Bytes::from_static(h::LAST_CHUNK));
                }
                let _ = out.flush(stream, stall).await;
                break Disconnect::StreamEnded;
            }
            None => {}
        }
        match out
            .wait(stream, Some(&sub), None, &mut scratch, stall)
            .await
        {
            Ok(Wake::Media | Wake::Timer) => {}
            Ok(Wake::Written(n)) => ShardMetrics::add(&shard.metrics().bytes_out, n as u64),
            Ok(Wake::Input(0)) => break Disconnect::PeerClosed,
            Ok(Wake::Input(n)) => {
                ShardMetrics::add(&shard.metrics().bytes_in, n as u64);
                input += n;
                if input > FLV_MAX_INPUT {
                    tracing::debug!(stream = %key, "HTTP-FLV viewer keeps sending; closed");
                    break Disconnect::Error;
                }
            }
            Err(e @ EgressError::Stalled(_)) => {
                tracing::info!(stream = %key, error = %e, "HTTP-FLV viewer disconnected: stalled");
                break Disconnect::Stalled;
            }
            Err(e) => {
                tracing::debug!(stream = %key, error = %e, "HTTP-FLV viewer gone");
                break Disconnect::Error;
            }
        }
    };
    shard.metrics().viewer_disconnected(why);
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
