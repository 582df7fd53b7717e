//! VP9: the VPCodecConfigurationRecord (`vpcC`, VP Codec ISO Media File Format Binding
//! 2.3) and the frame size from a key frame's uncompressed header (VP9 spec 6.2).
//!
//! Enhanced RTMP sends the record; ffmpeg's FLV muxer prefixes it with the `vpcC`
//! FullBox version and flags. Both forms are accepted.

use bytes::Bytes;

use super::bits::{BitReader, ByteReader};
use super::CodecError;

const RECORD: &str = "VPCodecConfigurationRecord";

/// A VPCodecConfigurationRecord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpConfig {
    pub profile: u8,
    pub level: u8,
    pub bit_depth: u8,
    pub chroma_subsampling: u8,
    pub video_full_range: bool,
    pub colour_primaries: u8,
    pub transfer_characteristics: u8,
    pub matrix_coefficients: u8,
    pub codec_init_data: Bytes,
}

impl VpConfig {
    pub fn parse(data: &[u8]) -> Result<Self, CodecError> {
        // The bare record is 8 bytes plus init data; with the FullBox header, 12. The
        // init data size field tells which layout the bytes have.
        let size_at = |offset: usize| {
            data.get(offset..offset + 2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        };
        let body = if data.len() >= 12
            && data[0] == 1
            && data[1..4] == [0, 0, 0]
            && size_at(10) == Some(data.len() - 12)
        {
            &data[4..]
        } else {
            data
        };
        let mut r = ByteReader::new(body, RECORD);
        let profile = r.u8()?;
        let level = r.u8()?;
        let b = r.u8()?;
        let colour_primaries = r.u8()?;
        let transfer_characteristics = r.u8()?;
        let matrix_coefficients = r.u8()?;
        let init_len = usize::from(r.u16()?);
        let codec_init_data = Bytes::copy_from_slice(r.bytes(init_len)?);
        let bit_depth = b >> 4;
        if !matches!(bit_depth, 8 | 10 | 12) {
            return Err(CodecError::invalid(
                RECORD,
                format!("bit depth {bit_depth}"),
            ));
        }
        if profile > 3 {
            return Err(CodecError::invalid(RECORD, format!("profile {profile}")));
        }
        Ok(VpConfig {
            profile,
            level,
            bit_depth,
            chroma_subsampling: (b >> 1) & 0x07,
            video_full_range: b & 1 == 1,
            colour_primaries,
            transfer_characteristics,
            matrix_coefficients,
            codec_init_data,
        })
    }

    /// The record without the FullBox header (the body of `vpcC` after version/flags).
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        let init_len = u16::try_from(self.codec_init_data.len())
            .map_err(|_| CodecError::invalid(RECORD, "codec init data longer than 65535 bytes"))?;
        let mut out = vec![
            self.profile,
            self.level,
            (self.bit_depth & 0x0f) << 4
                | (self.chroma_subsampling & 7) << 1
                | u8::from(self.video_full_range),
            self.colour_primaries,
            self.transfer_characteristics,
            self.matrix_coefficients,
        ];
        out.extend_from_slice(&init_len.to_be_bytes());
        out.extend_from_slice(&self.codec_init_data);
        Ok(out)
    }

    /// Codec string, short form: `vp09.00.10.08`.
    pub fn codec_string(&self) -> String {
        format!(
            "vp09.{:02}.{:02}.{:02}",
            self.profile, self.level, self.bit_depth
        )
    }
}

/// The frame size of a VP9 key frame (the first frame of a superframe); `None` for
/// inter frames, shown-existing frames or malformed headers.
pub fn keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    let mut r = BitReader::new(frame, "VP9 frame header");
    if r.u8(2).ok()? != 2 {
        return None; // frame_marker
    }
    let profile = r.u8(1).ok()? | r.u8(1).ok()? << 1;
    if profile == 3 {
        r.skip(1).ok()?;
    }
    if r.flag().ok()? {
        return None; // show_existing_frame
    }
    if r.flag().ok()? {
        return None; // frame_type 1 = non-key
    }
    r.skip(2).ok()?; // show_frame, error_resilient_mode
    if r.u32(24).ok()? != 0x49_83_42 {
        return None;
    }
    // color_config (6.2.2)
    if profile >= 2 {
        r.skip(1).ok()?; // ten_or_twelve_bit
    }
    let color_space = r.u8(3).ok()?;
    if color_space != 7 {
        r.skip(1).ok()?; // color_range
        if profile == 1 || profile == 3 {
            r.skip(3).ok()?;
        }
    } else if profile == 1 || profile == 3 {
        r.skip(1).ok()?;
    }
    let w = r.u32(16).ok()? + 1;
    let h = r.u32(16).ok()? + 1;
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_with_and_without_fullbox_header() {
        let record = [0, 10, 0x82, 1, 1, 1, 0, 0];
        let cfg = VpConfig::parse(&record).unwrap();
        assert_eq!(cfg.codec_string(), "vp09.00.10.08");
        assert_eq!(cfg.chroma_subsampling, 1);
        assert_eq!(cfg.to_bytes().unwrap(), record);
        let mut boxed = vec![1, 0, 0, 0];
        boxed.extend_from_slice(&record);
        assert_eq!(VpConfig::parse(&boxed).unwrap(), cfg);
        for len in 0..record.len() {
            assert!(VpConfig::parse(&record[..len]).is_err());
        }
        assert!(
            VpConfig::parse(&[0, 10, 0x52, 1, 1, 1, 0, 0]).is_err(),
            "bit depth 5"
        );
    }

    #[test]
    fn keyframe_header_size() {
        // frame_marker 10, profile 0 (0,0), show_existing 0, frame_type 0, show 1,
        // error_res 0, sync code, color_space 1 (3 bits), range 0, w-1 = 351, h-1 = 287.
        let mut bits = String::from("10000010");
        bits += &format!("{:024b}", 0x49_83_42);
        bits += "0010";
        bits += &format!("{:016b}{:016b}", 351, 287);
        while bits.len() % 8 != 0 {
            bits.push('0');
        }
        let bytes: Vec<u8> = (0..bits.len() / 8)
            .map(|i| u8::from_str_radix(&bits[i * 8..i * 8 + 8], 2).unwrap())
            .collect();
        assert_eq!(keyframe_size(&bytes), Some((352, 288)));
        assert_eq!(keyframe_size(&bytes[..5]), None);
        let mut inter = bytes.clone();
        inter[0] |= 0x04; // frame_type = 1
        assert_eq!(keyframe_size(&inter), None);
    }
}
