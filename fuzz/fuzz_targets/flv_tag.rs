//! FLV tag bodies: parse, and whatever parses must round-trip through write.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proto::flv::fuzzing::flv_tag(data));
