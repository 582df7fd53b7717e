//! Response building: status line, headers, framing (Content-Length, chunked, or until
//! close), HEAD, CORS, error bodies, and chunk framing for streamed bodies.

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;

use super::{Method, Request, Version};

/// An HTTP status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Status(u16);

impl Status {
    pub const OK: Status = Status(200);
    pub const NO_CONTENT: Status = Status(204);
    pub const NOT_MODIFIED: Status = Status(304);
    pub const BAD_REQUEST: Status = Status(400);
    pub const UNAUTHORIZED: Status = Status(401);
    pub const FORBIDDEN: Status = Status(403);
    pub const NOT_FOUND: Status = Status(404);
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    pub const REQUEST_TIMEOUT: Status = Status(408);
    pub const CONFLICT: Status = Status(409);
    pub const LENGTH_REQUIRED: Status = Status(411);
    pub const PAYLOAD_TOO_LARGE: Status = Status(413);
    pub const URI_TOO_LONG: Status = Status(414);
    pub const REQUEST_HEADER_FIELDS_TOO_LARGE: Status = Status(431);
    pub const INTERNAL_SERVER_ERROR: Status = Status(500);
    pub const NOT_IMPLEMENTED: Status = Status(501);
    pub const SERVICE_UNAVAILABLE: Status = Status(503);

    /// Any code from 100 to 999.
    pub fn new(code: u16) -> Option<Status> {
        (100..=999).contains(&code).then_some(Status(code))
    }

    pub fn code(self) -> u16 {
        self.0
    }

    pub fn reason(self) -> &'static str {
        match self.0 {
            200 => "OK",
            204 => "No Content",
            206 => "Partial Content",
            304 => "Not Modified",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            411 => "Length Required",
            413 => "Content Too Large",
            414 => "URI Too Long",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            _ => "",
        }
    }

    /// 1xx, 204 and 304 responses never have a body (RFC 9110 6.4.1).
    fn allows_body(self) -> bool {
        !(self.0 < 200 || self.0 == 204 || self.0 == 304)
    }
}

/// What follows the head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Empty,
    /// A complete body, sent with Content-Length.
    Full(Bytes),
    /// A body the driver streams afterwards (HTTP-FLV): chunked for HTTP/1.1 clients (see
    /// [`chunk`]), raw bytes until the connection closes for HTTP/1.0 clients.
    Stream,
}

/// How the driver sends the body after the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// The response is complete with `head` and `body`.
    Complete,
    /// Send each piece with [`chunk`], and [`LAST_CHUNK`] at the end.
    Chunked,
    /// Send raw bytes; the end of the body is the close of the connection.
    UntilClose,
}

/// A response ready to write: `head`, then `body` if any (one `writev`), then the
/// streamed body per `framing`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub head: Bytes,
    pub body: Option<Bytes>,
    pub framing: Framing,
    /// Whether the connection reads the next request after this response; if not, the
    /// driver closes it once everything is written.
    pub keep_alive: bool,
}

/// A response under construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    headers: Vec<(Cow<'static, str>, String)>,
    body: Body,
    close: bool,
}

