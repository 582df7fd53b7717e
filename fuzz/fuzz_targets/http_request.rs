//! HTTP/1.1 request parsing: pipelined requests, same result whole or split.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proto::http::fuzzing::http_request(data));
