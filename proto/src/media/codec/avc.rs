//! H.264/AVC: the AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) and the
//! sequence parameter set fields that packaging needs (ITU-T H.264 7.3.2.1.1): profile,
//! level, chroma format, bit depth and the cropped picture size.
//!
//! VUI, scaling matrices (skipped, not kept) and PPS contents are not interpreted.

use bytes::Bytes;

use super::bits::{unescape_rbsp, BitReader, ByteReader};
use super::nalu::{avc_nal_type, avc_type, check_length_size};
use super::CodecError;

const RECORD: &str = "AVCDecoderConfigurationRecord";
const SPS: &str = "H.264 SPS";

/// An AVCDecoderConfigurationRecord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    pub profile: u8,
    pub compatibility: u8,
    pub level: u8,
    /// Bytes in each NAL unit length prefix of the media frames: 1, 2 or 4.
    pub nalu_length_size: u8,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
    /// The High-profile tail of the record, when the encoder wrote it.
    pub ext: Option<AvcConfigExt>,
}

/// Fields present in records of profiles 100, 110, 122 and 144.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfigExt {
    pub chroma_format: u8,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    pub sps_ext: Vec<Bytes>,
}

fn read_sets(r: &mut ByteReader<'_>, count: usize) -> Result<Vec<Bytes>, CodecError> {
    // `count` is at most 255, and each entry consumes input, so this is bounded.
    let mut sets = Vec::with_capacity(count.min(32));
    for _ in 0..count {
        let len = usize::from(r.u16()?);
        sets.push(Bytes::copy_from_slice(r.bytes(len)?));
    }
    Ok(sets)
}

fn write_sets(out: &mut Vec<u8>, sets: &[Bytes]) -> Result<(), CodecError> {
    for set in sets {
        let len = u16::try_from(set.len())
            .map_err(|_| CodecError::invalid(RECORD, "parameter set longer than 65535 bytes"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(set);
    }
    Ok(())
}

impl AvcConfig {
    pub fn parse(data: &[u8]) -> Result<Self, CodecError> {
        let mut r = ByteReader::new(data, RECORD);
        let version = r.u8()?;
        if version != 1 {
            return Err(CodecError::invalid(
                RECORD,
                format!("configurationVersion {version}, expected 1"),
            ));
        }
        let profile = r.u8()?;
        let compatibility = r.u8()?;
        let level = r.u8()?;
        let nalu_length_size = check_length_size((r.u8()? & 0x03) + 1)?;
        let num_sps = usize::from(r.u8()? & 0x1f);
        let sps = read_sets(&mut r, num_sps)?;
        let num_pps = usize::from(r.u8()?);
        let pps = read_sets(&mut r, num_pps)?;
        if sps.is_empty() {
            return Err(CodecError::invalid(RECORD, "no SPS"));
        }
        // Many encoders omit the High-profile tail even where the spec asks for it, and
        // some write garbage there; it carries nothing a packager needs, so a missing or
        // broken tail is ignored rather than rejected.
        let ext = if matches!(profile, 100 | 110 | 122 | 144) && r.remaining() >= 4 {
            (|| -> Result<AvcConfigExt, CodecError> {
                let chroma_format = r.u8()? & 0x03;
                let bit_depth_luma = (r.u8()? & 0x07) + 8;
                let bit_depth_chroma = (r.u8()? & 0x07) + 8;
                let n = usize::from(r.u8()?);
                let sps_ext = read_sets(&mut r, n)?;
                Ok(AvcConfigExt {
                    chroma_format,
                    bit_depth_luma,
                    bit_depth_chroma,
                    sps_ext,
                })
            })()
            .ok()
        } else {
            None
        };
        Ok(AvcConfig {
            profile,
            compatibility,
            level,
            nalu_length_size,
            sps,
            pps,
            ext,
        })
    }

    /// Serializes the record (reserved bits set to 1, as the spec requires).
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        let len_size = check_length_size(self.nalu_length_size)?;
        if self.sps.len() > 31 || self.pps.len() > 255 {
            return Err(CodecError::invalid(RECORD, "more than 31 SPS or 255 PPS"));
        }
        let mut out = vec![
            1,
            self.profile,
            self.compatibility,
            self.level,
            0xfc | (len_size - 1),
        ];
        out.push(0xe0 | self.sps.len() as u8);
        write_sets(&mut out, &self.sps)?;
        out.push(self.pps.len() as u8);
        write_sets(&mut out, &self.pps)?;
        if let Some(ext) = &self.ext {
            if ext.sps_ext.len() > 255 {
                return Err(CodecError::invalid(RECORD, "more than 255 SPS extensions"));
            }
            out.push(0xfc | (ext.chroma_format & 3));
            out.push(0xf8 | (ext.bit_depth_luma.wrapping_sub(8) & 7));
            out.push(0xf8 | (ext.bit_depth_chroma.wrapping_sub(8) & 7));
            out.push(ext.sps_ext.len() as u8);
            write_sets(&mut out, &ext.sps_ext)?;
        }
        Ok(out)
    }

    /// RFC 6381 codec string, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile, self.compatibility, self.level
        )
    }

    /// The first SPS, parsed; `None` if it is malformed.
    pub fn parse_first_sps(&self) -> Option<AvcSps> {
        self.sps.first().and_then(|s| AvcSps::parse(s).ok())
    }

    /// SPS then PPS NAL units, in the order a decoder needs them.
    pub fn parameter_sets(&self) -> impl Iterator<Item = &[u8]> {
        self.sps.iter().chain(&self.pps).map(|b| &b[..])
    }
}

