//! Fuzz target: drives `proto::rtmp::fuzzing::fuzz_amf3` (the production decoder)
//! with arbitrary bytes. Seeds: `testdata/rtmp/corpus/amf3/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::rtmp::fuzzing::fuzz_amf3(data);
});
