//! H.265/HEVC: the HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1), the SPS
//! fields packaging needs (ITU-T H.265 7.3.2.2: profile/tier/level, chroma format, bit
//! depth, conformance-window-cropped size), and the codec string of 14496-15 annex E.
//!
//! VUI, scaling lists, short-term reference picture sets and the PPS are not read.

use bytes::Bytes;

use super::bits::{unescape_rbsp, BitReader, ByteReader};
use super::nalu::{check_length_size, hevc_nal_type, hevc_type};
use super::CodecError;

const RECORD: &str = "HEVCDecoderConfigurationRecord";
const SPS: &str = "H.265 SPS";

/// An HEVCDecoderConfigurationRecord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcConfig {
    pub general_profile_space: u8,
    pub general_tier_flag: bool,
    pub general_profile_idc: u8,
    /// Flag j is bit 31 - j, as on the wire.
    pub general_profile_compatibility_flags: u32,
    /// The 48 bits of progressive/interlaced/non-packed/frame-only and constraint flags.
    pub general_constraint_indicator_flags: [u8; 6],
    pub general_level_idc: u8,
    pub min_spatial_segmentation_idc: u16,
    pub parallelism_type: u8,
    pub chroma_format_idc: u8,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    pub avg_frame_rate: u16,
    pub constant_frame_rate: u8,
    pub num_temporal_layers: u8,
    pub temporal_id_nested: bool,
    /// Bytes in each NAL unit length prefix of the media frames: 1, 2 or 4.
    pub nalu_length_size: u8,
    pub arrays: Vec<HevcNalArray>,
}

/// One array of parameter sets (or SEI) of the same NAL unit type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcNalArray {
    pub completeness: bool,
    pub nal_type: u8,
    pub nalus: Vec<Bytes>,
}

impl HevcConfig {
    pub fn parse(data: &[u8]) -> Result<Self, CodecError> {
        let mut r = ByteReader::new(data, RECORD);
        // Early x265/ffmpeg builds wrote configurationVersion 0 with a valid layout, and
        // decoders accept it, so only the layout is checked.
        let version = r.u8()?;
        if version > 1 {
            return Err(CodecError::invalid(
                RECORD,
                format!("configurationVersion {version}"),
            ));
        }
        let b = r.u8()?;
        let general_profile_compatibility_flags = r.u32()?;
        let mut general_constraint_indicator_flags = [0u8; 6];
        general_constraint_indicator_flags.copy_from_slice(r.bytes(6)?);
        let general_level_idc = r.u8()?;
        let min_spatial_segmentation_idc = r.u16()? & 0x0fff;
        let parallelism_type = r.u8()? & 0x03;
        let chroma_format_idc = r.u8()? & 0x03;
        let bit_depth_luma = (r.u8()? & 0x07) + 8;
        let bit_depth_chroma = (r.u8()? & 0x07) + 8;
        let avg_frame_rate = r.u16()?;
        let t = r.u8()?;
        let num_arrays = usize::from(r.u8()?);
        let mut arrays = Vec::with_capacity(num_arrays.min(8));
        for _ in 0..num_arrays {
            let h = r.u8()?;
            let count = usize::from(r.u16()?);
            // Each NAL unit consumes at least its 2-byte length, bounding the loop.
            let mut nalus = Vec::with_capacity(count.min(8));
            for _ in 0..count {
                let len = usize::from(r.u16()?);
                nalus.push(Bytes::copy_from_slice(r.bytes(len)?));
            }
            arrays.push(HevcNalArray {
                completeness: h & 0x80 != 0,
                nal_type: h & 0x3f,
                nalus,
            });
        }
        Ok(HevcConfig {
            general_profile_space: b >> 6,
            general_tier_flag: b & 0x20 != 0,
            general_profile_idc: b & 0x1f,
            general_profile_compatibility_flags,
            general_constraint_indicator_flags,
            general_level_idc,
            min_spatial_segmentation_idc,
            parallelism_type,
            chroma_format_idc,
            bit_depth_luma,
            bit_depth_chroma,
            avg_frame_rate,
            constant_frame_rate: t >> 6,
            num_temporal_layers: (t >> 3) & 0x07,
            temporal_id_nested: t & 0x04 != 0,
            nalu_length_size: check_length_size((t & 0x03) + 1)?,
            arrays,
        })
    }

