//! Media fragments: one `moof` (`mfhd`, then per track a `traf` with `tfhd`, `tfdt` and
//! one `trun`) followed by one `mdat` holding each track's samples in turn
//! (ISO/IEC 14496-12 8.8). Sample offsets are relative to the `moof`
//! (default-base-is-moof), so a fragment is self-contained and can be cut anywhere.

use bytes::Bytes;

use super::boxes::{put_u32, put_u64, write_box, write_full_box, write_mdat_header};

/// Sample flags of a sync sample: depends on no other sample (14496-12 8.8.3.1).
pub const SAMPLE_FLAGS_SYNC: u32 = 0x0200_0000;
/// Sample flags of a non-sync sample: depends on others, `sample_is_non_sync_sample`.
pub const SAMPLE_FLAGS_NON_SYNC: u32 = 0x0101_0000;

const TFHD_DEFAULT_SAMPLE_FLAGS: u32 = 0x00_0020;
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
const TRUN_DATA_OFFSET: u32 = 0x000001;
const TRUN_DURATION: u32 = 0x000100;
const TRUN_SIZE: u32 = 0x000200;
const TRUN_FLAGS: u32 = 0x000400;
const TRUN_COMPOSITION_OFFSET: u32 = 0x000800;

/// One sample of a run, timing in the track's timescale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentSample {
    pub duration: u32,
    pub flags: u32,
    pub composition_offset: i32,
    pub data: Bytes,
}

/// The samples of one track in a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRun {
    pub track_id: u32,
    pub base_media_decode_time: u64,
    pub samples: Vec<FragmentSample>,
    /// Audio: every sample is a sync sample, so flags go once in `tfhd` and the trun
    /// carries neither flags nor composition offsets.
    pub all_sync: bool,
}

/// Writes `moof` + `mdat`. Runs without samples are skipped.
pub fn write_fragment(sequence_number: u32, runs: &[TrackRun]) -> Vec<u8> {
    let runs: Vec<&TrackRun> = runs.iter().filter(|r| !r.samples.is_empty()).collect();
    let data_len: usize = runs
        .iter()
        .flat_map(|r| &r.samples)
        .map(|s| s.data.len())
        .sum();
    let mut out = Vec::with_capacity(
        256 + 16 * runs.iter().map(|r| r.samples.len()).sum::<usize>() + data_len,
    );
    let mut offset_fields = Vec::with_capacity(runs.len());
    write_box(&mut out, b"moof", |out| {
        write_full_box(out, b"mfhd", 0, 0, |out| put_u32(out, sequence_number));
        for run in &runs {
            write_box(out, b"traf", |out| write_traf(out, run, &mut offset_fields));
        }
    });
    let moof_len = out.len();
    write_mdat_header(&mut out, data_len);
    let mut data_offset = out.len();
    for (run, field) in runs.iter().zip(offset_fields) {
        // data_offset is a signed 32-bit field: a moof of over 2 GiB cannot be written,
        // and ours is ~16 bytes per sample.
        let offset = i32::try_from(data_offset).expect("moof and preceding runs stay below 2 GiB");
        out[field..field + 4].copy_from_slice(&offset.to_be_bytes());
        data_offset += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    debug_assert!(moof_len < data_offset || data_len == 0);
    for s in runs.iter().flat_map(|r| &r.samples) {
        out.extend_from_slice(&s.data);
    }
    out
}

fn write_traf(out: &mut Vec<u8>, run: &TrackRun, offset_fields: &mut Vec<usize>) {
    let mut tfhd_flags = TFHD_DEFAULT_BASE_IS_MOOF;
    if run.all_sync {
        tfhd_flags |= TFHD_DEFAULT_SAMPLE_FLAGS;
    }
    write_full_box(out, b"tfhd", 0, tfhd_flags, |out| {
        put_u32(out, run.track_id);
        if run.all_sync {
            put_u32(out, SAMPLE_FLAGS_SYNC);
        }
    });
    write_full_box(out, b"tfdt", 1, 0, |out| {
        put_u64(out, run.base_media_decode_time)
    });
    let mut trun_flags = TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE;
    if !run.all_sync {
        trun_flags |= TRUN_FLAGS | TRUN_COMPOSITION_OFFSET;
    }
    // Version 1 makes composition offsets signed; only needed when one is negative.
    let version = u8::from(!run.all_sync && run.samples.iter().any(|s| s.composition_offset < 0));
    write_full_box(out, b"trun", version, trun_flags, |out| {
        put_u32(out, run.samples.len() as u32);
        offset_fields.push(out.len());
        put_u32(out, 0); // data_offset, patched once the moof size is known
        for s in &run.samples {
            put_u32(out, s.duration);
            // A sample is one access unit; far below 4 GiB by construction upstream.
            put_u32(out, s.data.len() as u32);
            if !run.all_sync {
                put_u32(out, s.flags);
                put_u32(out, s.composition_offset as u32);
            }
        }
    });
}
