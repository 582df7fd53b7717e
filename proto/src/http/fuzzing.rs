//! Fuzz entry points (called by `fuzz/fuzz_targets/http_*.rs` and by the seed test
//! below). Each panics only when it finds a bug in this module.

use bytes::BytesMut;

use super::{
    parse_request, parse_response_head, ChunkedDecoder, HttpError, Limits, Request, Response,
};

type Outcome = (Vec<Request>, Option<HttpError>);

fn parse_stream(chunks: &[&[u8]], limits: &Limits) -> Outcome {
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match parse_request(&mut buf, limits) {
                Ok(Some(request)) => {
                    // Every parsed request must be answerable.
                    let _ = Response::error(super::Status::NOT_FOUND).encode(&request);
                    requests.push(request);
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = e.response();
                    return (requests, Some(e));
                }
            }
        }
    }
    (requests, None)
}

/// Parses `data` as a stream of pipelined requests, whole and split at a point chosen by
/// its first two bytes: both must give the same requests and the same outcome.
pub fn http_request(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let at = usize::from(u16::from_be_bytes([data[0], data[1]]));
    let data = &data[2..];
    let at = at % (data.len() + 1);
    // Small limits so the fuzzer reaches them.
    let limits = Limits {
        max_head_bytes: 512,
        max_headers: 8,
        max_body_bytes: 256,
    };
    let whole = parse_stream(&[data], &limits);
    let split = parse_stream(&[&data[..at], &data[at..]], &limits);
    // A split can only turn a head-too-large error into the same error earlier, never
    // change which requests parse.
    assert_eq!(whole.0, split.0, "split at {at}");
    assert_eq!(
        whole.1.is_some(),
        split.1.is_some(),
        "split at {at}: {:?} vs {:?}",
        whole.1,
        split.1
    );
}

/// Parses `data` as a response (head, then a chunked or raw body), as the server's
/// webhook client reads a hook's answer: whole and split at a point chosen by the first
/// two bytes, with the same head and body either way.
pub fn http_response(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let at = usize::from(u16::from_be_bytes([data[0], data[1]]));
    let data = &data[2..];
    let at = at % (data.len() + 1);
    let read = |chunks: &[&[u8]]| {
        let limits = Limits {
            max_head_bytes: 512,
            max_headers: 8,
            max_body_bytes: 256,
        };
        let mut buf = BytesMut::new();
        let mut head = None;
        let mut rest = chunks.iter();
        for c in rest.by_ref() {
            buf.extend_from_slice(c);
            match parse_response_head(&mut buf, &limits) {
                Ok(Some(h)) => {
                    head = Some(h);
                    break;
                }
                Ok(None) => {}
                Err(_) => return None,
            }
        }
        let head = head?;
        let mut body = Vec::new();
        if head.is_chunked() {
            let mut d = ChunkedDecoder::new(256);
            d.push(&buf);
            loop {
                loop {
                    match d.poll_data() {
                        Ok(Some(b)) => body.extend_from_slice(&b),
                        Ok(None) => break,
                        Err(_) => return Some((head, body, false)),
                    }
                }
                match rest.next() {
                    Some(c) => d.push(c),
                    None => break,
                }
            }
            let done = d.is_done();
            Some((head, body, done))
        } else {
            body.extend_from_slice(&buf);
            for c in rest {
                body.extend_from_slice(c);
            }
            Some((head, body, true))
        }
    };
    let whole = read(&[data]);
    let split = read(&[&data[..at], &data[at..]]);
    // A head-too-large error can come earlier in one than the other; a head both
    // parse is the same, and so is a body both read to its end.
    if let (Some((h1, b1, ok1)), Some((h2, b2, ok2))) = (&whole, &split) {
        assert_eq!(h1, h2, "split at {at}");
        if *ok1 && *ok2 {
            assert_eq!(b1, b2, "split at {at}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_seeds() {
        let dir = format!(
            "{}/../testdata/http/corpus/http_request",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("seed corpus {dir}: {e}"))
            .map(|e| e.unwrap().path())
            .collect();
        seeds.sort();
        // grown inputs (`cargo fuzz cmin` keeps libFuzzer's SHA-1 names) are only
        // replayed, by `fuzz_corpus_replays`
        seeds.retain(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !(name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit()))
        });
        assert!(seeds.len() >= 5, "the seed corpus is missing");
        for path in seeds {
            let data = std::fs::read(&path).unwrap();
            http_request(&data);
            // Every seed is at least one valid request.
            let (requests, _) = parse_stream(&[&data[2..]], &Limits::default());
            assert!(
                !requests.is_empty(),
                "seed {} holds no valid request",
                path.display()
            );
            crate::testkit::for_each_mutation(&data, 2_000, http_request);
            for at in 0..data.len() {
                let mut split = (at as u16).to_be_bytes().to_vec();
                split.extend_from_slice(&data[2..]);
                http_request(&split);
            }
        }
    }

    #[test]
    fn fuzz_corpus_replays() {
        let n = crate::testkit::replay_corpus("http/corpus/http_request", http_request);
        assert!(n >= 5);
        let n = crate::testkit::replay_corpus("http/corpus/http_response", http_response);
        assert!(n >= 5);
        for seed in crate::testkit::corpus("http/corpus/http_response") {
            crate::testkit::for_each_mutation(&seed.data, 500, http_response);
        }
    }
}
