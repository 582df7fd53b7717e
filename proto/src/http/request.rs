//! Request parsing: `httparse` for the head, then the target (path and query,
//! percent-decoded), connection persistence and the Content-Length body.

use std::borrow::Cow;

use bytes::{Buf, Bytes, BytesMut};

use super::header_fields;
use super::HttpError;

/// Bounds on what a client may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus header fields, including the blank line.
    pub max_head_bytes: usize,
    pub max_headers: usize,
    /// API bodies are tiny; media never comes in over HTTP.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 8 * 1024,
            max_headers: 64,
            max_body_bytes: 64 * 1024,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    /// Any other token; routes answer 405 or 501.
    Other(String),
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Other(token) => token,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// A complete request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub version: Version,
    /// The request target as sent, e.g. `/live/cam.m3u8?_HLS_msn=12&_HLS_part=3`.
    pub target: String,
    /// The percent-decoded path (`*` for `OPTIONS *`).
    pub path: String,
    /// Percent-decoded query parameters in order (`+` is a space, as in forms).
    pub query: Vec<(String, String)>,
    /// Header fields in order; names lowercased, values as sent (invalid UTF-8 replaced).
    pub headers: Vec<(String, String)>,
    /// Whether the connection stays open after the response: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    pub body: Bytes,
}

impl Request {
    /// The first value of a header field, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter as an unsigned number (`_HLS_msn`, `_HLS_part`): `None` when
    /// absent, `Some(Err(()))` when present but not a number.
    pub fn query_u64(&self, name: &str) -> Option<Result<u64, ()>> {
        self.query(name).map(|v| v.parse().map_err(|_| ()))
    }

    /// Whether the header field `name` lists `token` (comma-separated, case-insensitive),
    /// across repeated fields: `Connection: keep-alive, Upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Parses the next request from the front of `buf`.
///
/// - `Ok(None)`: the head or body is incomplete; call again when more bytes arrived.
///   Nothing is consumed. (The head is parsed again then; heads are small.)
/// - `Ok(Some(request))`: exactly the request's bytes were consumed; pipelined requests
///   after it stay in `buf`.
/// - `Err(e)`: answer `e.response()` and close the connection.
pub fn parse_request(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, HttpError> {
    let mut header_slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut parsed = httparse::Request::new(&mut header_slots);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_head_bytes {
                return Err(too_large(buf, limits));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::TooManyHeaders {
                limit: limits.max_headers,
            })
        }
        Err(e) => {
            // A head that is already too large is reported as such, whatever else is wrong.
            if buf.len() > limits.max_head_bytes
                && !buf[..limits.max_head_bytes]
                    .windows(4)
                    .any(|w| w == b"\r\n\r\n")
            {
                return Err(too_large(buf, limits));
            }
            return Err(HttpError::Malformed {
                reason: e.to_string(),
            });
        }
    };
    if head_len > limits.max_head_bytes {
        return Err(too_large(buf, limits));
    }
    let method = Method::from_token(
        parsed
            .method
            .expect("httparse fills the method of a complete request"),
    );
    let version = match parsed.version {
        Some(0) => Version::Http10,
        _ => Version::Http11,
    };
    let target = parsed
        .path
        .expect("httparse fills the target of a complete request")
        .to_owned();
    let headers: Vec<(String, String)> = header_fields(parsed.headers);
    let (path, query) = split_target(&target, &method)?;

    let mut request = Request {
        method,
        version,
        target,
        path,
        query,
        headers,
        keep_alive: false,
        body: Bytes::new(),
    };
    request.keep_alive = match version {
        Version::Http11 => !request.has_token("connection", "close"),
        Version::Http10 => request.has_token("connection", "keep-alive"),
    };