/// The SPS fields packaging uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcSps {
    pub profile_idc: u8,
    pub constraint_flags: u8,
    pub level_idc: u8,
    pub chroma_format_idc: u8,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    pub frame_mbs_only: bool,
    /// Display width and height after frame cropping.
    pub width: u32,
    pub height: u32,
}

/// Profiles whose SPS carries chroma format, bit depth and scaling matrices (7.3.2.1.1).
fn has_chroma_info(profile_idc: u8) -> bool {
    matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    )
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), CodecError> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            // 7.4.2.1.1.1: delta_scale is in -128..=127 (larger ones overflowed here)
            if !(-128..=127).contains(&delta) {
                return Err(CodecError::invalid(
                    SPS,
                    format!("scaling list delta_scale {delta} outside -128..=127"),
                ));
            }
            next = (last + delta + 256).rem_euclid(256);
        }
        last = if next == 0 { last } else { next };
    }
    Ok(())
}

impl AvcSps {
    /// Parses an SPS NAL unit (with its 1-byte NAL header, emulation prevention intact).
    pub fn parse(nal: &[u8]) -> Result<Self, CodecError> {
        if avc_nal_type(nal) != Some(avc_type::SPS) {
            return Err(CodecError::invalid(
                SPS,
                format!("NAL unit type {:?} is not an SPS", avc_nal_type(nal)),
            ));
        }
        let rbsp = unescape_rbsp(&nal[1..]);
        let mut r = BitReader::new(&rbsp, SPS);
        let profile_idc = r.u8(8)?;
        let constraint_flags = r.u8(8)?;
        let level_idc = r.u8(8)?;
        let _sps_id = r.ue()?;
        let (mut chroma_format_idc, mut bit_depth_luma, mut bit_depth_chroma) = (1u32, 8u32, 8u32);
        let mut separate_colour_plane = false;
        if has_chroma_info(profile_idc) {
            chroma_format_idc = r.ue()?;
            if chroma_format_idc > 3 {
                return Err(CodecError::invalid(
                    SPS,
                    format!("chroma_format_idc {chroma_format_idc}"),
                ));
            }
            if chroma_format_idc == 3 {
                separate_colour_plane = r.flag()?;
            }
            // saturating: a huge bit_depth_minus8 must fail the check, not overflow
            bit_depth_luma = r.ue()?.saturating_add(8);
            bit_depth_chroma = r.ue()?.saturating_add(8);
            if bit_depth_luma > 14 || bit_depth_chroma > 14 {
                return Err(CodecError::invalid(SPS, "bit depth above 14"));
            }
            let _qpprime_y_zero_transform_bypass = r.flag()?;
            if r.flag()? {
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.flag()? {
                        skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }
        let _log2_max_frame_num = r.ue()?;
        match r.ue()? {
            0 => {
                let _log2_max_poc_lsb = r.ue()?;
            }
            1 => {
                let _delta_pic_order_always_zero = r.flag()?;
                let _offset_for_non_ref_pic = r.se()?;
                let _offset_for_top_to_bottom_field = r.se()?;
                let cycle = r.ue()?;
                if cycle > 255 {
                    return Err(CodecError::invalid(
                        SPS,
                        format!("num_ref_frames_in_pic_order_cnt_cycle {cycle}"),
                    ));
                }
                for _ in 0..cycle {
                    r.se()?;
                }
            }
            2 => {}
            t => return Err(CodecError::invalid(SPS, format!("pic_order_cnt_type {t}"))),
        }
        let _max_num_ref_frames = r.ue()?;
        let _gaps_in_frame_num_allowed = r.flag()?;
        let width_mbs = u64::from(r.ue()?) + 1;
        let height_map_units = u64::from(r.ue()?) + 1;
        let frame_mbs_only = r.flag()?;
        if !frame_mbs_only {
            let _mb_adaptive_frame_field = r.flag()?;
        }
        let _direct_8x8_inference = r.flag()?;
        let mut crop = [0u64; 4];
        if r.flag()? {
            for c in &mut crop {
                *c = u64::from(r.ue()?);
            }
        }
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (sub_w, sub_h) = match chroma_array_type {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let field_factor = if frame_mbs_only { 1 } else { 2 };
        let crop_x = sub_w * (crop[0] + crop[1]);
        let crop_y = sub_h * field_factor * (crop[2] + crop[3]);
        let full_w = width_mbs * 16;
        let full_h = height_map_units * 16 * field_factor;
        let (width, height) = super::cropped_size(SPS, (full_w, full_h), (crop_x, crop_y))?;
        Ok(AvcSps {
            profile_idc,
            constraint_flags,
            level_idc,
            chroma_format_idc: chroma_format_idc as u8,
            bit_depth_luma: bit_depth_luma as u8,
            bit_depth_chroma: bit_depth_chroma as u8,
            frame_mbs_only,
            width: width as u32,
            height: height as u32,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// x264 (ffmpeg 5.1), High profile level 4.0, 1920x1088 coded, cropped to 1080.
    pub(crate) const SPS_1080P: &[u8] = &[
        0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00,
        0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58,
    ];
    pub(crate) const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    pub(crate) fn record() -> Vec<u8> {
        let mut rec = vec![1, 0x64, 0x00, 0x28, 0xff, 0xe1];
        rec.extend_from_slice(&(SPS_1080P.len() as u16).to_be_bytes());
        rec.extend_from_slice(SPS_1080P);
        rec.push(1);
        rec.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
        rec.extend_from_slice(PPS);
        rec
    }

    /// Found by the `codec_config` fuzz target: a scaling list `delta_scale` of
    /// 2^31 - 1 overflowed `last + delta + 256` (a panic with overflow checks).
    #[test]
    fn huge_scaling_list_delta_is_an_error() {
        // High profile; sps_id 0, chroma 1, 8-bit, scaling matrix with list 0, whose
        // first delta_scale is se(v) 2^31 - 1 (31 leading zeros).
        let sps = [
            0x67, 0x64, 0x00, 0x00, 0xad, 0x80, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xfe, 0x80,
        ];
        let err = AvcSps::parse(&sps).unwrap_err();
        assert!(err.to_string().contains("delta_scale"), "{err}");
        super::super::fuzzing::codec_config(&[&[5u8][..], &sps].concat());
        let crash = include_bytes!("../../../../testdata/codec/seeds/crash-scaling-delta-overflow");
        super::super::fuzzing::codec_config(crash);
    }

    /// Found by the `codec_config` fuzz target (in the H.265 SPS, which reads bit
    /// depths the same way): bit_depth_luma_minus8 = 2^32 - 2 overflowed `+ 8`.
    #[test]
    fn huge_bit_depth_is_an_error() {
        // High profile; sps_id 0, chroma 1, bit_depth_luma_minus8 2^32 - 2 (31 leading
        // zeros), bit_depth_chroma_minus8 0
        let sps = [
            0x67, 0x64, 0x00, 0x00, 0xa0, 0x00, 0x00, 0x00, 0x1f, 0xff, 0xff, 0xff, 0xf8,
        ];
        let err = AvcSps::parse(&sps).unwrap_err();
        assert!(err.to_string().contains("bit depth"), "{err}");
    }

    #[test]
    fn parses_record_and_sps() {
        let cfg = AvcConfig::parse(&record()).unwrap();
        assert_eq!(cfg.codec_string(), "avc1.640028");
        assert_eq!(cfg.nalu_length_size, 4);
        assert_eq!(cfg.sps.len(), 1);
        assert_eq!(cfg.pps.len(), 1);
        let sps = cfg.parse_first_sps().unwrap();
        assert_eq!((sps.width, sps.height), (1920, 1080));
        assert_eq!(sps.profile_idc, 100);
        assert_eq!(sps.level_idc, 40);
        assert_eq!(sps.chroma_format_idc, 1);
        assert_eq!(sps.bit_depth_luma, 8);
    }

    #[test]
    fn record_round_trips() {
        let rec = record();
        let cfg = AvcConfig::parse(&rec).unwrap();
        assert_eq!(cfg.to_bytes().unwrap(), rec);
        let mut with_ext = cfg.clone();
        with_ext.ext = Some(AvcConfigExt {
            chroma_format: 1,
            bit_depth_luma: 8,
            bit_depth_chroma: 8,
            sps_ext: vec![],
        });
        let bytes = with_ext.to_bytes().unwrap();
        assert_eq!(AvcConfig::parse(&bytes).unwrap(), with_ext);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let rec = record();
        for len in 0..rec.len() {
            assert!(
                AvcConfig::parse(&rec[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
        // The fields we read end before the VUI: a prefix either fails or reads the same.
        let full = AvcSps::parse(SPS_1080P).unwrap();
        for len in 0..SPS_1080P.len() {
            match AvcSps::parse(&SPS_1080P[..len]) {
                Ok(sps) => assert_eq!(sps, full, "SPS prefix of {len} bytes"),
                Err(e) => assert!(len < 12, "SPS prefix of {len} bytes: {e}"),
            }
        }
        assert!(AvcSps::parse(&SPS_1080P[..8]).is_err());
    }

    #[test]
    fn rejects_bad_version_and_length_size() {
        let mut rec = record();
        rec[0] = 0;
        assert!(AvcConfig::parse(&rec).is_err());
        let mut rec = record();
        rec[4] = 0xfe; // lengthSizeMinusOne = 2 → 3 bytes
        assert!(AvcConfig::parse(&rec).is_err());
    }
}