impl Response {
    /// A response with no body.
    pub fn new(status: Status) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
            close: false,
        }
    }

    /// A complete body of the given type.
    pub fn with_body(status: Status, content_type: &str, body: Bytes) -> Self {
        Response {
            body: Body::Full(body),
            ..Response::new(status)
        }
        .header("Content-Type", content_type)
    }

    /// A body streamed after the head (HTTP-FLV), never cached.
    pub fn stream(content_type: &str) -> Self {
        Response {
            body: Body::Stream,
            ..Response::new(Status::OK)
        }
        .header("Content-Type", content_type)
        .cache_control("no-cache")
    }

    /// An error with a short text body: `404 Not Found`.
    pub fn error(status: Status) -> Self {
        let text = format!("{} {}\n", status.code(), status.reason());
        Response::with_body(status, "text/plain; charset=utf-8", Bytes::from(text))
            .cache_control("no-store")
    }

    /// 405 with the `Allow` header the spec requires, e.g. `"GET, HEAD, OPTIONS"`.
    pub fn method_not_allowed(allow: &str) -> Self {
        Response::error(Status::METHOD_NOT_ALLOWED).header("Allow", allow)
    }

    /// The answer to a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`):
    /// 204 allowing `allow_methods` from `allow_origin`, the headers the client asked
    /// for, and a day of caching.
    pub fn preflight(request: &Request, allow_origin: &str, allow_methods: &str) -> Self {
        let mut r = Response::new(Status::NO_CONTENT)
            .cors(allow_origin)
            .header("Access-Control-Allow-Methods", allow_methods)
            .header("Access-Control-Max-Age", "86400");
        if let Some(asked) = request.header("access-control-request-headers") {
            r = r.header("Access-Control-Allow-Headers", asked);
        }
        r
    }

    /// Whether a request is a CORS preflight rather than a plain `OPTIONS`.
    pub fn is_preflight(request: &Request) -> bool {
        request.method == Method::Options
            && request.header("access-control-request-method").is_some()
    }

    /// Adds a header field. CR and LF in the value become spaces, so a value echoed from
    /// a request can never split the response.
    pub fn header(mut self, name: impl Into<Cow<'static, str>>, value: impl Into<String>) -> Self {
        let mut value = value.into();
        if value.contains(['\r', '\n']) {
            value = value.replace(['\r', '\n'], " ");
        }
        self.headers.push((name.into(), value));
        self
    }

    pub fn cache_control(self, value: &str) -> Self {
        self.header("Cache-Control", value)
    }

    /// `Access-Control-Allow-Origin` (`*`, or one origin, which then varies by `Origin`).
    pub fn cors(self, allow_origin: &str) -> Self {
        let r = self.header("Access-Control-Allow-Origin", allow_origin);
        if allow_origin == "*" {
            r
        } else {
            r.header("Vary", "Origin")
        }
    }

    /// Close the connection after this response.
    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn body(&self) -> &Body {
        &self.body
    }

    /// Serializes a response that answers no parsed request (a malformed one): as to an
    /// HTTP/1.1 GET, closing the connection.
    pub fn encode_standalone(self) -> Encoded {
        let request = Request {
            method: Method::Get,
            version: Version::Http11,
            target: "/".into(),
            path: "/".into(),
            query: Vec::new(),
            headers: Vec::new(),
            keep_alive: false,
            body: Bytes::new(),
        };
        self.close().encode(&request)
    }

    /// Serializes the response for `request`: HEAD gets the head only (with the length a
    /// GET would have had), HTTP/1.0 gets no chunking and an explicit keep-alive, and a
    /// closing response says `Connection: close`.
    pub fn encode(self, request: &Request) -> Encoded {
        let head_only = request.method == Method::Head;
        let allows_body = self.status.allows_body();
        let streamed = matches!(self.body, Body::Stream) && allows_body;
        let until_close = streamed && request.version == Version::Http10;
        let keep_alive = request.keep_alive && !self.close && (head_only || !until_close);

        let mut head = String::with_capacity(128);
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\n",
            self.status.code(),
            self.status.reason()
        );
        head.push_str("Server: shardcast\r\n");
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let (body, framing) = match &self.body {
            _ if !allows_body => (None, Framing::Complete),
            Body::Empty => {
                head.push_str("Content-Length: 0\r\n");
                (None, Framing::Complete)
            }
            Body::Full(bytes) => {
                let _ = write!(head, "Content-Length: {}\r\n", bytes.len());
                (
                    Some(bytes.clone()).filter(|b| !head_only && !b.is_empty()),
                    Framing::Complete,
                )
            }
            Body::Stream if until_close => (
                None,
                if head_only {
                    Framing::Complete
                } else {
                    Framing::UntilClose
                },
            ),
            Body::Stream => {
                head.push_str("Transfer-Encoding: chunked\r\n");
                (
                    None,
                    if head_only {
                        Framing::Complete
                    } else {
                        Framing::Chunked
                    },
                )
            }
        };
        match (keep_alive, request.version) {
            (false, _) => head.push_str("Connection: close\r\n"),
            (true, Version::Http10) => head.push_str("Connection: keep-alive\r\n"),
            (true, Version::Http11) => {}
        }
        head.push_str("\r\n");
        Encoded {
            head: Bytes::from(head),
            body,
            framing,
            keep_alive,
        }
    }
}

