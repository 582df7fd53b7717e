//! Fuzzes `proto::hls::with_query`: never panics, the output minus the inserted
//! parameters is the input, and a playlist that parsed still parses with every URI
//! carrying the parameter (see `proto::hls::fuzzing`).
//! Seeds: `testdata/hls/corpus/hls_query` (copies of `testdata/golden/hls/*.m3u8`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::hls::fuzzing::query(data);
});
