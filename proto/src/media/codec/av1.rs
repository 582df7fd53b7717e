//! AV1: the AV1CodecConfigurationRecord (`av1C`, AV1-ISOBMFF 2.3), low-overhead OBU
//! framing, and the sequence header fields up to the maximum frame size (AV1 5.5).
//!
//! Only the sequence header is interpreted; frame headers and tiles are not.

use bytes::Bytes;

use super::bits::{leb128, BitReader, ByteReader};
use super::CodecError;

const RECORD: &str = "AV1CodecConfigurationRecord";
const SEQ: &str = "AV1 sequence header";

pub const OBU_SEQUENCE_HEADER: u8 = 1;
pub const OBU_TEMPORAL_DELIMITER: u8 = 2;

/// An `av1C` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Av1Config {
    pub seq_profile: u8,
    pub seq_level_idx_0: u8,
    pub seq_tier_0: bool,
    pub high_bitdepth: bool,
    pub twelve_bit: bool,
    pub monochrome: bool,
    pub chroma_subsampling_x: bool,
    pub chroma_subsampling_y: bool,
    pub chroma_sample_position: u8,
    pub initial_presentation_delay_minus_one: Option<u8>,
    /// Sequence header and metadata OBUs, low-overhead format.
    pub config_obus: Bytes,
}

impl Av1Config {
    pub fn parse(data: &[u8]) -> Result<Self, CodecError> {
        let mut r = ByteReader::new(data, RECORD);
        let b0 = r.u8()?;
        if b0 != 0x81 {
            return Err(CodecError::invalid(
                RECORD,
                format!("marker/version byte {b0:#04x}, expected 0x81"),
            ));
        }
        let b1 = r.u8()?;
        let b2 = r.u8()?;
        let b3 = r.u8()?;
        let config_obus = Bytes::copy_from_slice(r.rest());
        // Validate the OBU framing now so later users can rely on it.
        for obu in obus(&config_obus) {
            obu?;
        }
        Ok(Av1Config {
            seq_profile: b1 >> 5,
            seq_level_idx_0: b1 & 0x1f,
            seq_tier_0: b2 & 0x80 != 0,
            high_bitdepth: b2 & 0x40 != 0,
            twelve_bit: b2 & 0x20 != 0,
            monochrome: b2 & 0x10 != 0,
            chroma_subsampling_x: b2 & 0x08 != 0,
            chroma_subsampling_y: b2 & 0x04 != 0,
            chroma_sample_position: b2 & 0x03,
            initial_presentation_delay_minus_one: (b3 & 0x10 != 0).then_some(b3 & 0x0f),
            config_obus,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.config_obus.len());
        out.push(0x81);
        out.push((self.seq_profile & 7) << 5 | (self.seq_level_idx_0 & 0x1f));
        out.push(
            u8::from(self.seq_tier_0) << 7
                | u8::from(self.high_bitdepth) << 6
                | u8::from(self.twelve_bit) << 5
                | u8::from(self.monochrome) << 4
                | u8::from(self.chroma_subsampling_x) << 3
                | u8::from(self.chroma_subsampling_y) << 2
                | (self.chroma_sample_position & 3),
        );
        out.push(match self.initial_presentation_delay_minus_one {
            Some(d) => 0x10 | (d & 0x0f),
            None => 0,
        });
        out.extend_from_slice(&self.config_obus);
        out
    }

    pub fn bit_depth(&self) -> u8 {
        match (self.high_bitdepth, self.twelve_bit) {
            (true, true) => 12,
            (true, false) => 10,
            _ => 8,
        }
    }

    /// Codec string per AV1-ISOBMFF annex A, short form: `av01.0.04M.08`.
    pub fn codec_string(&self) -> String {
        format!(
            "av01.{}.{:02}{}.{:02}",
            self.seq_profile,
            self.seq_level_idx_0,
            if self.seq_tier_0 { 'H' } else { 'M' },
            self.bit_depth()
        )
    }

    /// Maximum frame size from the sequence header OBU, if the record carries one.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        let seq = obus(&self.config_obus)
            .filter_map(Result::ok)
            .find(|o| o.obu_type == OBU_SEQUENCE_HEADER)?;
        let sh = SequenceHeader::parse(seq.payload).ok()?;
        Some((sh.max_frame_width, sh.max_frame_height))
    }
}

/// One OBU of a low-overhead bitstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obu<'a> {
    pub obu_type: u8,
    /// The whole OBU including its header and size field.
    pub raw: &'a [u8],
    pub payload: &'a [u8],
}

/// Iterates over the OBUs of `data`; yields one error and stops on bad framing.
pub fn obus(data: &[u8]) -> impl Iterator<Item = Result<Obu<'_>, CodecError>> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match split_obu(rest) {
            Ok((obu, tail)) => {
                rest = tail;
                Some(Ok(obu))
            }
            Err(e) => {
                rest = &[];
                Some(Err(e))
            }
        }
    })
}

fn split_obu(data: &[u8]) -> Result<(Obu<'_>, &[u8]), CodecError> {
    const WHAT: &str = "AV1 OBU";
    let header = data[0];
    if header & 0x80 != 0 {
        return Err(CodecError::invalid(WHAT, "forbidden bit set"));
    }
    let obu_type = (header >> 3) & 0x0f;
    let mut pos = 1 + usize::from(header & 0x04 != 0);
    if data.len() < pos {
        return Err(CodecError::Truncated { what: WHAT });
    }
    let size = if header & 0x02 != 0 {
        let (size, used) = leb128(&data[pos..], WHAT)?;
        pos += used;
        usize::try_from(size).map_err(|_| CodecError::invalid(WHAT, "size overflows"))?
    } else {
        data.len() - pos
    };
    if size > data.len() - pos {
        return Err(CodecError::invalid(
            WHAT,
            format!("OBU of {size} bytes but only {} remain", data.len() - pos),
        ));
    }
    let end = pos + size;
    Ok((
        Obu {
            obu_type,
            raw: &data[..end],
            payload: &data[pos..end],
        },
        &data[end..],
    ))
}

