//! The client side, for our own tools: the benchmark's HTTP-FLV viewers and the
//! integration tests read a response head and then a chunked (or raw) body with these.
//! Same sans-IO shape as the server side: bytes in, parsed pieces out.

use bytes::{Buf, Bytes, BytesMut};

use super::header_fields;
use super::{HttpError, Limits, Status};

/// A response status line and header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: Status,
    /// Names lowercased, values as sent (invalid UTF-8 replaced).
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the body uses chunked framing.
    pub fn is_chunked(&self) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == "transfer-encoding")
            .flat_map(|(_, v)| v.split(','))
            .any(|c| c.trim().eq_ignore_ascii_case("chunked"))
    }
}

/// Parses a response head from the front of `buf`, consuming it; `Ok(None)` until it is
/// complete. The body bytes after it stay in `buf`.
pub fn parse_response_head(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<ResponseHead>, HttpError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut parsed = httparse::Response::new(&mut slots);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= limits.max_head_bytes => len,
        Ok(httparse::Status::Partial) if buf.len() <= limits.max_head_bytes => return Ok(None),
        Ok(_) => {
            return Err(HttpError::HeadTooLarge {
                limit: limits.max_head_bytes,
            })
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::TooManyHeaders {
                limit: limits.max_headers,
            })
        }
        Err(e) => {
            return Err(HttpError::Malformed {
                reason: e.to_string(),
            })
        }
    };
    let code = parsed
        .code
        .expect("httparse fills the status of a complete response");
    let status = Status::new(code).ok_or_else(|| HttpError::Malformed {
        reason: format!("status code {code}"),
    })?;
    let headers = header_fields(parsed.headers);
    buf.advance(len);
    Ok(Some(ResponseHead { status, headers }))
}

/// A chunk size line longer than this is not one (64 hex digits of zeros plus
/// extensions would be absurd; real ones are under 20 bytes).
const MAX_SIZE_LINE: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailers,
    Done,
}

/// Decodes a chunked body: push bytes in any split, pull the data.
#[derive(Debug)]
pub struct ChunkedDecoder {
    buf: BytesMut,
    state: ChunkState,
    max_chunk_bytes: usize,
}

impl ChunkedDecoder {
    /// Rejects chunks larger than `max_chunk_bytes`.
    pub fn new(max_chunk_bytes: usize) -> Self {
        ChunkedDecoder {
            buf: BytesMut::new(),
            state: ChunkState::Size,
            max_chunk_bytes,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// The next piece of body data (a whole chunk or the part of it that has arrived),
    /// `Ok(None)` when more bytes are needed or the body is done.
    pub fn poll_data(&mut self) -> Result<Option<Bytes>, HttpError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(line) = self.take_line()? else {
                        return Ok(None);
                    };
                    // chunk-size [ ; extensions ]
                    let digits = line.split(|&b| b == b';').next().unwrap_or(&[]);
                    let digits = std::str::from_utf8(digits).unwrap_or("").trim();
                    let size = usize::from_str_radix(digits, 16)
                        .ok()
                        .filter(|_| !digits.is_empty() && !digits.starts_with('+'))
                        .ok_or_else(|| malformed("bad chunk size line"))?;
                    if size > self.max_chunk_bytes {
                        return Err(malformed("chunk larger than the limit"));
                    }
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let n = left.min(self.buf.len());
                    let data = self.buf.split_to(n).freeze();
                    self.state = if n == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n)
                    };
                    return Ok(Some(data));
                }
                ChunkState::DataEnd => {
                    if self.buf.len() < 2 {
                        return Ok(None);
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(malformed("chunk data not followed by CRLF"));
                    }
                    self.buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(line) = self.take_line()? else {
                        return Ok(None);
                    };
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(None),
            }
        }
    }

    /// Takes one CRLF-terminated line (without the CRLF).
    fn take_line(&mut self) -> Result<Option<Bytes>, HttpError> {
        match self.buf.windows(2).position(|w| w == b"\r\n") {
            Some(end) if end <= MAX_SIZE_LINE => {
                let line = self.buf.split_to(end).freeze();
                self.buf.advance(2);
                Ok(Some(line))
            }
            Some(_) => Err(malformed("chunk line too long")),
            None if self.buf.len() > MAX_SIZE_LINE => Err(malformed("chunk line too long")),
            None => Ok(None),
        }
    }
}

fn malformed(reason: &str) -> HttpError {
    HttpError::Malformed {
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{chunk, parse_request, Response, LAST_CHUNK};

    #[test]
    fn reads_what_the_server_side_writes() {
        let request = parse_request(
            &mut BytesMut::from("GET /live/a.flv HTTP/1.1\r\nHost: h\r\n\r\n"),
            &Limits::default(),
        )
        .unwrap()
        .unwrap();
        let encoded = Response::stream("video/x-flv").cors("*").encode(&request);
        let mut wire = encoded.head.to_vec();
        let pieces: Vec<Bytes> = vec![
            Bytes::from_static(b"FLV\x01"),
            Bytes::from(vec![9u8; 5000]),
            Bytes::new(),
        ];
        for p in &pieces {
            for part in chunk(p.clone()) {
                wire.extend_from_slice(&part);
            }
        }
        wire.extend_from_slice(LAST_CHUNK);
        let expected: Vec<u8> = pieces.concat();

        for at in [0, 1, 50, wire.len() / 2, wire.len() - 1] {
            let mut buf = BytesMut::from(&wire[..at]);
            let mut rest_pushed = false;
            let head = loop {
                if let Some(head) = parse_response_head(&mut buf, &Limits::default()).unwrap() {
                    break head;
                }
                assert!(!rest_pushed, "the whole head was there");
                buf.extend_from_slice(&wire[at..]);
                rest_pushed = true;
            };
            if !rest_pushed {
                buf.extend_from_slice(&wire[at..]);
            }
            assert_eq!(head.status, Status::OK);
            assert_eq!(head.header("content-type"), Some("video/x-flv"));
            assert!(head.is_chunked());
            let mut decoder = ChunkedDecoder::new(1 << 20);
            let mut body = Vec::new();
            // Feed the rest byte by byte: the worst split there is.
            for b in buf.iter() {
                decoder.push(&[*b]);
                while let Some(data) = decoder.poll_data().unwrap() {
                    body.extend_from_slice(&data);
                }
            }
            assert!(decoder.is_done());
            assert_eq!(body, expected, "split at {at}");
        }
    }

    #[test]
    fn rejects_bad_chunks() {
        for wire in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"+5\r\n",
            b"\r\n",
            b"FFFFFFFFFFFFFFFFFFFF\r\n",
        ] {
            let mut d = ChunkedDecoder::new(1 << 20);
            d.push(wire);
            let mut result = Ok(None);
            for _ in 0..3 {
                result = d.poll_data();
                if result.is_err() {
                    break;
                }
            }
            assert!(result.is_err(), "{}", String::from_utf8_lossy(wire));
        }
        let mut d = ChunkedDecoder::new(16);
        d.push(b"11\r\n");
        assert!(d.poll_data().is_err(), "17 bytes over a 16-byte limit");
        let mut d = ChunkedDecoder::new(16);
        d.push(&[b'0'; 2000]);
        assert!(d.poll_data().is_err(), "unbounded size line");
    }

    #[test]
    fn chunk_extensions_and_trailers() {
        let mut d = ChunkedDecoder::new(100);
        d.push(b"3;name=v\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n");
        assert_eq!(d.poll_data().unwrap().as_deref(), Some(&b"abc"[..]));
        assert_eq!(d.poll_data().unwrap(), None);
        assert!(d.is_done());
    }
}
