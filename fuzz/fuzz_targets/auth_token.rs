//! Fuzzes token verification and the auth check: never panics, `verify` and `check`
//! agree, and a token that verifies re-mints to itself (see `proto::auth::fuzzing`).
//! Seeds: `testdata/auth/corpus/auth_token`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::auth::fuzzing::token(data);
});
