//! Structure-aware RTMP: the harness does a valid handshake and connect/publish (or
//! play) prelude, then the fuzz bytes are the client's chunk stream, driven through
//! `RtmpServerConn` as a driver would (see `proto::rtmp::fuzzing::fuzz_server_session`).
//! Seeds: `testdata/rtmp/corpus/rtmp_server/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::rtmp::fuzzing::fuzz_server_session(data);
});
