//! AAC: the AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) as far as HLS and MP4 need it
//! (object type, sampling frequency, channel configuration, SBR/PS signalling, frame
//! length), and the ADTS header (14496-3 1.A.2.2) that MPEG-TS carries before each raw
//! AAC frame.
//!
//! Program config elements (channel configuration 0) are not parsed: such streams have
//! no channel count here and cannot be wrapped in ADTS.

use super::bits::BitReader;
use super::CodecError;

const ASC: &str = "AudioSpecificConfig";

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

pub const AOT_AAC_LC: u8 = 2;
pub const AOT_SBR: u8 = 5;
pub const AOT_PS: u8 = 29;

/// The AudioSpecificConfig fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// The core audio object type (2 = AAC LC), after any explicit SBR/PS wrapper.
    pub object_type: u8,
    /// Index into the standard rate table, or `None` for an explicit 24-bit rate.
    pub sampling_frequency_index: Option<u8>,
    /// Core sampling rate in Hz (the rate of the AAC frames; SBR doubles the output rate).
    pub sample_rate: u32,
    pub channel_configuration: u8,
    /// SBR signalled explicitly (HE-AAC).
    pub sbr: bool,
    /// Parametric stereo signalled explicitly (HE-AACv2).
    pub ps: bool,
    /// SBR output rate, when SBR is signalled.
    pub extension_sample_rate: Option<u32>,
    /// `frameLengthFlag`: 960-sample frames instead of 1024.
    pub frame_length_960: bool,
}

fn read_object_type(r: &mut BitReader<'_>) -> Result<u8, CodecError> {
    let aot = r.u8(5)?;
    Ok(if aot == 31 { 32 + r.u8(6)? } else { aot })
}

fn read_frequency(r: &mut BitReader<'_>) -> Result<(Option<u8>, u32), CodecError> {
    let index = r.u8(4)?;
    if index == 0x0f {
        let rate = r.u32(24)?;
        if rate == 0 {
            return Err(CodecError::invalid(ASC, "explicit sampling frequency 0"));
        }
        return Ok((None, rate));
    }
    let rate = *SAMPLE_RATES.get(usize::from(index)).ok_or_else(|| {
        CodecError::invalid(ASC, format!("reserved sampling frequency index {index}"))
    })?;
    Ok((Some(index), rate))
}

/// Object types whose config is a GASpecificConfig (14496-3 1.6.2.1).
fn has_ga_specific_config(aot: u8) -> bool {
    matches!(aot, 1 | 2 | 3 | 4 | 6 | 7 | 17 | 19 | 20 | 21 | 22 | 23)
}

impl AudioSpecificConfig {
    pub fn parse(data: &[u8]) -> Result<Self, CodecError> {
        let mut r = BitReader::new(data, ASC);
        let mut object_type = read_object_type(&mut r)?;
        let (sampling_frequency_index, sample_rate) = read_frequency(&mut r)?;
        let channel_configuration = r.u8(4)?;
        let (mut sbr, mut ps, mut extension_sample_rate) = (false, false, None);
        if object_type == AOT_SBR || object_type == AOT_PS {
            // Explicit hierarchical signalling: the first AOT names the extension; the
            // rate read above is the core's, the extension (SBR output) rate follows.
            sbr = true;
            ps = object_type == AOT_PS;
            extension_sample_rate = Some(read_frequency(&mut r)?.1);
            object_type = read_object_type(&mut r)?;
            if object_type == 22 {
                r.skip(4)?; // extensionChannelConfiguration
            }
        }
        if object_type == 0 {
            return Err(CodecError::invalid(ASC, "audio object type 0 (null)"));
        }
        let mut frame_length_960 = false;
        if has_ga_specific_config(object_type) {
            frame_length_960 = r.flag()?;
            if r.flag()? {
                r.skip(14)?; // coreCoderDelay
            }
            let extension_flag = r.flag()?;
            if channel_configuration != 0 && !extension_flag && !sbr {
                // Backward-compatible SBR/PS signalling (1.6.5.2): a sync extension
                // after the core config.
                if r.bits_left() >= 16 && r.u32(11)? == 0x2b7 {
                    let ext_aot = read_object_type(&mut r)?;
                    if ext_aot == AOT_SBR && r.flag()? {
                        sbr = true;
                        extension_sample_rate = Some(read_frequency(&mut r)?.1);
                        if r.bits_left() >= 12 && r.u32(11)? == 0x548 {
                            ps = r.flag()?;
                        }
                    }
                }
            }
        }
        Ok(AudioSpecificConfig {
            object_type,
            sampling_frequency_index,
            sample_rate,
            channel_configuration,
            sbr,
            ps,
            extension_sample_rate,
            frame_length_960,
        })
    }

