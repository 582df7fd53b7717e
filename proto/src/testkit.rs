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

/// One file of a fuzz corpus directory.
pub(crate) struct CorpusFile {
    pub name: String,
    pub data: Vec<u8>,
    /// Named as libFuzzer names what it finds (40 hex digits, the SHA-1 of the
    /// content): a grown input kept by `cargo fuzz cmin`, not a hand-made seed. Grown
    /// inputs are only replayed; seed-specific checks and mutations are for the others.
    pub grown: bool,
}

/// The files of `testdata/<dir>`, sorted by name; panics if the directory is missing.
pub(crate) fn corpus(dir: &str) -> Vec<CorpusFile> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(dir);
    let mut out: Vec<CorpusFile> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("fuzz corpus {}: {e}", path.display()))
        .map(|entry| {
            let file = entry.expect("readable dir entry").path();
            let name = file
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            let grown = name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit());
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            CorpusFile { name, data, grown }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Keeps the seed file `testdata/<dir>/<name>` equal to `bytes`, which a test builds:
/// `UPDATE_SEEDS=1 cargo test -p shardcast-proto` writes it, otherwise a stale or
/// missing file fails.
pub(crate) fn check_seed_file(dir: &str, name: &str, bytes: &[u8]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(dir)
        .join(name);
    if std::env::var_os("UPDATE_SEEDS").is_some() {
        std::fs::create_dir_all(path.parent().expect("a parent dir")).expect("writable testdata");
        std::fs::write(&path, bytes).expect("writable seed file");
    }
    let stored = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_SEEDS=1", path.display()));
    assert!(
        stored == bytes,
        "{} is stale; run with UPDATE_SEEDS=1",
        path.display()
    );
}

/// Runs `check` on every file of the fuzz corpus `testdata/<dir>` and returns how many
/// there were.
pub(crate) fn replay_corpus(dir: &str, mut check: impl FnMut(&[u8])) -> usize {
    let files = corpus(dir);
    for f in &files {
        check(&f.data);
    }
    files.len()
}
