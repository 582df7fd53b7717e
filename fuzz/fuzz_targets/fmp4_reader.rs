//! Fuzz target `fmp4_reader`: runs `proto::fmp4::fuzzing::fmp4_reader`, whose module notes say which
//! invariants it checks besides "no panic". Seeds: testdata/golden/fmp4/.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::fmp4::fuzzing::fmp4_reader(data);
});