    /// Serializes the record (reserved bits set to 1).
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        let len_size = check_length_size(self.nalu_length_size)?;
        let mut out = Vec::with_capacity(64);
        out.push(1);
        out.push(
            (self.general_profile_space & 3) << 6
                | u8::from(self.general_tier_flag) << 5
                | (self.general_profile_idc & 0x1f),
        );
        out.extend_from_slice(&self.general_profile_compatibility_flags.to_be_bytes());
        out.extend_from_slice(&self.general_constraint_indicator_flags);
        out.push(self.general_level_idc);
        out.extend_from_slice(
            &(0xf000 | (self.min_spatial_segmentation_idc & 0x0fff)).to_be_bytes(),
        );
        out.push(0xfc | (self.parallelism_type & 3));
        out.push(0xfc | (self.chroma_format_idc & 3));
        out.push(0xf8 | (self.bit_depth_luma.wrapping_sub(8) & 7));
        out.push(0xf8 | (self.bit_depth_chroma.wrapping_sub(8) & 7));
        out.extend_from_slice(&self.avg_frame_rate.to_be_bytes());
        out.push(
            (self.constant_frame_rate & 3) << 6
                | (self.num_temporal_layers & 7) << 3
                | u8::from(self.temporal_id_nested) << 2
                | (len_size - 1),
        );
        let num_arrays = u8::try_from(self.arrays.len())
            .map_err(|_| CodecError::invalid(RECORD, "more than 255 NAL unit arrays"))?;
        out.push(num_arrays);
        for array in &self.arrays {
            out.push(u8::from(array.completeness) << 7 | (array.nal_type & 0x3f));
            let count = u16::try_from(array.nalus.len()).map_err(|_| {
                CodecError::invalid(RECORD, "more than 65535 NAL units in an array")
            })?;
            out.extend_from_slice(&count.to_be_bytes());
            for nal in &array.nalus {
                let len = u16::try_from(nal.len())
                    .map_err(|_| CodecError::invalid(RECORD, "NAL unit longer than 65535 bytes"))?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(nal);
            }
        }
        Ok(out)
    }

    /// Codec string per ISO/IEC 14496-15 annex E, e.g. `hvc1.1.6.L93.B0`.
    pub fn codec_string(&self) -> String {
        let space = match self.general_profile_space {
            1 => "A",
            2 => "B",
            3 => "C",
            _ => "",
        };
        let mut s = format!(
            "hvc1.{space}{}.{:X}.{}{}",
            self.general_profile_idc,
            self.general_profile_compatibility_flags.reverse_bits(),
            if self.general_tier_flag { 'H' } else { 'L' },
            self.general_level_idc,
        );
        // Trailing zero bytes of the constraint flags are omitted.
        let used = self
            .general_constraint_indicator_flags
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i + 1);
        for b in &self.general_constraint_indicator_flags[..used] {
            s.push_str(&format!(".{b:X}"));
        }
        s
    }

    /// The NAL units of the arrays of `nal_type`.
    pub fn nalus_of_type(&self, nal_type: u8) -> impl Iterator<Item = &[u8]> {
        self.arrays
            .iter()
            .filter(move |a| a.nal_type == nal_type)
            .flat_map(|a| a.nalus.iter().map(|b| &b[..]))
    }

    /// VPS, SPS then PPS NAL units, in the order a decoder needs them.
    pub fn parameter_sets(&self) -> impl Iterator<Item = &[u8]> {
        self.nalus_of_type(hevc_type::VPS)
            .chain(self.nalus_of_type(hevc_type::SPS))
            .chain(self.nalus_of_type(hevc_type::PPS))
    }

    pub fn parse_first_sps(&self) -> Option<HevcSps> {
        self.nalus_of_type(hevc_type::SPS)
            .next()
            .and_then(|s| HevcSps::parse(s).ok())
    }
}