/// The chunk that ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Frames `data` as one chunk of a chunked body: the size line, the data itself (shared,
/// not copied), and the CRLF after it, for one `writev`. Empty data gives three empty
/// pieces, since a zero-size chunk would end the body.
pub fn chunk(data: Bytes) -> [Bytes; 3] {
    if data.is_empty() {
        return [Bytes::new(), Bytes::new(), Bytes::new()];
    }
    let size_line = Bytes::from(format!("{:X}\r\n", data.len()));
    [size_line, data, Bytes::from_static(b"\r\n")]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_request, Limits};
    use bytes::BytesMut;

    fn request(wire: &str) -> Request {
        parse_request(&mut BytesMut::from(wire), &Limits::default())
            .unwrap()
            .unwrap()
    }

    fn text(bytes: &Bytes) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn full_body_with_length() {
        let get = request("GET /x.m3u8 HTTP/1.1\r\nHost: h\r\n\r\n");
        let e = Response::with_body(
            Status::OK,
            "application/vnd.apple.mpegurl",
            Bytes::from_static(b"#EXTM3U\n"),
        )
        .cache_control("max-age=1")
        .cors("*")
        .encode(&get);
        assert_eq!(
            text(&e.head),
            "HTTP/1.1 200 OK\r\nServer: shardcast\r\nContent-Type: application/vnd.apple.mpegurl\r\n\
             Cache-Control: max-age=1\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: 8\r\n\r\n"
        );
        assert_eq!(e.body.as_deref(), Some(&b"#EXTM3U\n"[..]));
        assert_eq!((e.framing, e.keep_alive), (Framing::Complete, true));
    }

    #[test]
    fn head_gets_headers_only() {
        let head = request("HEAD /x.m3u8 HTTP/1.1\r\nHost: h\r\n\r\n");
        let e = Response::with_body(Status::OK, "text/plain", Bytes::from_static(b"12345"))
            .encode(&head);
        assert!(
            text(&e.head).contains("Content-Length: 5\r\n"),
            "the length a GET would get"
        );
        assert_eq!(e.body, None);
        let e = Response::stream("video/x-flv").encode(&head);
        assert!(text(&e.head).contains("Transfer-Encoding: chunked\r\n"));
        assert_eq!((e.framing, e.keep_alive), (Framing::Complete, true));
    }

    #[test]
    fn streams_are_chunked_for_http11_and_until_close_for_http10() {
        let e = Response::stream("video/x-flv")
            .cors("*")
            .encode(&request("GET /a.flv HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(text(&e.head).contains("Cache-Control: no-cache\r\n"));
        assert!(text(&e.head).contains("Transfer-Encoding: chunked\r\n"));
        assert!(!text(&e.head).contains("Content-Length"));
        assert_eq!((e.framing, e.keep_alive), (Framing::Chunked, true));

        let e = Response::stream("video/x-flv").encode(&request(
            "GET /a.flv HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        ));
        assert!(!text(&e.head).contains("Transfer-Encoding"));
        assert!(!text(&e.head).contains("Content-Length"));
        assert!(text(&e.head).ends_with("Connection: close\r\n\r\n"));
        assert_eq!((e.framing, e.keep_alive), (Framing::UntilClose, false));
    }

    #[test]
    fn connection_header_follows_the_request() {
        let ok = || Response::new(Status::OK);
        let e = ok().encode(&request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(text(&e.head).ends_with("Content-Length: 0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(e.keep_alive);
        let e = ok().encode(&request("GET / HTTP/1.0\r\n\r\n"));
        assert!(text(&e.head).ends_with("Connection: close\r\n\r\n") && !e.keep_alive);
        let e = ok().encode(&request(
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        ));
        assert!(text(&e.head).ends_with("Connection: close\r\n\r\n") && !e.keep_alive);
        let e = ok()
            .close()
            .encode(&request("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(!e.keep_alive);
    }

    #[test]
    fn error_responses() {
        let get = request("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        for (status, line) in [
            (Status::BAD_REQUEST, "400 Bad Request"),
            (Status::NOT_FOUND, "404 Not Found"),
            (Status::METHOD_NOT_ALLOWED, "405 Method Not Allowed"),
            (Status::LENGTH_REQUIRED, "411 Length Required"),
            (
                Status::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "431 Request Header Fields Too Large",
            ),
            (Status::SERVICE_UNAVAILABLE, "503 Service Unavailable"),
        ] {
            let e = Response::error(status).encode(&get);
            assert!(text(&e.head).starts_with(&format!("HTTP/1.1 {line}\r\n")));
            assert_eq!(e.body.as_deref(), Some(format!("{line}\n").as_bytes()));
            assert!(text(&e.head).contains(&format!("Content-Length: {}\r\n", line.len() + 1)));
        }
        let e = Response::method_not_allowed("GET, HEAD").encode(&get);
        assert!(text(&e.head).contains("Allow: GET, HEAD\r\n"));

        let err = crate::http::HttpError::ChunkedBody;
        let e = err.response().encode(&get);
        assert!(text(&e.head).starts_with("HTTP/1.1 411 "));
        assert!(!e.keep_alive, "a failed parse closes the connection");
    }

    #[test]
    fn no_body_for_204_and_304() {
        let get = request("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        for status in [Status::NO_CONTENT, Status::NOT_MODIFIED] {
            let e =
                Response::with_body(status, "text/plain", Bytes::from_static(b"x")).encode(&get);
            assert!(!text(&e.head).contains("Content-Length"));
            assert_eq!(e.body, None);
        }
    }

    #[test]
    fn cors_preflight() {
        let req = request(
            "OPTIONS /live/a.m3u8 HTTP/1.1\r\nHost: h\r\nOrigin: https://p.example\r\nAccess-Control-Request-Method: GET\r\n\
             Access-Control-Request-Headers: range\r\n\r\n",
        );
        assert!(Response::is_preflight(&req));
        assert!(!Response::is_preflight(&request(
            "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"
        )));
        let e = Response::preflight(&req, "https://p.example", "GET, HEAD, OPTIONS").encode(&req);
        let head = text(&e.head);
        assert!(head.starts_with("HTTP/1.1 204 No Content\r\n"));
        for line in [
            "Access-Control-Allow-Origin: https://p.example\r\n",
            "Vary: Origin\r\n",
            "Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n",
            "Access-Control-Allow-Headers: range\r\n",
            "Access-Control-Max-Age: 86400\r\n",
        ] {
            assert!(head.contains(line), "missing {line:?} in {head}");
        }
        assert!(!head.contains("Content-Length"));
    }

    #[test]
    fn chunk_framing() {
        let data = Bytes::from(vec![7u8; 300]);
        let [size, body, crlf] = chunk(data.clone());
        assert_eq!(&size[..], b"12C\r\n");
        assert_eq!(
            body.as_ptr(),
            data.as_ptr(),
            "the shared body is not copied"
        );
        assert_eq!(&crlf[..], b"\r\n");
        assert!(chunk(Bytes::new()).iter().all(|b| b.is_empty()));
        assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
    }
}
