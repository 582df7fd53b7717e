//! The webhook client: one `POST` of a JSON body over a new HTTP/1.1 connection
//! (`Connection: close`), read back to a bounded answer. Runs as a task on the shard
//! (io_uring connect, non-blocking socket); the whole exchange is bounded by one
//! timeout, so a hook that hangs costs its caller that long and nothing else.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proto::http::{self as h, ChunkedDecoder};
use shards::rt::{self, TcpStream};

use crate::server::config::HookUrl;

/// A hook's answer body beyond this is refused: a decision is a few bytes of JSON.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What the hook answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0} ms")]
    Timeout(u128),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("socket: {0}")]
    Io(std::io::Error),
    #[error("bad answer: {0}")]
    BadAnswer(String),
    #[error("answer larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
}

/// POST `body` to `url` at one of `addrs` (tried in order) within `timeout`.
pub async fn post_json(
    addrs: &[SocketAddr],
    url: &HookUrl,
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, CallError> {
    match rt::timeout(timeout, exchange(addrs, url, body, timeout)).await {
        Some(r) => r,
        None => Err(CallError::Timeout(timeout.as_millis())),
    }
}

async fn exchange(
    addrs: &[SocketAddr],
    url: &HookUrl,
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, CallError> {
    let mut last = None;
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect(*addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(mut stream) = stream else {
        return Err(CallError::Connect(last.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the host resolved to no address",
            )
        })));
    };
    let host = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: shardcast/{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    let mut bufs = vec![Bytes::from(head), Bytes::copy_from_slice(body)];
    stream
        .write_all_vectored(&mut bufs, timeout)
        .await
        .map_err(CallError::Io)?;
    read_answer(&mut stream).await
}

async fn read_answer(stream: &mut TcpStream) -> Result<Answer, CallError> {
    let limits = h::Limits::default();
    let mut buf = BytesMut::with_capacity(1024);
    let mut scratch = vec![0u8; 4096];
    let bad = |e: h::HttpError| CallError::BadAnswer(e.to_string());
    let head = loop {
        if let Some(head) = h::parse_response_head(&mut buf, &limits).map_err(bad)? {
            break head;
        }
        let n = stream.read(&mut scratch).await.map_err(CallError::Io)?;
        if n == 0 {
            return Err(CallError::BadAnswer(
                "closed before the answer's head".into(),
            ));
        }
        buf.extend_from_slice(&scratch[..n]);
    };
    let status = head.status.code();
    let length = head
        .header("content-length")
        .map(|v| v.trim().parse::<usize>())
        .transpose()
        .map_err(|_| CallError::BadAnswer("bad Content-Length".into()))?;
    if length.is_some_and(|l| l > MAX_ANSWER_BYTES) {
        return Err(CallError::TooLarge);
    }
    let mut body = BytesMut::new();
    if head.is_chunked() {
        let mut chunks = ChunkedDecoder::new(MAX_ANSWER_BYTES);
        chunks.push(&buf);
        loop {
            while let Some(data) = chunks.poll_data().map_err(bad)? {
                body.extend_from_slice(&data);
                if body.len() > MAX_ANSWER_BYTES {
                    return Err(CallError::TooLarge);
                }
            }
            if chunks.is_done() {
                break;
            }
            let n = stream.read(&mut scratch).await.map_err(CallError::Io)?;
            if n == 0 {
                return Err(CallError::BadAnswer("closed inside a chunked body".into()));
            }
            chunks.push(&scratch[..n]);
        }
    } else {
        body.extend_from_slice(&buf);
        // Without a length the body ends when the hook closes (we asked for close).
        let want = length.unwrap_or(MAX_ANSWER_BYTES + 1);
        while body.len() < want {
            let n = stream.read(&mut scratch).await.map_err(CallError::Io)?;
            if n == 0 {
                if length.is_some() {
                    return Err(CallError::BadAnswer("closed inside the body".into()));
                }
                break;
            }
            body.extend_from_slice(&scratch[..n]);
            if body.len() > MAX_ANSWER_BYTES {
                return Err(CallError::TooLarge);
            }
        }
        body.truncate(want.min(body.len()));
    }
    Ok(Answer {
        status,
        body: body.freeze(),
    })
}
