//! HTTP/1.1 response parsing (the webhook client's): head and body, same result whole
//! or split.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proto::http::fuzzing::http_response(data));
