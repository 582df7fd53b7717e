//! Fuzz target `ts_mux`: runs `proto::ts::fuzzing::ts_mux`, whose module notes say which
//! invariants it checks besides "no panic". Seeds: none needed; `drive_muxer` documents the input format.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::ts::fuzzing::ts_mux(data);
});