/// The SPS fields packaging uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcSps {
    pub general_profile_space: u8,
    pub general_tier_flag: bool,
    pub general_profile_idc: u8,
    pub general_level_idc: u8,
    pub chroma_format_idc: u8,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    /// Display width and height after the conformance window.
    pub width: u32,
    pub height: u32,
}

impl HevcSps {
    /// Parses an SPS NAL unit (with its 2-byte NAL header, emulation prevention intact).
    pub fn parse(nal: &[u8]) -> Result<Self, CodecError> {
        if hevc_nal_type(nal) != Some(hevc_type::SPS) || nal.len() < 2 {
            return Err(CodecError::invalid(
                SPS,
                format!("NAL unit type {:?} is not an SPS", hevc_nal_type(nal)),
            ));
        }
        let rbsp = unescape_rbsp(&nal[2..]);
        let mut r = BitReader::new(&rbsp, SPS);
        let _vps_id = r.u8(4)?;
        let max_sub_layers_minus1 = r.u8(3)?;
        let _temporal_id_nesting = r.flag()?;
        // profile_tier_level(1, sps_max_sub_layers_minus1), 7.3.3
        let general_profile_space = r.u8(2)?;
        let general_tier_flag = r.flag()?;
        let general_profile_idc = r.u8(5)?;
        r.skip(32 + 48)?; // compatibility flags, constraint flags
        let general_level_idc = r.u8(8)?;
        let mut sub_layer_flags = [(false, false); 8];
        for flags in sub_layer_flags
            .iter_mut()
            .take(usize::from(max_sub_layers_minus1))
        {
            *flags = (r.flag()?, r.flag()?);
        }
        if max_sub_layers_minus1 > 0 {
            r.skip(2 * (8 - usize::from(max_sub_layers_minus1)))?;
        }
        for &(profile_present, level_present) in sub_layer_flags
            .iter()
            .take(usize::from(max_sub_layers_minus1))
        {
            if profile_present {
                r.skip(88)?;
            }
            if level_present {
                r.skip(8)?;
            }
        }
        let _sps_id = r.ue()?;
        let chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return Err(CodecError::invalid(
                SPS,
                format!("chroma_format_idc {chroma_format_idc}"),
            ));
        }
        let separate_colour_plane = chroma_format_idc == 3 && r.flag()?;
        let coded_w = u64::from(r.ue()?);
        let coded_h = u64::from(r.ue()?);
        let mut window = [0u64; 4];
        if r.flag()? {
            for w in &mut window {
                *w = u64::from(r.ue()?);
            }
        }
        // saturating: a huge bit_depth_minus8 must fail the check, not overflow
        let bit_depth_luma = r.ue()?.saturating_add(8);
        let bit_depth_chroma = r.ue()?.saturating_add(8);
        if bit_depth_luma > 16 || bit_depth_chroma > 16 {
            return Err(CodecError::invalid(SPS, "bit depth above 16"));
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
        let crop = (
            sub_w * (window[0] + window[1]),
            sub_h * (window[2] + window[3]),
        );
        let (width, height) = super::cropped_size(SPS, (coded_w, coded_h), crop)?;
        Ok(HevcSps {
            general_profile_space,
            general_tier_flag,
            general_profile_idc,
            general_level_idc,
            chroma_format_idc: chroma_format_idc as u8,
            bit_depth_luma: bit_depth_luma as u8,
            bit_depth_chroma: bit_depth_chroma as u8,
            width: width as u32,
            height: height as u32,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // x265 3.5 (ffmpeg 5.1), Main profile, level 4 (120), 1920x1080.
    pub(crate) const VPS: &[u8] = &[
        0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00,
        0x03, 0x00, 0x00, 0x03, 0x00, 0x78, 0x95, 0x98, 0x09,
    ];
    pub(crate) const SPS_1080P: &[u8] = &[
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x03, 0x00, 0x78, 0xa0, 0x03, 0xc0, 0x80, 0x10, 0xe5, 0x96, 0x56, 0x69, 0x24, 0xca, 0xf0,
        0x16, 0x80, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x0f, 0x04,
    ];
    pub(crate) const PPS: &[u8] = &[0x44, 0x01, 0xc1, 0x72, 0xb4, 0x62, 0x40];

    pub(crate) fn config() -> HevcConfig {
        let array = |nal_type, nal: &[u8]| HevcNalArray {
            completeness: true,
            nal_type,
            nalus: vec![Bytes::copy_from_slice(nal)],
        };
        HevcConfig {
            general_profile_space: 0,
            general_tier_flag: false,
            general_profile_idc: 1,
            general_profile_compatibility_flags: 0x6000_0000,
            general_constraint_indicator_flags: [0x90, 0, 0, 0, 0, 0],
            general_level_idc: 120,
            min_spatial_segmentation_idc: 0,
            parallelism_type: 0,
            chroma_format_idc: 1,
            bit_depth_luma: 8,
            bit_depth_chroma: 8,
            avg_frame_rate: 0,
            constant_frame_rate: 0,
            num_temporal_layers: 1,
            temporal_id_nested: true,
            nalu_length_size: 4,
            arrays: vec![
                array(hevc_type::VPS, VPS),
                array(hevc_type::SPS, SPS_1080P),
                array(hevc_type::PPS, PPS),
            ],
        }
    }

    /// Found by the `codec_config` fuzz target (selector 5): an SPS with
    /// bit_depth_luma_minus8 near 2^32 overflowed `+ 8`. The fuzzer's input is kept as
    /// the seed `crash-hevc-bit-depth-overflow`.
    #[test]
    fn huge_bit_depth_is_an_error() {
        let crash =
            include_bytes!("../../../../testdata/codec/seeds/crash-hevc-bit-depth-overflow");
        let err = HevcSps::parse(&crash[1..]).unwrap_err();
        assert!(err.to_string().contains("bit depth"), "{err}");
        super::super::fuzzing::codec_config(crash);
    }

    #[test]
    fn sps_dimensions_and_profile() {
        let sps = HevcSps::parse(SPS_1080P).unwrap();
        assert_eq!((sps.width, sps.height), (1920, 1080));
        assert_eq!(sps.general_profile_idc, 1);
        assert_eq!(sps.general_level_idc, 120);
        assert_eq!(sps.chroma_format_idc, 1);
        assert_eq!(sps.bit_depth_luma, 8);
        for len in 0..20 {
            assert!(HevcSps::parse(&SPS_1080P[..len]).is_err(), "prefix {len}");
        }
    }

    #[test]
    fn record_round_trips_and_codec_string() {
        let cfg = config();
        let bytes = cfg.to_bytes().unwrap();
        assert_eq!(HevcConfig::parse(&bytes).unwrap(), cfg);
        assert_eq!(cfg.codec_string(), "hvc1.1.6.L120.90");
        assert_eq!(cfg.parse_first_sps().unwrap().width, 1920);
        let sets: Vec<&[u8]> = cfg.parameter_sets().collect();
        assert_eq!(sets, vec![VPS, SPS_1080P, PPS]);
        for len in 0..bytes.len() {
            assert!(HevcConfig::parse(&bytes[..len]).is_err(), "prefix {len}");
        }
    }

    #[test]
    fn codec_string_matches_annex_e_examples() {
        // 14496-15 E.3: "hev1.A4.41.H120.B0.23" style fields; here the common Main10 case.
        let mut cfg = config();
        cfg.general_profile_idc = 2;
        cfg.general_profile_compatibility_flags = 0x2000_0000;
        cfg.general_level_idc = 93;
        cfg.general_constraint_indicator_flags = [0xb0, 0, 0, 0, 0, 0];
        assert_eq!(cfg.codec_string(), "hvc1.2.4.L93.B0");
        cfg.general_profile_space = 1;
        cfg.general_tier_flag = true;
        cfg.general_constraint_indicator_flags = [0xb0, 0x23, 0, 0, 0, 0];
        assert_eq!(cfg.codec_string(), "hvc1.A2.4.H93.B0.23");
    }
}
