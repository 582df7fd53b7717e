//! ISO BMFF box writing: a box is its 32-bit size, its type, and a body written by a
//! closure; the size is patched in afterwards, so nested boxes need no size arithmetic.

/// A box type (fourcc).
pub type FourCc = [u8; 4];

/// Appends a box of type `fourcc` whose body `body` writes.
pub fn write_box(out: &mut Vec<u8>, fourcc: &FourCc, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(fourcc);
    body(out);
    // Only `mdat` grows with the media; it is written by `write_mdat_header`, so every
    // box built here is far below 4 GiB (the moof of a million samples is ~16 MiB).
    let size = u32::try_from(out.len() - start).expect("non-mdat boxes stay below 4 GiB");
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Appends a FullBox: a box whose body starts with a version byte and 24 bits of flags.
pub fn write_full_box(
    out: &mut Vec<u8>,
    fourcc: &FourCc,
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    write_box(out, fourcc, |out| {
        out.push(version);
        out.extend_from_slice(&flags.to_be_bytes()[1..]);
        body(out);
    });
}

/// Appends the header of an `mdat` holding `payload_len` bytes: the 8-byte form, or the
/// 16-byte `largesize` form when the box would not fit in 32 bits.
pub fn write_mdat_header(out: &mut Vec<u8>, payload_len: usize) {
    let small = payload_len as u64 + 8;
    if let Ok(size) = u32::try_from(small) {
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(b"mdat");
    } else {
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(b"mdat");
        out.extend_from_slice(&(payload_len as u64 + 16).to_be_bytes());
    }
}

pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_zeros(out: &mut Vec<u8>, n: usize) {
    out.resize(out.len() + n, 0);
}

/// The unity transformation matrix of `mvhd`/`tkhd` (16.16 and 2.30 fixed point).
pub fn put_unity_matrix(out: &mut Vec<u8>) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        put_u32(out, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_sizes_are_patched() {
        let mut out = Vec::new();
        write_box(&mut out, b"moov", |out| {
            write_full_box(out, b"mvhd", 1, 0x000102, |out| put_u32(out, 7));
        });
        let mut want = vec![0, 0, 0, 24];
        want.extend_from_slice(b"moov");
        want.extend_from_slice(&[0, 0, 0, 16]);
        want.extend_from_slice(b"mvhd");
        want.extend_from_slice(&[1, 0, 1, 2, 0, 0, 0, 7]);
        assert_eq!(out, want);
    }

    #[test]
    fn mdat_header_forms() {
        let mut out = Vec::new();
        write_mdat_header(&mut out, 10);
        assert_eq!(out, [0, 0, 0, 18, b'm', b'd', b'a', b't']);
        let mut out = Vec::new();
        write_mdat_header(&mut out, u32::MAX as usize);
        assert_eq!(&out[..8], &[0, 0, 0, 1, b'm', b'd', b'a', b't']);
        assert_eq!(
            u64::from_be_bytes(out[8..16].try_into().unwrap()),
            u64::from(u32::MAX) + 16
        );
    }
}
