//! Test support shared by the protocol cores' seed-corpus tests.

/// Calls `check` on `rounds` random mutations (bit flips, byte changes, cuts,
/// duplications) of `seed`: a cheap stand-in for the fuzzer that runs with `cargo test`.
pub(crate) fn for_each_mutation(seed: &[u8], rounds: usize, mut check: impl FnMut(&[u8])) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ seed.len() as u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..rounds {
        let mut data = seed.to_vec();
        for _ in 0..1 + next() % 4 {
            let len = data.len().max(1) as u64;
            let at = (next() % len) as usize;
            match next() % 5 {
                0 if !data.is_empty() => data[at] ^= 1 << (next() % 8),
                1 if !data.is_empty() => data[at] = next() as u8,
                2 => data.truncate(at),
                3 if !data.is_empty() => {
                    let end = (at + 1 + (next() % 16) as usize).min(data.len());
                    let copy = data[at..end].to_vec();
                    data.splice(at..at, copy);
                }
                _ => data.insert(at.min(data.len()), next() as u8),
            }
        }
        check(&data);
    }
}