    /// Writes a config with the same meaning: hierarchical SBR/PS signalling when
    /// present, a GASpecificConfig without core coder delay or extension.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        let mut w = BitWriter::default();
        let write_aot = |w: &mut BitWriter, aot: u8| {
            if aot >= 32 {
                w.put(31, 5);
                w.put(u32::from(aot - 32), 6);
            } else {
                w.put(u32::from(aot), 5);
            }
        };
        let write_freq =
            |w: &mut BitWriter, rate: u32| match SAMPLE_RATES.iter().position(|&r| r == rate) {
                Some(i) => w.put(i as u32, 4),
                None => {
                    w.put(0x0f, 4);
                    w.put(rate, 24);
                }
            };
        if self.sbr {
            write_aot(&mut w, if self.ps { AOT_PS } else { AOT_SBR });
            write_freq(&mut w, self.sample_rate);
            w.put(u32::from(self.channel_configuration), 4);
            write_freq(
                &mut w,
                self.extension_sample_rate.unwrap_or(self.sample_rate * 2),
            );
            write_aot(&mut w, self.object_type);
        } else {
            write_aot(&mut w, self.object_type);
            write_freq(&mut w, self.sample_rate);
            w.put(u32::from(self.channel_configuration), 4);
        }
        if !has_ga_specific_config(self.object_type) {
            return Err(CodecError::unsupported(
                ASC,
                format!("writing object type {}", self.object_type),
            ));
        }
        w.put(u32::from(self.frame_length_960), 1);
        w.put(0, 2); // dependsOnCoreCoder, extensionFlag
        Ok(w.finish())
    }

    /// PCM samples per AAC frame at the core rate.
    pub fn samples_per_frame(&self) -> u32 {
        if self.frame_length_960 {
            960
        } else {
            1024
        }
    }

    pub fn channels(&self) -> Option<u8> {
        match self.channel_configuration {
            1..=6 => Some(self.channel_configuration),
            7 => Some(8),
            _ => None,
        }
    }

    /// RFC 6381 codec string as HLS clients expect: `mp4a.40.2` (LC), `mp4a.40.5`
    /// (HE-AAC, SBR), `mp4a.40.29` (HE-AACv2, PS).
    pub fn codec_string(&self) -> String {
        let aot = if self.ps {
            AOT_PS
        } else if self.sbr {
            AOT_SBR
        } else {
            self.object_type
        };
        format!("mp4a.40.{aot}")
    }

    /// The 7-byte ADTS header (no CRC) for a raw AAC frame of `raw_len` bytes.
    pub fn adts_header(&self, raw_len: usize) -> Result<[u8; 7], CodecError> {
        const WHAT: &str = "ADTS header";
        if !(1..=4).contains(&self.object_type) {
            return Err(CodecError::unsupported(
                WHAT,
                format!("audio object type {} has no ADTS profile", self.object_type),
            ));
        }
        let Some(freq) = self.sampling_frequency_index else {
            return Err(CodecError::unsupported(
                WHAT,
                format!("explicit sampling rate {} Hz", self.sample_rate),
            ));
        };
        if !(1..=7).contains(&self.channel_configuration) {
            return Err(CodecError::unsupported(
                WHAT,
                "channel configuration 0 (program config element)",
            ));
        }
        let len = raw_len + 7;
        if len > 0x1fff {
            return Err(CodecError::invalid(
                WHAT,
                format!("AAC frame of {raw_len} bytes exceeds the 8191-byte ADTS frame"),
            ));
        }
        let profile = self.object_type - 1;
        let ch = self.channel_configuration;
        Ok([
            0xff,
            0xf1, // sync, MPEG-4, layer 0, protection absent
            profile << 6 | freq << 2 | ch >> 2,
            (ch & 3) << 6 | (len >> 11) as u8,
            (len >> 3) as u8,
            ((len & 7) as u8) << 5 | 0x1f, // buffer fullness 0x7ff: variable rate
            0xfc,                          // rest of fullness, one raw data block
        ])
    }
}

