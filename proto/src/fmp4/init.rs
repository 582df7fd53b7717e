//! The initialization segment: `ftyp` + `moov` with one `trak` per track (empty sample
//! tables, as fragmented files require) and `mvex`/`trex` announcing the fragments
//! (ISO/IEC 14496-12 8.2-8.8, CMAF ISO/IEC 23000-19 7.3).

use super::boxes::{
    put_u16, put_u32, put_unity_matrix, put_zeros, write_box, write_full_box, FourCc,
};

/// `und` (undetermined) packed as three 5-bit letters, ISO 639-2/T.
const LANGUAGE_UND: u16 = 0x55c4;

/// The codec configuration box inside a visual sample entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoConfigBox {
    /// `avc1` + `avcC` (AVCDecoderConfigurationRecord).
    Avc(Vec<u8>),
    /// `hvc1` + `hvcC` (HEVCDecoderConfigurationRecord).
    Hevc(Vec<u8>),
    /// `av01` + `av1C` (AV1CodecConfigurationRecord).
    Av1(Vec<u8>),
    /// `vp09` + `vpcC` (VPCodecConfigurationRecord without its FullBox header).
    Vp9(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleEntry {
    Video {
        width: u16,
        height: u16,
        config: VideoConfigBox,
    },
    /// `mp4a` with an `esds` carrying the AudioSpecificConfig.
    Aac {
        channels: u16,
        sample_rate: u32,
        audio_specific_config: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitTrack {
    pub track_id: u32,
    /// Ticks per second of this track's media time.
    pub timescale: u32,
    pub entry: SampleEntry,
}

impl InitTrack {
    fn is_video(&self) -> bool {
        matches!(self.entry, SampleEntry::Video { .. })
    }
}

/// `ftyp` + `moov` for `tracks`.
pub fn init_segment(tracks: &[InitTrack]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_box(&mut out, b"ftyp", |out| {
        out.extend_from_slice(b"iso6");
        put_u32(out, 0);
        // CMAF track files (cmfc) on ISO BMFF 6; mp41 for older players.
        for brand in [b"iso6", b"cmfc", b"mp41"] {
            out.extend_from_slice(brand);
        }
    });
    write_box(&mut out, b"moov", |out| {
        write_full_box(out, b"mvhd", 0, 0, |out| {
            put_zeros(out, 8); // creation, modification time
            put_u32(out, 1000); // timescale
            put_u32(out, 0); // duration: unknown, fragments follow
            put_u32(out, 0x0001_0000); // rate 1.0
            put_u16(out, 0x0100); // volume 1.0
            put_zeros(out, 10);
            put_unity_matrix(out);
            put_zeros(out, 24);
            put_u32(
                out,
                tracks.iter().map(|t| t.track_id).max().unwrap_or(0) + 1,
            );
        });
        for track in tracks {
            write_trak(out, track);
        }
        write_box(out, b"mvex", |out| {
            for track in tracks {
                write_full_box(out, b"trex", 0, 0, |out| {
                    put_u32(out, track.track_id);
                    put_u32(out, 1); // default_sample_description_index
                    put_zeros(out, 12); // duration, size, flags: given per fragment
                });
            }
        });
    });
    out
}

fn write_trak(out: &mut Vec<u8>, track: &InitTrack) {
    write_box(out, b"trak", |out| {
        // flags: track_enabled | track_in_movie
        write_full_box(out, b"tkhd", 0, 0x000003, |out| {
            put_zeros(out, 8);
            put_u32(out, track.track_id);
            put_zeros(out, 4);
            put_u32(out, 0); // duration
            put_zeros(out, 8);
            put_u16(out, 0); // layer
            put_u16(out, 0); // alternate_group
            put_u16(out, if track.is_video() { 0 } else { 0x0100 });
            put_zeros(out, 2);
            put_unity_matrix(out);
            let (w, h) = match track.entry {
                SampleEntry::Video { width, height, .. } => (width, height),
                SampleEntry::Aac { .. } => (0, 0),
            };
            put_u32(out, u32::from(w) << 16);
            put_u32(out, u32::from(h) << 16);
        });
        write_box(out, b"mdia", |out| {
            write_full_box(out, b"mdhd", 0, 0, |out| {
                put_zeros(out, 8);
                put_u32(out, track.timescale);
                put_u32(out, 0);
                put_u16(out, LANGUAGE_UND);
                put_u16(out, 0);
            });
            let (handler, name): (&FourCc, &[u8]) = if track.is_video() {
                (b"vide", b"VideoHandler\0")
            } else {
                (b"soun", b"SoundHandler\0")
            };
            write_full_box(out, b"hdlr", 0, 0, |out| {
                put_u32(out, 0);
                out.extend_from_slice(handler);
                put_zeros(out, 12);
                out.extend_from_slice(name);
            });
            write_box(out, b"minf", |out| {
                if track.is_video() {
                    write_full_box(out, b"vmhd", 0, 1, |out| put_zeros(out, 8));
                } else {
                    write_full_box(out, b"smhd", 0, 0, |out| put_zeros(out, 4));
                }
                write_box(out, b"dinf", |out| {
                    write_full_box(out, b"dref", 0, 0, |out| {
                        put_u32(out, 1);
                        // flags 1: media data is in this file
                        write_full_box(out, b"url ", 0, 1, |_| {});
                    });
                });
                write_box(out, b"stbl", |out| {
                    write_full_box(out, b"stsd", 0, 0, |out| {
                        put_u32(out, 1);
                        write_sample_entry(out, &track.entry);
                    });
                    for empty in [b"stts", b"stsc", b"stco"] {
                        write_full_box(out, empty, 0, 0, |out| put_u32(out, 0));
                    }
                    write_full_box(out, b"stsz", 0, 0, |out| put_zeros(out, 8));
                });
            });
        });
    });
}

fn write_sample_entry(out: &mut Vec<u8>, entry: &SampleEntry) {
    match entry {
        SampleEntry::Video {
            width,
            height,
            config,
        } => {
            let (fourcc, config_fourcc, record): (&FourCc, &FourCc, &[u8]) = match config {
                VideoConfigBox::Avc(r) => (b"avc1", b"avcC", r),
                VideoConfigBox::Hevc(r) => (b"hvc1", b"hvcC", r),
                VideoConfigBox::Av1(r) => (b"av01", b"av1C", r),
                VideoConfigBox::Vp9(r) => (b"vp09", b"vpcC", r),
            };
            write_box(out, fourcc, |out| {
                put_zeros(out, 6);
                put_u16(out, 1); // data_reference_index
                put_zeros(out, 16);
                put_u16(out, *width);
                put_u16(out, *height);
                put_u32(out, 0x0048_0000); // 72 dpi
                put_u32(out, 0x0048_0000);
                put_u32(out, 0);
                put_u16(out, 1); // frame_count
                put_zeros(out, 32); // compressorname
                put_u16(out, 0x0018); // depth
                put_u16(out, 0xffff); // pre_defined = -1
                if matches!(config, VideoConfigBox::Vp9(_)) {
                    write_full_box(out, config_fourcc, 1, 0, |out| {
                        out.extend_from_slice(record)
                    });
                } else {
                    write_box(out, config_fourcc, |out| out.extend_from_slice(record));
                }
            });
        }
        SampleEntry::Aac {
            channels,
            sample_rate,
            audio_specific_config,
        } => {
            write_box(out, b"mp4a", |out| {
                put_zeros(out, 6);
                put_u16(out, 1);
                put_zeros(out, 8);
                put_u16(out, *channels);
                put_u16(out, 16); // samplesize
                put_zeros(out, 4);
                // 16.16 fixed point; rates above 65535 Hz do not fit and are left to the
                // media timescale, as 14496-12 12.2.3 allows.
                put_u32(
                    out,
                    if *sample_rate <= 0xffff {
                        sample_rate << 16
                    } else {
                        0
                    },
                );
                write_full_box(out, b"esds", 0, 0, |out| {
                    write_es_descriptor(out, audio_specific_config)
                });
            });
        }
    }
}

/// An MPEG-4 descriptor with its expandable length field (14496-1 8.3.3).
fn write_descriptor(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    let len = body.len();
    let mut groups = 1;
    while groups < 4 && len >> (7 * groups) != 0 {
        groups += 1;
    }
    for i in (0..groups).rev() {
        let more = if i > 0 { 0x80 } else { 0 };
        out.push(more | ((len >> (7 * i)) & 0x7f) as u8);
    }
    out.extend_from_slice(body);
}

fn write_es_descriptor(out: &mut Vec<u8>, asc: &[u8]) {
    let mut dsi = Vec::with_capacity(asc.len() + 2);
    write_descriptor(&mut dsi, 0x05, asc);
    let mut dcd = vec![
        0x40, // objectTypeIndication: MPEG-4 audio
        0x15, // streamType 5 (audio) << 2 | upStream 0 | reserved 1
    ];
    put_zeros(&mut dcd, 3 + 4 + 4); // bufferSizeDB, maxBitrate, avgBitrate: unknown live
    dcd.extend_from_slice(&dsi);
    let mut es = vec![0, 0, 0]; // ES_ID 0 (ignored in MP4), no optional fields
    write_descriptor(&mut es, 0x04, &dcd);
    write_descriptor(&mut es, 0x06, &[0x02]); // SLConfigDescriptor: predefined for MP4
    write_descriptor(out, 0x03, &es);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmp4::reader;

    #[test]
    fn init_segment_reads_back() {
        let tracks = [
            InitTrack {
                track_id: 1,
                timescale: 90_000,
                entry: SampleEntry::Video {
                    width: 1920,
                    height: 1080,
                    config: VideoConfigBox::Avc(crate::media::codec::avc::tests::record()),
                },
            },
            InitTrack {
                track_id: 2,
                timescale: 48_000,
                entry: SampleEntry::Aac {
                    channels: 2,
                    sample_rate: 48_000,
                    audio_specific_config: vec![0x11, 0x90],
                },
            },
        ];
        let init = init_segment(&tracks);
        let file = reader::parse(&init).unwrap();
        assert_eq!(file.top_level, [*b"ftyp", *b"moov"]);
        assert_eq!(file.major_brand, Some(*b"iso6"));
        assert!(file.compatible_brands.contains(b"cmfc"));
        let v = &file.tracks[0];
        assert_eq!(
            (v.track_id, v.timescale, &v.handler, &v.sample_entry),
            (1, 90_000, b"vide", b"avc1")
        );
        assert_eq!((v.width, v.height), (1920, 1080));
        assert_eq!(v.config, crate::media::codec::avc::tests::record());
        let a = &file.tracks[1];
        assert_eq!(
            (a.track_id, a.timescale, &a.sample_entry),
            (2, 48_000, b"mp4a")
        );
        assert_eq!(
            (a.channels, a.sample_rate, a.object_type_indication),
            (2, 48_000, Some(0x40))
        );
        assert_eq!(a.config, vec![0x11, 0x90]);
    }

    #[test]
    fn descriptor_lengths() {
        let mut out = Vec::new();
        write_descriptor(&mut out, 5, &[0; 200]);
        assert_eq!(&out[..3], &[5, 0x81, 0x48]);
        let mut out = Vec::new();
        write_descriptor(&mut out, 5, &[1, 2]);
        assert_eq!(out, [5, 2, 1, 2]);
    }
}
