//! A big-endian bit reader with Exp-Golomb codes (H.264/H.265 `ue(v)`/`se(v)`), AV1
//! `leb128`, and the RBSP unescaping that parameter sets need first.
//!
//! Every read is bounds-checked and returns [`CodecError::Truncated`] past the end; nothing
//! here allocates more than the input it is given.

use super::CodecError;

/// Reads bits MSB-first from a byte slice.
pub struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
    /// Names the structure being read, for error messages.
    what: &'static str,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        BitReader { data, pos: 0, what }
    }

    fn truncated(&self) -> CodecError {
        CodecError::Truncated { what: self.what }
    }

    pub fn bits_left(&self) -> usize {
        (self.data.len() * 8).saturating_sub(self.pos)
    }

    pub fn bit(&mut self) -> Result<bool, CodecError> {
        let byte = *self
            .data
            .get(self.pos / 8)
            .ok_or_else(|| self.truncated())?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    pub fn flag(&mut self) -> Result<bool, CodecError> {
        self.bit()
    }

    /// Reads `n` bits (at most 64) as an unsigned number.
    pub fn bits(&mut self, n: u32) -> Result<u64, CodecError> {
        debug_assert!(
            n <= 64,
            "callers read fixed-width fields of at most 64 bits"
        );
        if n as usize > self.bits_left() {
            return Err(self.truncated());
        }
        let mut value = 0u64;
        for _ in 0..n {
            value = (value << 1) | u64::from(self.bit()?);
        }
        Ok(value)
    }

    pub fn u8(&mut self, n: u32) -> Result<u8, CodecError> {
        debug_assert!(n <= 8);
        Ok(self.bits(n)? as u8)
    }

    pub fn u32(&mut self, n: u32) -> Result<u32, CodecError> {
        debug_assert!(n <= 32);
        Ok(self.bits(n)? as u32)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), CodecError> {
        if n > self.bits_left() {
            return Err(self.truncated());
        }
        self.pos += n;
        Ok(())
    }

    /// `ue(v)`: unsigned Exp-Golomb. Codes longer than 32 bits are invalid in every
    /// syntax element we read, so they are rejected rather than overflowing.
    pub fn ue(&mut self) -> Result<u32, CodecError> {
        let mut zeros = 0u32;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return Err(CodecError::Invalid {
                    what: self.what,
                    detail: "Exp-Golomb code longer than 32 bits".into(),
                });
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + rest) as u32)
    }

    /// `se(v)`: signed Exp-Golomb.
    pub fn se(&mut self) -> Result<i32, CodecError> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        Ok(v as i32)
    }

    /// AV1 `leb128()`: at most 8 bytes, value below 2^32 (AV1 spec 4.10.5).
    pub fn leb128(&mut self) -> Result<u64, CodecError> {
        let mut value = 0u64;
        for i in 0..8 {
            let byte = self.bits(8)?;
            value |= (byte & 0x7f) << (i * 7);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::Invalid {
            what: self.what,
            detail: "leb128 longer than 8 bytes".into(),
        })
    }

    /// AV1 `uvlc()` (spec 4.10.3).
    pub fn uvlc(&mut self) -> Result<u32, CodecError> {
        let mut zeros = 0u32;
        while !self.bit()? {
            zeros += 1;
            if zeros >= 32 {
                return Ok(u32::MAX);
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + rest) as u32)
    }
}

/// A byte cursor for byte-aligned records (configuration records, descriptors).
pub struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> ByteReader<'a> {
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        ByteReader { data, pos: 0, what }
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }

    /// The next `n` bytes; fails without consuming anything if fewer remain.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.remaining() {
            return Err(CodecError::Truncated { what: self.what });
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, CodecError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Reads a `leb128` from the front of `data`: (value, bytes used).
pub fn leb128(data: &[u8], what: &'static str) -> Result<(u64, usize), CodecError> {
    let mut r = BitReader::new(data, what);
    let v = r.leb128()?;
    Ok((v, r.pos / 8))
}

/// NAL unit payload → RBSP: drops the emulation-prevention byte of every `00 00 03`.
/// The output is never longer than the input.
pub fn unescape_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0usize;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_codes() {
        // 1 | 010 | 011 | 00100 | 00101 → ue 0, 1, 2, 3, 4
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data, "test");
        assert_eq!(r.ue().unwrap(), 0);
        assert_eq!(r.ue().unwrap(), 1);
        assert_eq!(r.ue().unwrap(), 2);
        assert_eq!(r.ue().unwrap(), 3);
        assert_eq!(r.ue().unwrap(), 4);
        let data = [0b0100_1100, 0b1000_0000];
        let mut r = BitReader::new(&data, "test");
        assert_eq!(r.se().unwrap(), 1); // 010 → k=1
        assert_eq!(r.se().unwrap(), -1); // 011 → k=2
        assert_eq!(r.se().unwrap(), 2); // 00100 → k=3
    }

    #[test]
    fn reads_past_the_end_are_errors() {
        let mut r = BitReader::new(&[0xff], "test");
        assert_eq!(r.bits(8).unwrap(), 0xff);
        assert!(matches!(
            r.bit(),
            Err(CodecError::Truncated { what: "test" })
        ));
        let mut r = BitReader::new(&[0, 0, 0, 0, 0], "test");
        assert!(r.ue().is_err());
        let mut r = BitReader::new(&[0, 0], "test");
        assert!(r.ue().is_err());
    }

    #[test]
    fn leb128_values() {
        assert_eq!(leb128(&[0x05], "t").unwrap(), (5, 1));
        assert_eq!(leb128(&[0x80 | 0x10, 0x01], "t").unwrap(), (0x90, 2));
        assert!(leb128(&[0x80; 9], "t").is_err());
        assert!(leb128(&[0x80], "t").is_err());
    }

    #[test]
    fn emulation_prevention_is_removed() {
        assert_eq!(
            unescape_rbsp(&[0, 0, 3, 1, 0, 0, 3, 0, 3]),
            vec![0, 0, 1, 0, 0, 0, 3]
        );
        assert_eq!(unescape_rbsp(&[1, 3, 0, 3]), vec![1, 3, 0, 3]);
    }
}