/// Minimal MSB-first bit writer for [`AudioSpecificConfig::to_bytes`].
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    used: u32,
}

impl BitWriter {
    fn put(&mut self, value: u32, bits: u32) {
        for i in (0..bits).rev() {
            if self.used % 8 == 0 {
                self.out.push(0);
            }
            let bit = ((value >> i) & 1) as u8;
            let last = self.out.last_mut().expect("a byte was pushed above");
            *last |= bit << (7 - self.used % 8);
            self.used += 1;
        }
    }

    fn finish(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_48k_stereo() {
        let asc = AudioSpecificConfig::parse(&[0x11, 0x90]).unwrap();
        assert_eq!(asc.object_type, 2);
        assert_eq!(asc.sample_rate, 48000);
        assert_eq!(asc.channels(), Some(2));
        assert_eq!(asc.codec_string(), "mp4a.40.2");
        assert_eq!(asc.samples_per_frame(), 1024);
        assert_eq!(asc.to_bytes().unwrap(), vec![0x11, 0x90]);
    }

    #[test]
    fn explicit_hierarchical_he_aac() {
        // AOT 5, core 48 kHz (index 3), stereo, SBR rate index 3, core AOT 2, then the
        // GASpecificConfig: 00101 0011 0010 0011 00010 000 → 0x29 0x91 0x88 0x00
        let asc = AudioSpecificConfig::parse(&[0x29, 0x91, 0x88, 0x00]).unwrap();
        assert!(asc.sbr);
        assert!(!asc.ps);
        assert_eq!(asc.object_type, 2);
        assert_eq!(asc.codec_string(), "mp4a.40.5");
        assert_eq!(
            AudioSpecificConfig::parse(&asc.to_bytes().unwrap()).unwrap(),
            asc
        );
    }

    #[test]
    fn backward_compatible_sbr_and_ps() {
        // LC 24 kHz stereo, then sync 0x2b7, AOT 5, sbr 1, 48 kHz, sync 0x548, ps 1.
        let mut w = BitWriter::default();
        w.put(2, 5);
        w.put(6, 4);
        w.put(2, 4);
        w.put(0, 3);
        w.put(0x2b7, 11);
        w.put(5, 5);
        w.put(1, 1);
        w.put(3, 4);
        w.put(0x548, 11);
        w.put(1, 1);
        let asc = AudioSpecificConfig::parse(&w.finish()).unwrap();
        assert_eq!(asc.sample_rate, 24000);
        assert_eq!(asc.extension_sample_rate, Some(48000));
        assert!(asc.sbr && asc.ps);
        assert_eq!(asc.codec_string(), "mp4a.40.29");
    }

    #[test]
    fn adts_header_fields() {
        let asc = AudioSpecificConfig::parse(&[0x12, 0x10]).unwrap(); // LC 44.1k stereo
        let h = asc.adts_header(100).unwrap();
        assert_eq!(h[0], 0xff);
        assert_eq!(h[1] & 0xf6, 0xf0);
        assert_eq!(h[2] >> 6, 1, "profile = LC - 1");
        assert_eq!((h[2] >> 2) & 0x0f, 4, "44.1 kHz index");
        let ch = (h[2] & 1) << 2 | h[3] >> 6;
        assert_eq!(ch, 2);
        let len = (usize::from(h[3] & 3) << 11) | usize::from(h[4]) << 3 | usize::from(h[5] >> 5);
        assert_eq!(len, 107);
        assert!(asc.adts_header(8185).is_err());
    }

    #[test]
    fn malformed_configs_are_errors() {
        assert!(AudioSpecificConfig::parse(&[]).is_err());
        assert!(AudioSpecificConfig::parse(&[0x11]).is_err());
        assert!(
            AudioSpecificConfig::parse(&[0x16, 0x90]).is_err(),
            "reserved rate index 13"
        );
        assert!(
            AudioSpecificConfig::parse(&[0x07, 0x90]).is_err(),
            "object type 0"
        );
        let pce = AudioSpecificConfig::parse(&[0x11, 0x80]).unwrap();
        assert_eq!(pce.channels(), None);
        assert!(pce.adts_header(10).is_err());
    }
}
