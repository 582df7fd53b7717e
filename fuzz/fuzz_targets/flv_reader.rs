//! The streaming FLV reader: same tags and outcome whole or split.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proto::flv::fuzzing::flv_reader(data));
