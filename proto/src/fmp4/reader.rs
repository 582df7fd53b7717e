//! A minimal fragmented-MP4 reader for tests and fuzzing: walks boxes, reads the track
//! list and sample entries of `moov`, and the `moof` fragments with their samples
//! resolved to byte ranges of `mdat`.
//!
//! It reads what our muxer and ffmpeg's fragmented output write; it does not read
//! non-fragmented sample tables (`stts`/`stsz`/`stco` contents), edit lists or sidx.

use std::ops::Range;

use crate::mux::MuxError;

use super::boxes::FourCc;

fn malformed(detail: impl Into<String>) -> MuxError {
    MuxError::Malformed {
        what: "fMP4",
        detail: detail.into(),
    }
}

/// One box: its type, its body, and where its header starts in the input.
#[derive(Debug, Clone, Copy)]
pub struct RawBox<'a> {
    pub fourcc: FourCc,
    pub body: &'a [u8],
    /// Offset of the box header within the slice that was walked.
    pub offset: usize,
}

/// Splits `data` into boxes; stops with an error on a bad size.
pub fn boxes(data: &[u8]) -> impl Iterator<Item = Result<RawBox<'_>, MuxError>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= data.len() {
            return None;
        }
        let item = next_box(data, pos);
        match &item {
            Ok((_, end)) => pos = *end,
            Err(_) => pos = data.len(),
        }
        Some(item.map(|(b, _)| b))
    })
}

fn next_box(data: &[u8], pos: usize) -> Result<(RawBox<'_>, usize), MuxError> {
    let rest = &data[pos..];
    if rest.len() < 8 {
        return Err(malformed(format!(
            "{} trailing bytes at offset {pos} cannot hold a box header",
            rest.len()
        )));
    }
    let size32 = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let fourcc: FourCc = [rest[4], rest[5], rest[6], rest[7]];
    let (header, size) = match size32 {
        0 => (8, rest.len() as u64),
        1 => {
            let large = rest
                .get(8..16)
                .ok_or_else(|| malformed("truncated largesize"))?;
            (
                16,
                u64::from_be_bytes(large.try_into().expect("slice of 8 bytes")),
            )
        }
        n => (8, u64::from(n)),
    };
    if size < header as u64 || size > rest.len() as u64 {
        return Err(malformed(format!(
            "box '{}' at offset {pos} has size {size} but {} bytes remain",
            String::from_utf8_lossy(&fourcc),
            rest.len()
        )));
    }
    let size = size as usize;
    Ok((
        RawBox {
            fourcc,
            body: &rest[header..size],
            offset: pos,
        },
        pos + size,
    ))
}

/// The first child box of `parent_body` with type `fourcc`.
pub fn child<'a>(parent_body: &'a [u8], fourcc: &FourCc) -> Result<Option<&'a [u8]>, MuxError> {
    for b in boxes(parent_body) {
        let b = b?;
        if &b.fourcc == fourcc {
            return Ok(Some(b.body));
        }
    }
    Ok(None)
}

fn require<'a>(parent_body: &'a [u8], fourcc: &FourCc) -> Result<&'a [u8], MuxError> {
    child(parent_body, fourcc)?
        .ok_or_else(|| malformed(format!("missing '{}' box", String::from_utf8_lossy(fourcc))))
}

/// A bounds-checked big-endian cursor.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8]) -> Self {
        Cursor { data, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], MuxError> {
        if n > self.data.len() - self.pos {
            return Err(malformed(format!(
                "box body ends after {} bytes, needed {n} more",
                self.pos
            )));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, MuxError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, MuxError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, MuxError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, MuxError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    /// FullBox version and flags.
    fn version_flags(&mut self) -> Result<(u8, u32), MuxError> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00ff_ffff))
    }
    fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }
}

/// A parsed fragmented MP4 file (or init segment followed by fragments).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fmp4File {
    pub major_brand: Option<FourCc>,
    pub compatible_brands: Vec<FourCc>,
    pub tracks: Vec<TrackInfo>,
    pub fragments: Vec<Fragment>,
    /// Top-level box types in order, for structure checks.
    pub top_level: Vec<FourCc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    pub track_id: u32,
    pub timescale: u32,
    /// `vide` or `soun`.
    pub handler: FourCc,
    /// Sample entry type: `avc1`, `hvc1`, `hev1`, `av01`, `vp09`, `mp4a`.
    pub sample_entry: FourCc,
    /// Visual sample entry size.
    pub width: u16,
    pub height: u16,
    /// Audio sample entry channel count and integer sample rate.
    pub channels: u16,
    pub sample_rate: u32,
    /// The codec configuration box of the sample entry (`avcC`, `hvcC`, `av1C`, `vpcC`
    /// with its FullBox header, or for `mp4a` the decoder specific info from `esds`).
    pub config: Vec<u8>,
    /// For `mp4a`: the esds objectTypeIndication (0x40 AAC, 0x6b MP3).
    pub object_type_indication: Option<u8>,
    /// `trex` defaults, if present.
    pub trex_default_duration: u32,
    pub trex_default_size: u32,
    pub trex_default_flags: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// Offset of the `moof` box in the input.
    pub moof_offset: usize,
    pub sequence_number: u32,
    pub trafs: Vec<TrackFragment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackFragment {
    pub track_id: u32,
    pub tfhd_flags: u32,
    pub base_media_decode_time: Option<u64>,
    /// Versions of the `trun` boxes (1 allows negative composition offsets).
    pub trun_versions: Vec<u8>,
    pub samples: Vec<SampleEntry>,
}

