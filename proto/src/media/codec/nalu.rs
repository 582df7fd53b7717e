//! NAL unit framing: the length-prefixed form of FLV/ISO BMFF (AVCC/HVCC) and the start
//! code form of Annex B (MPEG-TS), and NAL unit type helpers for H.264 and H.265.

use super::CodecError;

/// H.264 NAL unit types we act on (ITU-T H.264 table 7-1).
pub mod avc_type {
    pub const IDR: u8 = 5;
    pub const SEI: u8 = 6;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const AUD: u8 = 9;
}

/// H.265 NAL unit types we act on (ITU-T H.265 table 7-1).
pub mod hevc_type {
    /// IRAP pictures are types 16 (BLA_W_LP) to 23 (reserved IRAP).
    pub const IRAP_FIRST: u8 = 16;
    pub const IRAP_LAST: u8 = 23;
    pub const VPS: u8 = 32;
    pub const SPS: u8 = 33;
    pub const PPS: u8 = 34;
    pub const AUD: u8 = 35;
}

/// The H.264 `nal_unit_type` of a NAL unit (its first byte), `None` if empty.
pub fn avc_nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// The H.265 `nal_unit_type` of a NAL unit (bits 1..7 of its 2-byte header).
pub fn hevc_nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| (b >> 1) & 0x3f)
}

/// Checks a `lengthSizeMinusOne + 1` value: ISO 14496-15 allows 1, 2 and 4.
pub fn check_length_size(len_size: u8) -> Result<u8, CodecError> {
    match len_size {
        1 | 2 | 4 => Ok(len_size),
        n => Err(CodecError::invalid(
            "NAL unit length size",
            format!("{n} bytes (must be 1, 2 or 4)"),
        )),
    }
}

/// Iterates over the NAL units of a length-prefixed access unit. Yields an error once
/// (and then stops) if a length runs past the end of the payload.
pub struct Nalus<'a> {
    rest: &'a [u8],
    len_size: usize,
}

/// NAL units of `payload`, each prefixed by a big-endian length of `len_size` bytes.
pub fn nalus(payload: &[u8], len_size: u8) -> Nalus<'_> {
    Nalus {
        rest: payload,
        len_size: usize::from(len_size),
    }
}

impl<'a> Iterator for Nalus<'a> {
    type Item = Result<&'a [u8], CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let fail = |this: &mut Self, detail: String| {
            this.rest = &[];
            Some(Err(CodecError::Invalid {
                what: "length-prefixed NAL units",
                detail,
            }))
        };
        if self.len_size == 0 || self.len_size > 4 || self.rest.len() < self.len_size {
            let detail = format!(
                "{} trailing bytes cannot hold a length prefix",
                self.rest.len()
            );
            return fail(self, detail);
        }
        let (prefix, body) = self.rest.split_at(self.len_size);
        let len = prefix
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len > body.len() {
            let detail = format!("NAL unit of {len} bytes but only {} remain", body.len());
            return fail(self, detail);
        }
        let (nal, rest) = body.split_at(len);
        self.rest = rest;
        Some(Ok(nal))
    }
}

/// The 4-byte Annex B start code.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Appends the NAL units of a length-prefixed access unit to `out` in Annex B form.
/// On error `out` may hold a prefix of the conversion.
pub fn to_annex_b(payload: &[u8], len_size: u8, out: &mut Vec<u8>) -> Result<(), CodecError> {
    for nal in nalus(payload, len_size) {
        let nal = nal?;
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    }
    Ok(())
}

/// Splits an Annex B byte stream into NAL units (start codes of 3 or 4 bytes removed,
/// trailing zero bytes before the next start code dropped).
pub fn annex_b_nalus(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| s - 3)
        .chain(std::iter::once(stream.len()))
        .collect();
    starts.into_iter().zip(ends).map(move |(s, e)| {
        let mut nal = &stream[s..e];
        while let [head @ .., 0] = nal {
            nal = head;
        }
        nal
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefixed_to_annex_b() {
        let avcc = [0, 0, 0, 2, 0x65, 0xaa, 0, 0, 0, 1, 0x06];
        let got: Vec<&[u8]> = nalus(&avcc, 4).map(|n| n.unwrap()).collect();
        assert_eq!(got, vec![&[0x65, 0xaa][..], &[0x06][..]]);
        let mut out = Vec::new();
        to_annex_b(&avcc, 4, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x65, 0xaa, 0, 0, 0, 1, 0x06]);
        let back: Vec<&[u8]> = annex_b_nalus(&out).collect();
        assert_eq!(back, got);
    }

    #[test]
    fn two_byte_lengths() {
        let data = [0, 1, 9, 0, 2, 1, 2];
        let got: Vec<&[u8]> = nalus(&data, 2).map(|n| n.unwrap()).collect();
        assert_eq!(got, vec![&[9][..], &[1, 2][..]]);
    }

    #[test]
    fn overlong_length_is_an_error_not_a_panic() {
        let data = [0, 0, 0, 9, 0x65];
        let mut it = nalus(&data, 4);
        assert!(matches!(it.next(), Some(Err(CodecError::Invalid { .. }))));
        assert!(it.next().is_none());
        let mut it = nalus(&[0, 0], 4);
        assert!(it.next().unwrap().is_err());
        assert!(check_length_size(3).is_err());
    }

    #[test]
    fn nal_types() {
        assert_eq!(avc_nal_type(&[0x65]), Some(avc_type::IDR));
        assert_eq!(avc_nal_type(&[0x67]), Some(avc_type::SPS));
        assert_eq!(hevc_nal_type(&[0x40, 0x01]), Some(hevc_type::VPS));
        assert_eq!(hevc_nal_type(&[0x26, 0x01]), Some(19)); // IDR_W_RADL
        assert_eq!(hevc_nal_type(&[]), None);
    }
}
