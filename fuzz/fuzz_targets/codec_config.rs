//! Fuzz target `codec_config`: runs `proto::media::codec::fuzzing::codec_config`, whose module notes say which
//! invariants it checks besides "no panic". Seeds: testdata/codec/seeds/ (first byte selects the parser).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::media::codec::fuzzing::codec_config(data);
});
