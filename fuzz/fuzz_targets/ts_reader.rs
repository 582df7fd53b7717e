//! Fuzz target `ts_reader`: runs `proto::ts::fuzzing::ts_reader`, whose module notes say which
//! invariants it checks besides "no panic". Seeds: testdata/golden/ts/.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::ts::fuzzing::ts_reader(data);
});
