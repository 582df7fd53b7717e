//! Program-specific information: the PAT and PMT sections (ISO/IEC 13818-1 2.4.4), their
//! CRC-32/MPEG-2, and carrying one section in one TS packet.
//!
//! We write exactly one program with at most two elementary streams, so every section
//! fits one packet; the reader accepts only such single-packet sections too.

use crate::mux::MuxError;

use super::{PACKET_SIZE, SYNC_BYTE};

pub const TABLE_PAT: u8 = 0x00;
pub const TABLE_PMT: u8 = 0x02;

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32/MPEG-2: polynomial 0x04C11DB7, initial 0xFFFFFFFF, no reflection, no final
/// XOR (13818-1 annex A). A section including its CRC has a CRC of 0.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    data.iter().fold(0xffff_ffff, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[((crc >> 24) as u8 ^ b) as usize]
    })
}

/// Writes a long-form section: header with `section_length`, `body`, CRC.
fn section(table_id: u8, id: u16, version: u8, body: &[u8]) -> Vec<u8> {
    let section_length = 5 + body.len() + 4;
    let mut s = Vec::with_capacity(3 + section_length);
    s.push(table_id);
    // section_syntax_indicator 1, '0', reserved '11'
    s.extend_from_slice(&(0xb000 | section_length as u16).to_be_bytes());
    s.extend_from_slice(&id.to_be_bytes());
    s.push(0xc1 | (version & 0x1f) << 1); // reserved, version, current_next_indicator
    s.push(0); // section_number
    s.push(0); // last_section_number
    s.extend_from_slice(body);
    let crc = crc32_mpeg2(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

/// A PAT with one program.
pub fn pat_section(transport_stream_id: u16, program_number: u16, pmt_pid: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(4);
    body.extend_from_slice(&program_number.to_be_bytes());
    body.extend_from_slice(&(0xe000 | pmt_pid).to_be_bytes());
    section(TABLE_PAT, transport_stream_id, 0, &body)
}

/// One elementary stream of a PMT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmtStream {
    pub stream_type: u8,
    pub pid: u16,
}

/// A PMT for one program without descriptors.
pub fn pmt_section(
    program_number: u16,
    version: u8,
    pcr_pid: u16,
    streams: &[PmtStream],
) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + 5 * streams.len());
    body.extend_from_slice(&(0xe000 | pcr_pid).to_be_bytes());
    body.extend_from_slice(&0xf000u16.to_be_bytes()); // program_info_length 0
    for s in streams {
        body.push(s.stream_type);
        body.extend_from_slice(&(0xe000 | s.pid).to_be_bytes());
        body.extend_from_slice(&0xf000u16.to_be_bytes()); // ES_info_length 0
    }
    section(TABLE_PMT, program_number, version, &body)
}

/// One TS packet carrying `section` from its start (pointer_field 0), 0xFF-filled.
pub fn section_packet(pid: u16, cc: u8, section: &[u8]) -> [u8; PACKET_SIZE] {
    let mut p = [0xffu8; PACKET_SIZE];
    p[0] = SYNC_BYTE;
    p[1] = 0x40 | (pid >> 8) as u8; // payload_unit_start_indicator
    p[2] = pid as u8;
    p[3] = 0x10 | (cc & 0x0f);
    p[4] = 0; // pointer_field
              // Our sections are at most 12 + 5 * 2 + 4 bytes; nothing else is written here.
    assert!(
        section.len() <= PACKET_SIZE - 5,
        "a PSI section of ours fits one packet"
    );
    p[5..5 + section.len()].copy_from_slice(section);
    p
}

fn malformed(detail: impl Into<String>) -> MuxError {
    MuxError::Malformed {
        what: "PSI section",
        detail: detail.into(),
    }
}

/// Checks a section's framing and CRC; returns (table_id, table_id_extension, version,
/// body between the 8-byte header and the CRC).
pub fn parse_section(payload: &[u8]) -> Result<(u8, u16, u8, &[u8]), MuxError> {
    let pointer = usize::from(*payload.first().ok_or_else(|| malformed("empty payload"))?);
    let s = payload
        .get(1 + pointer..)
        .ok_or_else(|| malformed("pointer_field past the packet"))?;
    if s.len() < 3 {
        return Err(malformed("section header truncated"));
    }
    let len = usize::from(u16::from_be_bytes([s[1], s[2]]) & 0x0fff);
    if len < 9 || 3 + len > s.len() {
        return Err(malformed(format!(
            "section_length {len} does not fit a single packet"
        )));
    }
    let s = &s[..3 + len];
    if crc32_mpeg2(s) != 0 {
        return Err(malformed(format!("CRC mismatch in table {:#04x}", s[0])));
    }
    Ok((
        s[0],
        u16::from_be_bytes([s[3], s[4]]),
        (s[5] >> 1) & 0x1f,
        &s[8..s.len() - 4],
    ))
}

/// PAT body → (program_number, PMT PID) pairs.
pub fn parse_pat(body: &[u8]) -> Vec<(u16, u16)> {
    body.chunks_exact(4)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u16::from_be_bytes([c[2], c[3]]) & 0x1fff,
            )
        })
        .collect()
}

/// PMT body → (PCR PID, streams).
pub fn parse_pmt(body: &[u8]) -> Result<(u16, Vec<PmtStream>), MuxError> {
    if body.len() < 4 {
        return Err(malformed("PMT truncated"));
    }
    let pcr_pid = u16::from_be_bytes([body[0], body[1]]) & 0x1fff;
    let info_len = usize::from(u16::from_be_bytes([body[2], body[3]]) & 0x0fff);
    let mut rest = body
        .get(4 + info_len..)
        .ok_or_else(|| malformed("program_info_length past the section"))?;
    let mut streams = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 5 {
            return Err(malformed("PMT stream entry truncated"));
        }
        let es_len = usize::from(u16::from_be_bytes([rest[3], rest[4]]) & 0x0fff);
        streams.push(PmtStream {
            stream_type: rest[0],
            pid: u16::from_be_bytes([rest[1], rest[2]]) & 0x1fff,
        });
        rest = rest
            .get(5 + es_len..)
            .ok_or_else(|| malformed("ES_info_length past the section"))?;
    }
    Ok((pcr_pid, streams))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_value() {
        // The CRC-32/MPEG-2 catalogue check value.
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_e6e7);
    }

    #[test]
    fn pat_matches_ffmpeg() {
        // ffmpeg's mpegts muxer: tsid 1, program 1, PMT PID 0x1000.
        let pat = pat_section(1, 1, 0x1000);
        assert_eq!(
            pat,
            [
                0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00, 0x2a, 0xb1,
                0x04, 0xb2
            ]
        );
    }

    #[test]
    fn pmt_round_trips_through_a_packet() {
        let streams = [
            PmtStream {
                stream_type: 0x1b,
                pid: 0x100,
            },
            PmtStream {
                stream_type: 0x0f,
                pid: 0x101,
            },
        ];
        let pkt = section_packet(0x1000, 3, &pmt_section(1, 2, 0x100, &streams));
        assert_eq!(pkt[0], SYNC_BYTE);
        let (table, program, version, body) = parse_section(&pkt[4..]).unwrap();
        assert_eq!((table, program, version), (TABLE_PMT, 1, 2));
        assert_eq!(parse_pmt(body).unwrap(), (0x100, streams.to_vec()));
        let mut bad = pkt;
        bad[10] ^= 1;
        assert!(parse_section(&bad[4..]).is_err());
    }
}
