//! PES packet headers (ISO/IEC 13818-1 2.4.3.6) with 33-bit PTS/DTS at 90 kHz, and the
//! splitting of a PES into 188-byte TS packets with adaptation fields for PCR, the random
//! access indicator and stuffing.

use crate::mux::MuxError;

use super::{PACKET_SIZE, SYNC_BYTE};

pub const STREAM_ID_VIDEO: u8 = 0xe0;
pub const STREAM_ID_AUDIO: u8 = 0xc0;

/// 33-bit timestamps wrap every 2^33 ticks (~26.5 hours at 90 kHz).
pub const TIMESTAMP_MASK: u64 = (1 << 33) - 1;

fn put_timestamp(out: &mut Vec<u8>, prefix: u8, ts: u64) {
    let ts = ts & TIMESTAMP_MASK;
    out.push(prefix << 4 | ((ts >> 29) as u8 & 0x0e) | 1);
    out.extend_from_slice(&((((ts >> 15) & 0x7fff) << 1 | 1) as u16).to_be_bytes());
    out.extend_from_slice(&((((ts) & 0x7fff) << 1 | 1) as u16).to_be_bytes());
}

fn read_timestamp(b: &[u8]) -> u64 {
    (u64::from(b[0] >> 1) & 0x07) << 30
        | u64::from(u16::from_be_bytes([b[1], b[2]]) >> 1) << 15
        | u64::from(u16::from_be_bytes([b[3], b[4]]) >> 1)
}

/// Appends a PES header for `payload_len` bytes of payload. DTS is written only when it
/// differs from PTS. `PES_packet_length` is 0 (unbounded, allowed for video only) when
/// the packet would exceed 65535 bytes.
pub fn write_pes_header(
    out: &mut Vec<u8>,
    stream_id: u8,
    pts: u64,
    dts: Option<u64>,
    payload_len: usize,
) {
    let dts = dts.filter(|&d| d & TIMESTAMP_MASK != pts & TIMESTAMP_MASK);
    let header_data_len = if dts.is_some() { 10 } else { 5 };
    let packet_len = 3 + header_data_len + payload_len;
    out.extend_from_slice(&[0, 0, 1, stream_id]);
    out.extend_from_slice(&u16::try_from(packet_len).unwrap_or(0).to_be_bytes());
    out.push(0x84); // '10', not scrambled, data_alignment_indicator
    out.push(if dts.is_some() { 0xc0 } else { 0x80 });
    out.push(header_data_len as u8);
    match dts {
        Some(dts) => {
            put_timestamp(out, 0b0011, pts);
            put_timestamp(out, 0b0001, dts);
        }
        None => put_timestamp(out, 0b0010, pts),
    }
}

/// A parsed PES header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PesHeader {
    pub stream_id: u8,
    pub packet_length: u16,
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    /// Bytes before the payload.
    pub header_len: usize,
}

pub fn parse_pes_header(pes: &[u8]) -> Result<PesHeader, MuxError> {
    let bad = |detail: &str| MuxError::Malformed {
        what: "PES header",
        detail: detail.into(),
    };
    if pes.len() < 9 || pes[..3] != [0, 0, 1] {
        return Err(bad("missing start code prefix"));
    }
    let header_len = 9 + usize::from(pes[8]);
    if pes.len() < header_len {
        return Err(bad("header_data_length past the packet"));
    }
    let flags = pes[7] >> 6;
    let (mut pts, mut dts) = (None, None);
    if flags & 2 != 0 {
        if header_len < 14 {
            return Err(bad("PTS flag without room for a PTS"));
        }
        pts = Some(read_timestamp(&pes[9..14]));
    }
    if flags == 3 {
        if header_len < 19 {
            return Err(bad("DTS flag without room for a DTS"));
        }
        dts = Some(read_timestamp(&pes[14..19]));
    }
    Ok(PesHeader {
        stream_id: pes[3],
        packet_length: u16::from_be_bytes([pes[4], pes[5]]),
        pts,
        dts,
        header_len,
    })
}

/// Writes a 42-bit PCR field (27 MHz = base * 300 + extension; we use extension 0).
fn put_pcr(out: &mut [u8], pcr_base: u64) {
    let b = pcr_base & TIMESTAMP_MASK;
    out[0] = (b >> 25) as u8;
    out[1] = (b >> 17) as u8;
    out[2] = (b >> 9) as u8;
    out[3] = (b >> 1) as u8;
    out[4] = ((b & 1) as u8) << 7 | 0x7e;
    out[5] = 0;
}

pub fn read_pcr_base(b: &[u8]) -> u64 {
    u64::from(b[0]) << 25
        | u64::from(b[1]) << 17
        | u64::from(b[2]) << 9
        | u64::from(b[3]) << 1
        | u64::from(b[4] >> 7)
}

