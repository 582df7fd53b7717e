//! Fuzzes the HLS playlist reader: never panics, and what it accepts survives
//! render → read unchanged (see `proto::hls::fuzzing`).
//! Seeds: `testdata/golden/hls/*.m3u8`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::hls::fuzzing::playlist(data);
});
