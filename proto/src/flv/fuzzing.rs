//! Fuzz entry points (called by `fuzz/fuzz_targets/flv_*.rs` and by the seed tests
//! below). Each panics only when it finds a bug in this module.

use bytes::Bytes;

use super::{parse_body, tag_kind, write_body, FlvReader, TagKind};

/// The first byte picks the tag kind, the rest is the body. Whatever parses must
/// survive `parse(write(frame)) == frame`.
pub fn flv_tag(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let kind = match selector % 3 {
        0 => TagKind::Audio,
        1 => TagKind::Video,
        _ => TagKind::Script,
    };
    let Ok(Some(frame)) = parse_body(kind, 90_000, Bytes::copy_from_slice(body)) else {
        return;
    };
    assert_eq!(
        tag_kind(frame.codec),
        kind,
        "a frame keeps the kind of its tag"
    );
    let written = write_body(&frame);
    let again = parse_body(kind, 90_000, written.clone());
    assert_eq!(again, Ok(Some(frame)), "re-parsing {written:02x?}");
}

/// Reads `data` as an FLV stream whole and split at a point chosen by its first two
/// bytes: both must give the same tags and the same outcome.
pub fn flv_reader(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let at = usize::from(u16::from_be_bytes([data[0], data[1]])) % (data.len() - 1);
    let data = &data[2..];
    let at = at.min(data.len());
    let whole = read(&[data]);
    let split = read(&[&data[..at], &data[at..]]);
    assert_eq!(whole, split, "split at {at}");
}

type ReadOutcome = (Vec<super::Tag>, Option<super::FlvError>);

fn read(chunks: &[&[u8]]) -> ReadOutcome {
    // A small limit keeps the fuzzer from spending its time on huge buffers.
    let mut reader = FlvReader::with_max_tag_bytes(1 << 16);
    let mut tags = Vec::new();
    for chunk in chunks {
        reader.push(chunk);
        loop {
            match reader.poll_tag() {
                Ok(Some(tag)) => {
                    let _ = tag.frame();
                    tags.push(tag);
                }
                Ok(None) => break,
                Err(e) => return (tags, Some(e)),
            }
        }
    }
    (tags, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-made seeds of `testdata/flv/corpus/<dir>` (grown inputs are replayed
    /// by `fuzz_corpora_replay`).
    fn seeds(dir: &str) -> Vec<(String, Vec<u8>)> {
        crate::testkit::corpus(&format!("flv/corpus/{dir}"))
            .into_iter()
            .filter(|f| !f.grown)
            .map(|f| (format!("{dir}/{}", f.name), f.data))
            .collect()
    }

    /// Every file of both corpora, grown ones included, through its target.
    #[test]
    fn fuzz_corpora_replay() {
        assert!(crate::testkit::replay_corpus("flv/corpus/flv_tag", flv_tag) >= 10);
        assert!(crate::testkit::replay_corpus("flv/corpus/flv_reader", flv_reader) >= 2);
    }

    #[test]
    fn flv_tag_seeds() {
        let seeds = seeds("flv_tag");
        assert!(seeds.len() >= 10, "the seed corpus is missing");
        for (name, data) in seeds {
            // Each seed is a valid body: it must produce a frame, not only not crash.
            let (&selector, body) = data.split_first().unwrap();
            let kind = [TagKind::Audio, TagKind::Video, TagKind::Script][usize::from(selector % 3)];
            assert!(
                matches!(
                    parse_body(kind, 0, Bytes::copy_from_slice(body)),
                    Ok(Some(_))
                ),
                "seed {name} does not parse"
            );
            flv_tag(&data);
        }
    }

    #[test]
    fn mutated_seeds_never_break_the_round_trip() {
        for (_, seed) in seeds("flv_tag") {
            crate::testkit::for_each_mutation(&seed, 2_000, flv_tag);
        }
    }

    #[test]
    fn mutated_files_read_the_same_split_or_whole() {
        let file = std::fs::read(format!(
            "{}/../testdata/flv/hevc.flv",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let mut seed = vec![0x01, 0x00];
        seed.extend_from_slice(&file[..600]);
        crate::testkit::check_seed_file("flv/corpus/flv_reader", "hevc-600", &seed);
        crate::testkit::for_each_mutation(&seed, 3_000, flv_reader);
    }

    #[test]
    fn flv_reader_on_fixture_files() {
        for name in ["h264-aac.flv", "hevc.flv"] {
            let file = std::fs::read(format!(
                "{}/../testdata/flv/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            for at in [0u16, 1, 13, 500, 4000] {
                let mut data = at.to_be_bytes().to_vec();
                data.extend_from_slice(&file);
                flv_reader(&data);
            }
            // the fuzz seed: split at the first tag, cut to the fuzzer's 8 KiB max_len
            let mut seed = 13u16.to_be_bytes().to_vec();
            seed.extend_from_slice(&file[..file.len().min(8190)]);
            crate::testkit::check_seed_file("flv/corpus/flv_reader", name, &seed);
        }
    }
}