/// Splits one PES into TS packets on `pid`, appending them to `out`. The first packet
/// carries the PCR and random access indicator when given; the last is padded with
/// adaptation-field stuffing. `cc` is the PID's continuity counter, advanced per packet.
pub fn packetize(
    out: &mut Vec<u8>,
    pid: u16,
    cc: &mut u8,
    pes: &[u8],
    pcr_base: Option<u64>,
    random_access: bool,
) {
    let mut rest = pes;
    let mut first = true;
    while !rest.is_empty() {
        // Adaptation field content after its length byte: flags (+ PCR).
        let mut fields = [0u8; 7];
        let mut fields_len = 0;
        if first && (pcr_base.is_some() || random_access) {
            fields[0] = if random_access { 0x40 } else { 0 };
            fields_len = 1;
            if let Some(pcr) = pcr_base {
                fields[0] |= 0x10;
                put_pcr(&mut fields[1..7], pcr);
                fields_len = 7;
            }
        }
        let af_len = if fields_len > 0 { 1 + fields_len } else { 0 };
        let take = rest.len().min(PACKET_SIZE - 4 - af_len);
        // Stuffing grows the adaptation field until header + field + payload is 188.
        let af_total = PACKET_SIZE - 4 - take;
        let start = out.len();
        out.push(SYNC_BYTE);
        out.push(if first { 0x40 } else { 0 } | (pid >> 8) as u8 & 0x1f);
        out.push(pid as u8);
        out.push(if af_total > 0 { 0x30 } else { 0x10 } | *cc);
        *cc = (*cc + 1) & 0x0f;
        if af_total > 0 {
            out.push((af_total - 1) as u8);
            if af_total > 1 {
                if fields_len > 0 {
                    out.extend_from_slice(&fields[..fields_len]);
                } else {
                    out.push(0); // flags
                }
                out.resize(start + 4 + af_total, 0xff);
            }
        }
        out.extend_from_slice(&rest[..take]);
        debug_assert_eq!(out.len() - start, PACKET_SIZE);
        rest = &rest[take..];
        first = false;
    }
}

/// A packet with only an adaptation field carrying a PCR. Such packets carry no payload,
/// so the continuity counter repeats the PID's last value (13818-1 2.4.3.3).
pub fn pcr_only_packet(out: &mut Vec<u8>, pid: u16, cc: u8, pcr_base: u64) {
    let start = out.len();
    out.extend_from_slice(&[
        SYNC_BYTE,
        (pid >> 8) as u8 & 0x1f,
        pid as u8,
        0x20 | ((cc + 15) & 0x0f),
    ]);
    out.push(183);
    out.push(0x10);
    let mut pcr = [0u8; 6];
    put_pcr(&mut pcr, pcr_base);
    out.extend_from_slice(&pcr);
    out.resize(start + PACKET_SIZE, 0xff);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pes_header_round_trips() {
        let mut out = Vec::new();
        write_pes_header(
            &mut out,
            STREAM_ID_VIDEO,
            126_000 + 6000,
            Some(126_000),
            100,
        );
        let h = parse_pes_header(&out).unwrap();
        assert_eq!(
            (h.stream_id, h.pts, h.dts, h.header_len),
            (0xe0, Some(132_000), Some(126_000), 19)
        );
        assert_eq!(h.packet_length, 3 + 10 + 100);
        let mut out = Vec::new();
        write_pes_header(&mut out, STREAM_ID_AUDIO, (1 << 33) + 5, Some(5), 70_000);
        let h = parse_pes_header(&out).unwrap();
        assert_eq!(
            (h.pts, h.dts, h.packet_length),
            (Some(5), None, 0),
            "wrapped, DTS equal, unbounded"
        );
    }

    #[test]
    fn packetize_sizes_and_stuffing() {
        for len in [1usize, 2, 170, 176, 177, 178, 182, 183, 184, 185, 400] {
            let pes = vec![0xabu8; len];
            let mut out = Vec::new();
            let mut cc = 14;
            packetize(&mut out, 0x100, &mut cc, &pes, Some(90_000), true);
            assert_eq!(out.len() % PACKET_SIZE, 0, "len {len}");
            let packets = out.len() / PACKET_SIZE;
            assert_eq!(cc, ((14 + packets) % 16) as u8);
            // Reassemble payloads.
            let mut payload = Vec::new();
            for p in out.chunks(PACKET_SIZE) {
                let mut at = 4;
                if p[3] & 0x20 != 0 {
                    at += 1 + usize::from(p[4]);
                }
                payload.extend_from_slice(&p[at..]);
            }
            assert_eq!(payload, pes, "len {len}");
            assert_eq!(read_pcr_base(&out[6..]), 90_000);
            assert_eq!(out[5] & 0x50, 0x50, "RAI and PCR flags");
        }
    }

    #[test]
    fn pcr_only_packet_layout() {
        let mut out = Vec::new();
        pcr_only_packet(&mut out, 0x100, 0, 12345);
        assert_eq!(out.len(), PACKET_SIZE);
        assert_eq!(
            out[3], 0x2f,
            "adaptation only, CC repeats the last value (15)"
        );
        assert_eq!(read_pcr_base(&out[6..]), 12345);
    }
}
