//! A sans-IO HTTP/1.1 server core: request heads (and small bodies) in, response bytes
//! out. Serves HTTP-FLV, HLS/LL-HLS, the API and `/metrics` on every shard's HTTP port.
//!
//! - [`parse_request`] takes a buffer that may hold a partial request, or several
//!   pipelined ones, and returns the next complete request, consuming exactly its bytes.
//! - [`Response`] builds a response and [`Response::encode`] turns it into a head plus an
//!   optional body `Bytes` the driver writes with one `writev`, with the framing
//!   (Content-Length, chunked, or until close) chosen for the request (HTTP/1.0 or 1.1,
//!   HEAD, keep-alive).
//! - [`chunk`] frames one piece of a streamed body (HTTP-FLV tags) as three `Bytes` so a
//!   shared, serialize-once body is never copied per viewer.
//! - For our own clients (benchmark viewers, tests): [`parse_response_head`] and
//!   [`ChunkedDecoder`].
//!
//! Not here: sockets, timeouts, routing, TLS, request bodies with
//! `Transfer-Encoding` (rejected: our API bodies are tiny and clients send Content-Length),
//! `Expect: 100-continue` (clients send the body anyway after a short wait), HTTP/2.

mod client;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod request;
mod response;

pub use client::{parse_response_head, ChunkedDecoder, ResponseHead};
pub use request::{parse_request, Limits, Method, Request, Version};
pub use response::{chunk, Body, Encoded, Framing, Response, Status, LAST_CHUNK};

/// Errors of the HTTP layer: each maps to the status the connection answers with
/// ([`HttpError::status`]) before it is closed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("request head is larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("request line is longer than {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("request has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("malformed request head: {reason}")]
    Malformed { reason: String },
    #[error("request target '{target}' is not an absolute path")]
    BadTarget { target: String },
    #[error("request target '{target}' has invalid percent-encoding or is not UTF-8")]
    BadPercentEncoding { target: String },
    #[error("request target '{target}' has an encoded slash (%2F) in its path; no route has one")]
    EncodedSlash { target: String },
    #[error("invalid Content-Length '{value}'")]
    BadContentLength { value: String },
    #[error("chunked request bodies are not accepted; send the body with a Content-Length")]
    ChunkedBody,
    #[error("Transfer-Encoding '{coding}' is not implemented")]
    UnsupportedTransferEncoding { coding: String },
    #[error("request body of {size} bytes exceeds the {limit}-byte limit")]
    BodyTooLarge { size: u64, limit: usize },
    /// RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host field, any request at
    /// most one.
    #[error("request has {count} Host header fields; HTTP/1.1 needs exactly one")]
    BadHost { count: usize },
}

impl HttpError {
    /// The status to answer with.
    pub fn status(&self) -> Status {
        match self {
            HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders { .. } => {
                Status::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HttpError::UriTooLong { .. } => Status::URI_TOO_LONG,
            HttpError::Malformed { .. }
            | HttpError::BadTarget { .. }
            | HttpError::BadPercentEncoding { .. }
            | HttpError::EncodedSlash { .. }
            | HttpError::BadContentLength { .. }
            | HttpError::BadHost { .. } => Status::BAD_REQUEST,
            HttpError::ChunkedBody => Status::LENGTH_REQUIRED,
            HttpError::UnsupportedTransferEncoding { .. } => Status::NOT_IMPLEMENTED,
            HttpError::BodyTooLarge { .. } => Status::PAYLOAD_TOO_LARGE,
        }
    }

    /// The error response; it closes the connection, since the position of the next
    /// request in the byte stream is unknown.
    pub fn response(&self) -> Response {
        Response::error(self.status()).close()
    }
}

/// Header fields as (lowercased name, value), invalid UTF-8 in values replaced.
pub(crate) fn header_fields(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}
