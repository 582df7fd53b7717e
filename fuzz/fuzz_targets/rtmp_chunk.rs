//! Fuzz target: drives `proto::rtmp::fuzzing::fuzz_chunk_stream` (the production decoder)
//! with arbitrary bytes. Seeds: `testdata/rtmp/corpus/rtmp_chunk/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::rtmp::fuzzing::fuzz_chunk_stream(data);
});
