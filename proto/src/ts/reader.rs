//! A TS demuxer for tests and fuzzing: packets → PIDs, PAT/PMT, PCR values with packet
//! positions, PES packets with PTS/DTS and payload, and continuity counter errors.
//!
//! It reads a whole buffer of 188-byte packets (no resync after lost sync) and assumes
//! single-packet PSI sections, as our muxer and ffmpeg write them.

use std::collections::HashMap;

use crate::mux::MuxError;

use super::pes::{parse_pes_header, read_pcr_base};
use super::psi::{self, PmtStream, TABLE_PAT, TABLE_PMT};
use super::{PACKET_SIZE, SYNC_BYTE};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcr {
    /// Index of the packet carrying it.
    pub packet: usize,
    pub pid: u16,
    /// The 33-bit 90 kHz base (we ignore the 27 MHz extension).
    pub base: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pes {
    /// Index of the packet where it starts.
    pub packet: usize,
    pub pid: u16,
    pub stream_id: u8,
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    /// Random access indicator of its first packet.
    pub random_access: bool,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcError {
    pub packet: usize,
    pub pid: u16,
    pub expected: u8,
    pub found: u8,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TsStream {
    pub packets: usize,
    /// Packet indexes of PAT and PMT sections.
    pub pat_packets: Vec<usize>,
    pub pmt_packets: Vec<usize>,
    pub pmt_pid: Option<u16>,
    pub pcr_pid: Option<u16>,
    pub streams: Vec<PmtStream>,
    pub pmt_version: Option<u8>,
    pub pcrs: Vec<Pcr>,
    pub pes: Vec<Pes>,
    pub cc_errors: Vec<CcError>,
}

impl TsStream {
    /// Largest step between consecutive PCR values, in milliseconds.
    pub fn max_pcr_interval_ms(&self) -> Option<u64> {
        self.pcrs
            .windows(2)
            .map(|w| w[1].base.wrapping_sub(w[0].base) & ((1 << 33) - 1))
            .max()
            .map(|d| d / 90)
    }

    pub fn stream_type(&self, pid: u16) -> Option<u8> {
        self.streams
            .iter()
            .find(|s| s.pid == pid)
            .map(|s| s.stream_type)
    }

    pub fn pes_of(&self, pid: u16) -> impl Iterator<Item = &Pes> {
        self.pes.iter().filter(move |p| p.pid == pid)
    }
}

fn malformed(detail: String) -> MuxError {
    MuxError::Malformed {
        what: "TS packet",
        detail,
    }
}

/// Demuxes a buffer of whole TS packets.
pub fn read(data: &[u8]) -> Result<TsStream, MuxError> {
    if data.len() % PACKET_SIZE != 0 {
        return Err(malformed(format!(
            "{} bytes is not a whole number of 188-byte packets",
            data.len()
        )));
    }
    let mut ts = TsStream::default();
    let mut last_cc: HashMap<u16, u8> = HashMap::new();
    // PES being reassembled per PID: (start packet, random access, bytes).
    let mut open: HashMap<u16, (usize, bool, Vec<u8>)> = HashMap::new();
    for (index, p) in data.chunks_exact(PACKET_SIZE).enumerate() {
        ts.packets += 1;
        if p[0] != SYNC_BYTE {
            return Err(malformed(format!(
                "packet {index} has sync byte {:#04x}",
                p[0]
            )));
        }
        let pusi = p[1] & 0x40 != 0;
        let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
        let afc = (p[3] >> 4) & 3;
        let cc = p[3] & 0x0f;
        let mut at = 4;
        let mut random_access = false;
        let mut discontinuity = false;
        if afc & 2 != 0 {
            let len = usize::from(p[4]);
            if 5 + len > PACKET_SIZE {
                return Err(malformed(format!(
                    "packet {index}: adaptation field of {len} bytes"
                )));
            }
            if len > 0 {
                let flags = p[5];
                discontinuity = flags & 0x80 != 0;
                random_access = flags & 0x40 != 0;
                if flags & 0x10 != 0 {
                    if len < 7 {
                        return Err(malformed(format!(
                            "packet {index}: PCR flag in a {len}-byte field"
                        )));
                    }
                    ts.pcrs.push(Pcr {
                        packet: index,
                        pid,
                        base: read_pcr_base(&p[6..12]),
                    });
                }
            }
            at = 5 + len;
        }
        let has_payload = afc & 1 != 0;
        if has_payload {
            if let Some(prev) = last_cc.insert(pid, cc) {
                let expected = (prev + 1) & 0x0f;
                if cc != expected && !discontinuity && pid != 0x1fff {
                    ts.cc_errors.push(CcError {
                        packet: index,
                        pid,
                        expected,
                        found: cc,
                    });
                }
            }
        }
        if !has_payload || at >= PACKET_SIZE {
            continue;
        }
        let payload = &p[at..];
        if pid == 0 || Some(pid) == ts.pmt_pid {
            if !pusi {
                continue;
            }
            let (table, _, version, body) = psi::parse_section(payload)?;
            match table {
                TABLE_PAT => {
                    ts.pat_packets.push(index);
                    ts.pmt_pid = psi::parse_pat(body)
                        .into_iter()
                        .find(|(program, _)| *program != 0)
                        .map(|(_, pid)| pid);
                }
                TABLE_PMT => {
                    ts.pmt_packets.push(index);
                    let (pcr_pid, streams) = psi::parse_pmt(body)?;
                    ts.pcr_pid = Some(pcr_pid);
                    ts.streams = streams;
                    ts.pmt_version = Some(version);
                }
                _ => {}
            }
            continue;
        }
        if !ts.streams.iter().any(|s| s.pid == pid) {
            continue;
        }
        if pusi {
            if let Some(done) = open.remove(&pid) {
                ts.pes.push(finish_pes(pid, done)?);
            }
            open.insert(pid, (index, random_access, payload.to_vec()));
        } else if let Some((_, _, buf)) = open.get_mut(&pid) {
            buf.extend_from_slice(payload);
        }
    }
    let mut rest: Vec<_> = open.into_iter().collect();
    rest.sort_by_key(|(_, (start, _, _))| *start);
    for (pid, done) in rest {
        ts.pes.push(finish_pes(pid, done)?);
    }
    ts.pes.sort_by_key(|p| p.packet);
    Ok(ts)
}

fn finish_pes(
    pid: u16,
    (packet, random_access, bytes): (usize, bool, Vec<u8>),
) -> Result<Pes, MuxError> {
    let h = parse_pes_header(&bytes)?;
    let mut payload = bytes[h.header_len..].to_vec();
    if h.packet_length != 0 {
        // PES_packet_length counts the bytes after itself, header included
        let Some(want) = (usize::from(h.packet_length) + 6).checked_sub(h.header_len) else {
            return Err(malformed(format!(
                "PES on PID {pid:#x} at packet {packet} declares {} bytes, shorter than its {}-byte header",
                h.packet_length, h.header_len
            )));
        };
        if want > payload.len() {
            return Err(malformed(format!(
                "PES on PID {pid:#x} at packet {packet} declares {want} payload bytes, has {}",
                payload.len()
            )));
        }
        payload.truncate(want);
    }
    Ok(Pes {
        packet,
        pid,
        stream_id: h.stream_id,
        pts: h.pts,
        dts: h.dts,
        random_access,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmp4::testsupport::testdata;
    use crate::ts::muxer::VIDEO_PID;

    /// Found by the `ts_reader` fuzz target: a PES whose PES_packet_length is shorter
    /// than its own header made `packet_length + 6 - header_len` underflow (a panic
    /// with overflow checks). It is a malformed PES now.
    #[test]
    fn pes_length_shorter_than_its_header_is_malformed() {
        let mut ts = std::fs::read(testdata("golden/ts/h264_aac.ts")).unwrap();
        let mut patched = 0;
        for p in ts.chunks_exact_mut(PACKET_SIZE) {
            let pid = u16::from_be_bytes([p[1], p[2]]) & 0x1fff;
            let pusi = p[1] & 0x40 != 0;
            if pid != VIDEO_PID || !pusi {
                continue;
            }
            let at = if p[3] & 0x20 != 0 {
                5 + usize::from(p[4])
            } else {
                4
            };
            assert_eq!(p[at..at + 3], [0, 0, 1], "a PES start code");
            p[at + 4..at + 6].copy_from_slice(&1u16.to_be_bytes());
            patched += 1;
            break;
        }
        assert_eq!(patched, 1);
        let err = read(&ts).unwrap_err();
        assert!(err.to_string().contains("shorter than its"), "{err}");
        // the fuzzer's own input
        let crash = testdata("ts/corpus/ts_reader/crash-pes-length-underflow");
        crate::ts::fuzzing::ts_reader(&std::fs::read(crash).unwrap());
    }
}