impl TrackFragment {
    /// Sum of the sample durations, in the track timescale.
    pub fn duration(&self) -> u64 {
        self.samples.iter().map(|s| u64::from(s.duration)).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleEntry {
    pub duration: u32,
    pub size: u32,
    pub flags: u32,
    pub composition_offset: i64,
    /// Where the sample's bytes are in the input.
    pub data: Range<usize>,
}

/// `sample_is_non_sync_sample` in sample flags (ISO 14496-12 8.8.3.1).
pub const SAMPLE_IS_NON_SYNC: u32 = 0x0001_0000;

impl SampleEntry {
    pub fn is_sync(&self) -> bool {
        self.flags & SAMPLE_IS_NON_SYNC == 0
    }
}

/// Parses an init segment and/or fragments.
pub fn parse(data: &[u8]) -> Result<Fmp4File, MuxError> {
    let mut file = Fmp4File::default();
    for b in boxes(data) {
        let b = b?;
        file.top_level.push(b.fourcc);
        match &b.fourcc {
            b"ftyp" => {
                let mut c = Cursor::new(b.body);
                file.major_brand = Some(c.take(4)?.try_into().expect("4 bytes"));
                c.u32()?;
                file.compatible_brands = c
                    .rest()
                    .chunks_exact(4)
                    .map(|c| c.try_into().expect("chunks of 4"))
                    .collect();
            }
            b"moov" => file.tracks = parse_moov(b.body)?,
            b"moof" => {
                let fragment = parse_moof(data, b.offset, b.body, &file.tracks)?;
                file.fragments.push(fragment);
            }
            _ => {}
        }
    }
    Ok(file)
}

fn parse_moov(moov: &[u8]) -> Result<Vec<TrackInfo>, MuxError> {
    let mut tracks = Vec::new();
    for b in boxes(moov) {
        let b = b?;
        if &b.fourcc == b"trak" {
            tracks.push(parse_trak(b.body)?);
        }
    }
    if let Some(mvex) = child(moov, b"mvex")? {
        for b in boxes(mvex) {
            let b = b?;
            if &b.fourcc != b"trex" {
                continue;
            }
            let mut c = Cursor::new(b.body);
            c.version_flags()?;
            let id = c.u32()?;
            c.u32()?; // default_sample_description_index
            let (d, s, f) = (c.u32()?, c.u32()?, c.u32()?);
            if let Some(t) = tracks.iter_mut().find(|t| t.track_id == id) {
                (
                    t.trex_default_duration,
                    t.trex_default_size,
                    t.trex_default_flags,
                ) = (d, s, f);
            }
        }
    }
    Ok(tracks)
}

fn parse_trak(trak: &[u8]) -> Result<TrackInfo, MuxError> {
    let mut c = Cursor::new(require(trak, b"tkhd")?);
    let (version, _) = c.version_flags()?;
    c.take(if version == 1 { 16 } else { 8 })?;
    let track_id = c.u32()?;
    let mdia = require(trak, b"mdia")?;
    let mut c = Cursor::new(require(mdia, b"mdhd")?);
    let (version, _) = c.version_flags()?;
    c.take(if version == 1 { 16 } else { 8 })?;
    let timescale = c.u32()?;
    let mut c = Cursor::new(require(mdia, b"hdlr")?);
    c.version_flags()?;
    c.u32()?;
    let handler: FourCc = c.take(4)?.try_into().expect("4 bytes");
    let stbl = require(require(mdia, b"minf")?, b"stbl")?;
    let mut c = Cursor::new(require(stbl, b"stsd")?);
    c.version_flags()?;
    if c.u32()? == 0 {
        return Err(malformed("stsd without sample entries"));
    }
    let entry = boxes(c.rest())
        .next()
        .ok_or_else(|| malformed("stsd without sample entries"))??;
    let mut info = TrackInfo {
        track_id,
        timescale,
        handler,
        sample_entry: entry.fourcc,
        width: 0,
        height: 0,
        channels: 0,
        sample_rate: 0,
        config: Vec::new(),
        object_type_indication: None,
        trex_default_duration: 0,
        trex_default_size: 0,
        trex_default_flags: 0,
    };
    let mut c = Cursor::new(entry.body);
    c.take(8)?; // reserved, data_reference_index
    if &handler == b"vide" {
        c.take(16)?;
        info.width = c.u16()?;
        info.height = c.u16()?;
        c.take(50)?;
        for b in boxes(c.rest()) {
            let b = b?;
            if matches!(&b.fourcc, b"avcC" | b"hvcC" | b"av1C" | b"vpcC") {
                info.config = b.body.to_vec();
            }
        }
    } else if &handler == b"soun" {
        c.take(8)?;
        info.channels = c.u16()?;
        c.take(6)?;
        info.sample_rate = c.u32()? >> 16;
        if let Some(esds) = child(c.rest(), b"esds")? {
            let (oti, dsi) = parse_esds(esds)?;
            info.object_type_indication = Some(oti);
            info.config = dsi;
        }
    }
    Ok(info)
}

/// Reads an MPEG-4 descriptor header: (tag, body).
fn descriptor<'a>(c: &mut Cursor<'a>) -> Result<(u8, &'a [u8]), MuxError> {
    let tag = c.u8()?;
    let mut len = 0usize;
    for _ in 0..4 {
        let b = c.u8()?;
        len = (len << 7) | usize::from(b & 0x7f);
        if b & 0x80 == 0 {
            return Ok((tag, c.take(len)?));
        }
    }
    Err(malformed("descriptor length longer than 4 bytes"))
}

/// `esds` → (objectTypeIndication, DecoderSpecificInfo bytes).
fn parse_esds(esds: &[u8]) -> Result<(u8, Vec<u8>), MuxError> {
    let mut c = Cursor::new(esds);
    c.version_flags()?;
    let (tag, es) = descriptor(&mut c)?;
    if tag != 3 {
        return Err(malformed(format!(
            "esds starts with descriptor tag {tag}, expected 3"
        )));
    }
    let mut c = Cursor::new(es);
    c.u16()?; // ES_ID
    let flags = c.u8()?;
    if flags & 0x80 != 0 {
        c.u16()?;
    }
    if flags & 0x40 != 0 {
        let n = usize::from(c.u8()?);
        c.take(n)?;
    }
    if flags & 0x20 != 0 {
        c.u16()?;
    }
    let (tag, dcd) = descriptor(&mut c)?;
    if tag != 4 {
        return Err(malformed(format!(
            "expected DecoderConfigDescriptor, got tag {tag}"
        )));
    }
    let mut c = Cursor::new(dcd);
    let oti = c.u8()?;
    c.take(12)?;
    let dsi = if c.rest().is_empty() {
        Vec::new()
    } else {
        let (tag, dsi) = descriptor(&mut c)?;
        if tag != 5 {
            return Err(malformed(format!(
                "expected DecoderSpecificInfo, got tag {tag}"
            )));
        }
        dsi.to_vec()
    };
    Ok((oti, dsi))
}

fn parse_moof(
    file: &[u8],
    moof_offset: usize,
    moof: &[u8],
    tracks: &[TrackInfo],
) -> Result<Fragment, MuxError> {
    let mut c = Cursor::new(require(moof, b"mfhd")?);
    c.version_flags()?;
    let sequence_number = c.u32()?;
    let mut trafs = Vec::new();
    for b in boxes(moof) {
        let b = b?;
        if &b.fourcc == b"traf" {
            trafs.push(parse_traf(file, moof_offset, b.body, tracks)?);
        }
    }
    Ok(Fragment {
        moof_offset,
        sequence_number,
        trafs,
    })
}

fn parse_traf(
    file: &[u8],
    moof_offset: usize,
    traf: &[u8],
    tracks: &[TrackInfo],
) -> Result<TrackFragment, MuxError> {
    let mut c = Cursor::new(require(traf, b"tfhd")?);
    let (_, tfhd_flags) = c.version_flags()?;
    let track_id = c.u32()?;
    let trex = tracks.iter().find(|t| t.track_id == track_id);
    let mut base = moof_offset as u64;
    if tfhd_flags & 0x01 != 0 {
        base = c.u64()?;
    }
    if tfhd_flags & 0x02 != 0 {
        c.u32()?; // sample_description_index
    }
    let mut default_duration = trex.map_or(0, |t| t.trex_default_duration);
    let mut default_size = trex.map_or(0, |t| t.trex_default_size);
    let mut default_flags = trex.map_or(0, |t| t.trex_default_flags);
    if tfhd_flags & 0x08 != 0 {
        default_duration = c.u32()?;
    }
    if tfhd_flags & 0x10 != 0 {
        default_size = c.u32()?;
    }
    if tfhd_flags & 0x20 != 0 {
        default_flags = c.u32()?;
    }
    let base_media_decode_time = match child(traf, b"tfdt")? {
        Some(tfdt) => {
            let mut c = Cursor::new(tfdt);
            let (version, _) = c.version_flags()?;
            Some(if version == 1 {
                c.u64()?
            } else {
                u64::from(c.u32()?)
            })
        }
        None => None,
    };
    let mut samples = Vec::new();
    let mut trun_versions = Vec::new();
    let mut next_data = base;
    for b in boxes(traf) {
        let b = b?;
        if &b.fourcc != b"trun" {
            continue;
        }
        let mut c = Cursor::new(b.body);
        let (version, flags) = c.version_flags()?;
        trun_versions.push(version);
        let count = c.u32()? as usize;
        if flags & 0x01 != 0 {
            let offset = c.u32()? as i32;
            next_data = base
                .checked_add_signed(i64::from(offset))
                .ok_or_else(|| malformed("trun data_offset before the start of the file"))?;
        }
        let first_flags = if flags & 0x04 != 0 {
            Some(c.u32()?)
        } else {
            None
        };
        let per_sample = [0x100, 0x200, 0x400, 0x800]
            .iter()
            .filter(|&&f| flags & f != 0)
            .count()
            * 4;
        // The count comes from the input: bound it by the bytes that must hold its
        // entries, or by the file size when entries are empty (all defaults).
        let limit = c.rest().len().checked_div(per_sample).unwrap_or(file.len());
        if count > limit {
            return Err(malformed(format!(
                "trun claims {count} samples; at most {limit} fit"
            )));
        }
        for i in 0..count {
            let duration = if flags & 0x100 != 0 {
                c.u32()?
            } else {
                default_duration
            };
            let size = if flags & 0x200 != 0 {
                c.u32()?
            } else {
                default_size
            };
            let mut sample_flags = if flags & 0x400 != 0 {
                c.u32()?
            } else {
                default_flags
            };
            if i == 0 {
                if let Some(f) = first_flags {
                    sample_flags = f;
                }
            }
            let composition_offset = if flags & 0x800 != 0 {
                let raw = c.u32()?;
                if version == 0 {
                    i64::from(raw)
                } else {
                    i64::from(raw as i32)
                }
            } else {
                0
            };
            let start = next_data;
            let end = start + u64::from(size);
            if end > file.len() as u64 {
                return Err(malformed(format!(
                    "sample of track {track_id} ends at {end}, past the input"
                )));
            }
            next_data = end;
            samples.push(SampleEntry {
                duration,
                size,
                flags: sample_flags,
                composition_offset,
                data: start as usize..end as usize,
            });
        }
    }
    Ok(TrackFragment {
        track_id,
        tfhd_flags,
        base_media_decode_time,
        trun_versions,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ffmpeg_fragmented_mp4() {
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/codec/h264_aac.mp4"
        ))
        .unwrap();
        let file = parse(&data).unwrap();
        assert_eq!(file.tracks.len(), 2);
        let video = &file.tracks[0];
        assert_eq!(&video.sample_entry, b"avc1");
        assert_eq!((video.width, video.height), (128, 72));
        let audio = &file.tracks[1];
        assert_eq!(&audio.sample_entry, b"mp4a");
        assert_eq!(audio.object_type_indication, Some(0x40));
        assert_eq!(audio.sample_rate, 48000);
        assert!(!file.fragments.is_empty());
        let video_samples: usize = file
            .fragments
            .iter()
            .flat_map(|f| &f.trafs)
            .filter(|t| t.track_id == video.track_id)
            .map(|t| t.samples.len())
            .sum();
        assert_eq!(video_samples, 30, "2 s at 15 fps");
        let first = &file.fragments[0].trafs[0].samples[0];
        assert!(first.is_sync());
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(parse(&[0, 0, 0, 4, b'f', b't', b'y', b'p']).is_err());
        assert!(parse(&[0, 0, 0, 99, b'f', b't', b'y', b'p']).is_err());
        assert!(parse(&[0, 0, 0, 9]).is_err());
        // A trun claiming 2^32-1 samples without per-sample fields.
        let mut moof = Vec::new();
        super::super::boxes::write_box(&mut moof, b"moof", |out| {
            super::super::boxes::write_full_box(out, b"mfhd", 0, 0, |o| {
                o.extend_from_slice(&[0, 0, 0, 1])
            });
            super::super::boxes::write_box(out, b"traf", |out| {
                super::super::boxes::write_full_box(out, b"tfhd", 0, 0x20000, |o| {
                    o.extend_from_slice(&[0, 0, 0, 1])
                });
                super::super::boxes::write_full_box(out, b"trun", 0, 0, |o| {
                    o.extend_from_slice(&[0xff; 4])
                });
            });
        });
        let err = parse(&moof).unwrap_err();
        assert!(err.to_string().contains("trun claims"), "{err}");
    }
}
