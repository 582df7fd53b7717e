//! Fuzz target `fmp4_mux`: runs `proto::fmp4::fuzzing::fmp4_mux`, whose module notes say which
//! invariants it checks besides "no panic". Seeds: none needed; `drive_muxer` documents the input format.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::fmp4::fuzzing::fmp4_mux(data);
});