/// Sequence header fields up to the frame size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceHeader {
    pub seq_profile: u8,
    pub still_picture: bool,
    pub seq_level_idx_0: u8,
    pub seq_tier_0: bool,
    pub max_frame_width: u32,
    pub max_frame_height: u32,
}

impl SequenceHeader {
    /// Parses a sequence header OBU payload (AV1 spec 5.5.1).
    pub fn parse(payload: &[u8]) -> Result<Self, CodecError> {
        let mut r = BitReader::new(payload, SEQ);
        let seq_profile = r.u8(3)?;
        let still_picture = r.flag()?;
        let reduced = r.flag()?;
        let (mut seq_level_idx_0, mut seq_tier_0) = (0, false);
        if reduced {
            seq_level_idx_0 = r.u8(5)?;
        } else {
            let timing_info_present = r.flag()?;
            let mut decoder_model_info_present = false;
            let mut buffer_delay_length = 0;
            if timing_info_present {
                r.skip(64)?; // num_units_in_display_tick, time_scale
                if r.flag()? {
                    r.uvlc()?; // num_ticks_per_picture_minus_1
                }
                decoder_model_info_present = r.flag()?;
                if decoder_model_info_present {
                    buffer_delay_length = r.u32(5)? as usize + 1;
                    r.skip(32 + 5 + 5)?;
                }
            }
            let initial_display_delay_present = r.flag()?;
            let count = r.u8(5)? + 1;
            for i in 0..count {
                r.skip(12)?; // operating_point_idc
                let level = r.u8(5)?;
                let tier = level > 7 && r.flag()?;
                if i == 0 {
                    seq_level_idx_0 = level;
                    seq_tier_0 = tier;
                }
                if decoder_model_info_present && r.flag()? {
                    r.skip(2 * buffer_delay_length + 1)?;
                }
                if initial_display_delay_present && r.flag()? {
                    r.skip(4)?;
                }
            }
        }
        let width_bits = r.u32(4)? + 1;
        let height_bits = r.u32(4)? + 1;
        let max_frame_width = r.u32(width_bits)? + 1;
        let max_frame_height = r.u32(height_bits)? + 1;
        Ok(SequenceHeader {
            seq_profile,
            still_picture,
            seq_level_idx_0,
            seq_tier_0,
            max_frame_width,
            max_frame_height,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sequence header OBU written by hand from the AV1 syntax: profile 0, not reduced,
    /// no timing info, one operating point at level 4 (2.0) main tier, 16-bit sizes,
    /// 1280x720.
    fn seq_header_obu() -> Vec<u8> {
        let mut bits = String::new();
        bits += "000"; // seq_profile
        bits += "0"; // still_picture
        bits += "0"; // reduced_still_picture_header
        bits += "0"; // timing_info_present_flag
        bits += "0"; // initial_display_delay_present_flag
        bits += "00000"; // operating_points_cnt_minus_1
        bits += "000000000000"; // operating_point_idc[0]
        bits += "00100"; // seq_level_idx[0] = 4
        bits += "1111"; // frame_width_bits_minus_1 = 15
        bits += "1111";
        bits += &format!("{:016b}", 1279);
        bits += &format!("{:016b}", 719);
        while bits.len() % 8 != 0 {
            bits.push('0');
        }
        let payload: Vec<u8> = (0..bits.len() / 8)
            .map(|i| u8::from_str_radix(&bits[i * 8..i * 8 + 8], 2).unwrap())
            .collect();
        let mut obu = vec![(OBU_SEQUENCE_HEADER << 3) | 0x02, payload.len() as u8];
        obu.extend_from_slice(&payload);
        obu
    }

    #[test]
    fn record_codec_string_and_dimensions() {
        let mut rec = vec![0x81, 0x04, 0x0c, 0x00];
        rec.extend_from_slice(&seq_header_obu());
        let cfg = Av1Config::parse(&rec).unwrap();
        assert_eq!(cfg.codec_string(), "av01.0.04M.08");
        assert_eq!(cfg.dimensions(), Some((1280, 720)));
        assert_eq!(cfg.to_bytes(), rec);
        for len in 0..4 {
            assert!(Av1Config::parse(&rec[..len]).is_err());
        }
        // A truncated OBU inside the record is a framing error.
        assert!(Av1Config::parse(&rec[..rec.len() - 1]).is_err());
    }

    #[test]
    fn obu_iteration() {
        let td = [OBU_TEMPORAL_DELIMITER << 3 | 0x02, 0x00];
        let mut data = td.to_vec();
        data.extend_from_slice(&seq_header_obu());
        let types: Vec<u8> = obus(&data).map(|o| o.unwrap().obu_type).collect();
        assert_eq!(types, vec![OBU_TEMPORAL_DELIMITER, OBU_SEQUENCE_HEADER]);
        assert!(obus(&[0x0a, 0x05, 1]).next().unwrap().is_err());
        assert!(obus(&[0x80]).next().unwrap().is_err());
    }

    #[test]
    fn ten_bit_high_tier() {
        let cfg = Av1Config::parse(&[0x81, 0x2d, 0xc0, 0x00]).unwrap();
        assert_eq!(cfg.codec_string(), "av01.1.13H.10");
    }
}
