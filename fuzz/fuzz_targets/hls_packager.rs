//! Fuzzes the HLS packager with arbitrary frame sequences and checks its playlist
//! invariants after every update (see `proto::hls::fuzzing::packager`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _checked = proto::hls::fuzzing::packager(data);
});