    let hosts = request.headers.iter().filter(|(n, _)| n == "host").count();
    if hosts > 1 || (hosts == 0 && version == Version::Http11) {
        return Err(HttpError::BadHost { count: hosts });
    }
    if let Some(coding) = request.header("transfer-encoding") {
        // RFC 9112 6.1: with Transfer-Encoding the length comes from chunked framing,
        // which we do not accept for requests; never fall back to Content-Length
        // (request smuggling).
        return Err(if request.has_token("transfer-encoding", "chunked") {
            HttpError::ChunkedBody
        } else {
            HttpError::UnsupportedTransferEncoding {
                coding: coding.to_owned(),
            }
        });
    }
    let body_len = content_length(&request)?;
    if body_len > limits.max_body_bytes as u64 {
        return Err(HttpError::BodyTooLarge {
            size: body_len,
            limit: limits.max_body_bytes,
        });
    }
    let body_len = body_len as usize;
    if buf.len() < head_len + body_len {
        return Ok(None);
    }
    buf.advance(head_len);
    request.body = buf.split_to(body_len).freeze();
    Ok(Some(request))
}

/// A head over the limit: 414 when the request line alone is (RFC 9112 §3: a target
/// longer than we parse), else 431.
fn too_large(buf: &[u8], limits: &Limits) -> HttpError {
    let within = &buf[..buf.len().min(limits.max_head_bytes)];
    if within.contains(&b'\n') {
        HttpError::HeadTooLarge {
            limit: limits.max_head_bytes,
        }
    } else {
        HttpError::UriTooLong {
            limit: limits.max_head_bytes,
        }
    }
}

/// The body length: 0 without Content-Length; repeated fields (or a list) must agree.
fn content_length(request: &Request) -> Result<u64, HttpError> {
    let mut length = None;
    for (_, value) in request
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
    {
        for part in value.split(',') {
            let part = part.trim();
            let bad = || HttpError::BadContentLength {
                value: value.clone(),
            };
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let n: u64 = part.parse().map_err(|_| bad())?;
            if length.is_some_and(|l| l != n) {
                return Err(bad());
            }
            length = Some(n);
        }
    }
    Ok(length.unwrap_or(0))
}

/// Splits a request target into the decoded path and query.
fn split_target(
    target: &str,
    method: &Method,
) -> Result<(String, Vec<(String, String)>), HttpError> {
    if target == "*" && *method == Method::Options {
        return Ok(("*".to_owned(), Vec::new()));
    }
    // Absolute-form (`GET http://host/path`), which proxies send and servers must accept.
    let origin_form: Cow<str> = match target.find("://") {
        Some(end)
            if end > 0
                && target[..end]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            let after = &target[end + 3..];
            match after.find(['/', '?']) {
                Some(i) if after.as_bytes()[i] == b'/' => Cow::Borrowed(&after[i..]),
                Some(i) => Cow::Owned(format!("/{}", &after[i..])),
                None => Cow::Borrowed("/"),
            }
        }
        _ => Cow::Borrowed(target),
    };
    if !origin_form.starts_with('/') {
        return Err(HttpError::BadTarget {
            target: target.to_owned(),
        });
    }
    let bad = || HttpError::BadPercentEncoding {
        target: target.to_owned(),
    };
    let (raw_path, raw_query) = origin_form.split_once('?').unwrap_or((&origin_form, ""));
    // Routes are matched on the decoded path, so an encoded slash would act as a
    // separator that a proxy in front, matching raw paths, does not see
    // (`/api%2Fstreams/...` is not under `/api/` to it). No stream key or route has one.
    if raw_path
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f'))
    {
        return Err(HttpError::EncodedSlash {
            target: target.to_owned(),
        });
    }
    let path = percent_decode(raw_path, false).ok_or_else(bad)?;
    let mut query = Vec::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        query.push((
            percent_decode(name, true).ok_or_else(bad)?,
            percent_decode(value, true).ok_or_else(bad)?,
        ));
    }
    Ok((path, query))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `%XX` decoding (and `+` as space in queries); `None` for a bad escape or non-UTF-8.
fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    if !text
        .bytes()
        .any(|b| b == b'%' || (plus_is_space && b == b'+'))
    {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Status;

    fn parse_all(wire: &[u8], limits: &Limits) -> (Vec<Request>, Option<HttpError>, usize) {
        let mut buf = BytesMut::from(wire);
        let mut out = Vec::new();
        loop {
            match parse_request(&mut buf, limits) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => return (out, None, buf.len()),
                Err(e) => return (out, Some(e), buf.len()),
            }
        }
    }

    fn one(wire: &[u8]) -> Result<Option<Request>, HttpError> {
        parse_request(&mut BytesMut::from(wire), &Limits::default())
    }

    #[test]
    fn ll_hls_request_with_query() {
        let r = one(b"GET /live/cam%201/index.m3u8?_HLS_msn=12&_HLS_part=3&x=a+b%2Fc HTTP/1.1\r\nHost: a\r\nOrigin: https://player.example\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.path, "/live/cam 1/index.m3u8");
        assert_eq!(r.query_u64("_HLS_msn"), Some(Ok(12)));
        assert_eq!(r.query_u64("_HLS_part"), Some(Ok(3)));
        assert_eq!(r.query("x"), Some("a b/c"));
        assert_eq!(r.query_u64("_HLS_skip"), None);
        assert_eq!(r.header("ORIGIN"), Some("https://player.example"));
        assert!(r.keep_alive);
        assert!(r.body.is_empty());
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        for wire in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            let e = one(wire).unwrap_err();
            assert!(matches!(e, HttpError::BadHost { .. }), "{e}");
            assert_eq!(e.status().code(), 400);
        }
        // HTTP/1.0 predates Host.
        assert!(one(b"GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
    }

    #[test]
    fn keep_alive_rules() {
        let cases: [(&[u8], bool); 5] = [
            (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade, close\r\n\r\n",
                false,
            ),
        ];
        for (wire, keep_alive) in cases {
            assert_eq!(
                one(wire).unwrap().unwrap().keep_alive,
                keep_alive,
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn partial_heads_at_every_split() {
        let wire: &[u8] =
            b"POST /api/streams?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
        let whole = one(wire).unwrap().unwrap();
        assert_eq!(&whole.body[..], b"hello");
        for at in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..at]);
            assert_eq!(
                parse_request(&mut buf, &Limits::default()),
                Ok(None),
                "prefix of {at} bytes"
            );
            assert_eq!(buf.len(), at, "nothing consumed");
            buf.extend_from_slice(&wire[at..]);
            assert_eq!(
                parse_request(&mut buf, &Limits::default()),
                Ok(Some(whole.clone())),
                "split at {at}"
            );
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn pipelined_requests_stay_in_the_buffer() {
        let wire = b"GET /a.flv HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b.m3u8 HTTP/1.1\r\nHost: h\r\n\r\nPOST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhiGET /d";
        let (requests, error, left) = parse_all(wire, &Limits::default());
        assert_eq!(error, None);
        let paths: Vec<_> = requests
            .iter()
            .map(|r| (r.method.clone(), r.path.as_str()))
            .collect();
        assert_eq!(
            paths,
            [
                (Method::Get, "/a.flv"),
                (Method::Head, "/b.m3u8"),
                (Method::Post, "/c")
            ]
        );
        assert_eq!(&requests[2].body[..], b"hi");
        assert_eq!(left, b"GET /d".len(), "the partial fourth request waits");
    }

    #[test]
    fn limits_map_to_414_431_and_413() {
        let limits = Limits::default();
        let long = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
            "a".repeat(9000)
        );
        let e = one(long.as_bytes()).unwrap_err();
        assert_eq!(e, HttpError::HeadTooLarge { limit: 8192 });
        assert_eq!(e.status(), Status::REQUEST_HEADER_FIELDS_TOO_LARGE);
        // Also while the head is still incomplete: don't buffer forever.
        let e = one(&long.as_bytes()[..8500]).unwrap_err();
        assert_eq!(e.status().code(), 431);

        // A request line longer than the whole head may be: 414.
        let line = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(9000));
        for wire in [line.as_bytes(), &line.as_bytes()[..8500]] {
            let e = one(wire).unwrap_err();
            assert_eq!(e, HttpError::UriTooLong { limit: 8192 });
            assert_eq!(e.status().code(), 414);
        }

        let many: String = (0..65).map(|i| format!("X-{i}: v\r\n")).collect();
        let e = one(format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n").as_bytes()).unwrap_err();
        assert_eq!(e, HttpError::TooManyHeaders { limit: 64 });
        assert_eq!(e.status().code(), 431);
        let ok: String = (0..63).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(
            one(format!("GET / HTTP/1.1\r\nHost: h\r\n{ok}\r\n").as_bytes())
                .unwrap()
                .is_some()
        );

        let e = one(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65537\r\n\r\n").unwrap_err();
        assert_eq!(
            e,
            HttpError::BodyTooLarge {
                size: 65537,
                limit: limits.max_body_bytes
            }
        );
        assert_eq!(e.status().code(), 413);
    }

    #[test]
    fn transfer_encoding_is_refused() {
        let e =
            one(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                .unwrap_err();
        assert_eq!(
            (e.clone(), e.status().code()),
            (HttpError::ChunkedBody, 411)
        );
        let e = one(
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
        )
        .unwrap_err();
        assert_eq!(e.status().code(), 411);
        let e = one(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap_err();
        assert_eq!(e.status().code(), 501);
    }

    #[test]
    fn bad_requests_are_400() {
        for wire in [
            &b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /a%ff HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /?a=%4 HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET a/b HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"G\x01T / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n",
        ] {
            let e = one(wire).unwrap_err();
            assert_eq!(
                e.status().code(),
                400,
                "{} -> {e}",
                String::from_utf8_lossy(wire)
            );
        }
        // Repeated but agreeing lengths are fine.
        let r = one(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\nx")
            .unwrap()
            .unwrap();
        assert_eq!(&r.body[..], b"x");
    }

    #[test]
    fn encoded_slashes_in_the_path_are_refused() {
        for wire in [
            &b"GET /api%2Fstreams HTTP/1.1
Host: h

"[..],
            b"POST /api/streams/live%2fcam/kick HTTP/1.1
Host: h

",
            b"GET /live%2Fcam.flv HTTP/1.1
Host: h

",
            b"GET http://h/live/cam%2f..%2fx.m3u8 HTTP/1.1
Host: h

",
        ] {
            let e = one(wire).unwrap_err();
            assert!(
                matches!(e, HttpError::EncodedSlash { .. }),
                "{} -> {e}",
                String::from_utf8_lossy(wire)
            );
            assert_eq!(e.status().code(), 400);
        }
        // In the query, and as other escapes, it is only data.
        let r = one(b"GET /live/cam.m3u8?next=%2Flive%2Fb HTTP/1.1
Host: h

")
        .unwrap()
        .unwrap();
        assert_eq!(r.query("next"), Some("/live/b"));
        let r = one(b"GET /a%252Fb HTTP/1.1
Host: h

")
        .unwrap()
        .unwrap();
        assert_eq!(r.path, "/a%2Fb");
    }

    #[test]
    fn target_forms() {
        let r = one(b"GET http://example.com:8080/live/a.flv?t=1 HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r.path.as_str(), r.query("t")), ("/live/a.flv", Some("1")));
        let r = one(b"GET http://example.com HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.path, "/");
        let r = one(b"GET http://example.com?a=b HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r.path.as_str(), r.query("a")), ("/", Some("b")));
        let r = one(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.path, "*");
        let r = one(b"BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.method, Method::Other("BREW".into()));
        assert_eq!(r.method.as_str(), "BREW");
    }
}
