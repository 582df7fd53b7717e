//! The RTMP handshake: C0+C1 → S0+S1+S2 → C2 (spec section 5.2), in its two dialects.
//!
//! - **Simple**: C1/S1 are a time, four zero bytes and 1528 random bytes; each side
//!   echoes the other's 1536 bytes as C2/S2.
//! - **Digest** ("complex", Flash Player 9+): C1 carries a non-zero version and an
//!   HMAC-SHA256 digest, keyed with the "Genuine Adobe Flash Player 001" constant, at an
//!   offset computed from four bytes of C1. Two layouts exist: the digest block in the
//!   second half of C1 ([`DigestScheme::KeyFirst`], "schema 0") or in the first
//!   ([`DigestScheme::DigestFirst`], "schema 1"). The server answers with an S1 digest
//!   in the same layout keyed with the Flash Media Server constant, and an S2 signed with
//!   a key derived from the client's digest. Flash players and some encoders refuse a
//!   server that answers a digest C1 with a plain echo; ffmpeg validates both when
//!   playing.
//!
//! A C1 without a valid digest gets the simple echo. RTMPE (version 6) is not supported.
//! Contents of C2 are not checked: clients fill it inconsistently and nothing depends
//! on it.

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::RtmpError;

/// Length of C1, C2, S1 and S2.
pub const HANDSHAKE_SIZE: usize = 1536;
/// The only version byte (C0/S0) we speak: plain RTMP.
pub const RTMP_VERSION: u8 = 3;

const DIGEST_LEN: usize = 32;

/// "Genuine Adobe Flash Player 001" followed by 32 constant bytes.
const FP_KEY: [u8; 62] = *b"Genuine Adobe Flash Player 001\
\xF0\xEE\xC2\x4A\x80\x68\xBE\xE8\x2E\x00\xD0\xD1\x02\x9E\x7E\x57\x6E\xEC\x5D\x2D\x29\x80\x6F\xAB\x93\xB8\xE6\x36\xCF\xEB\x31\xAE";
/// "Genuine Adobe Flash Media Server 001" followed by the same 32 bytes.
const FMS_KEY: [u8; 68] = *b"Genuine Adobe Flash Media Server 001\
\xF0\xEE\xC2\x4A\x80\x68\xBE\xE8\x2E\x00\xD0\xD1\x02\x9E\x7E\x57\x6E\xEC\x5D\x2D\x29\x80\x6F\xAB\x93\xB8\xE6\x36\xCF\xEB\x31\xAE";
/// C1 digests are keyed with the text part only.
const FP_KEY_TEXT_LEN: usize = 30;
/// S1 digests are keyed with the text part only.
const FMS_KEY_TEXT_LEN: usize = 36;

/// Version we put in S1 when answering a digest handshake (clients such as ffmpeg only
/// check the digest when the major version is 3 or more).
const SERVER_VERSION: u32 = 0x0405_0001;
/// Version our client puts in C1 when it uses the digest handshake.
const CLIENT_VERSION: u32 = 0x0A00_2D02;

/// Where the digest sits in C1/S1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestScheme {
    /// Schema 0: 764-byte key block first, digest block at byte 772; the digest offset is
    /// the sum of bytes 772..776 modulo 728, plus 776.
    KeyFirst,
    /// Schema 1: digest block first at byte 8; offset is the sum of bytes 8..12 modulo
    /// 728, plus 12.
    DigestFirst,
}

impl DigestScheme {
    fn offset(self, c1: &[u8]) -> usize {
        let base = match self {
            DigestScheme::KeyFirst => 772,
            DigestScheme::DigestFirst => 8,
        };
        let sum: usize = c1[base..base + 4].iter().map(|&b| b as usize).sum();
        sum % 728 + base + 4
    }
}

/// Which handshake a connection used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeKind {
    Simple,
    Digest(DigestScheme),
}

/// A small deterministic generator for handshake filler bytes. They need no secrecy
/// (the digest handshake is an interoperability ritual, not security), so a seeded
/// xorshift keeps the core free of an RNG dependency and makes tests reproducible.
#[derive(Clone, Debug)]
pub struct HandshakeRng(u64);

impl HandshakeRng {
    pub fn new(seed: u64) -> Self {
        // xorshift has a fixed point at zero
        HandshakeRng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The digest of a 1536-byte C1/S1 over everything except the 32 digest bytes at `offset`.
fn block_digest(block: &[u8], offset: usize, key: &[u8]) -> [u8; DIGEST_LEN] {
    hmac_sha256(key, &[&block[..offset], &block[offset + DIGEST_LEN..]])
}

/// Finds a valid digest in a 1536-byte C1 or S1 signed with `key`, trying both layouts.
fn find_digest(block: &[u8], key: &[u8]) -> Option<(DigestScheme, [u8; DIGEST_LEN])> {
    [DigestScheme::KeyFirst, DigestScheme::DigestFirst]
        .into_iter()
        .find_map(|scheme| {
            let offset = scheme.offset(block);
            let expected = block_digest(block, offset, key);
            (block[offset..offset + DIGEST_LEN] == expected).then_some((scheme, expected))
        })
}

/// Fills `block` (1536 bytes) with time, version, random filler and a digest in `scheme`.
fn make_digest_block(
    rng: &mut HandshakeRng,
    version: u32,
    scheme: DigestScheme,
    key: &[u8],
) -> ([u8; HANDSHAKE_SIZE], [u8; DIGEST_LEN]) {
    let mut block = [0u8; HANDSHAKE_SIZE];
    rng.fill(&mut block[8..]);
    block[4..8].copy_from_slice(&version.to_be_bytes());
    let offset = scheme.offset(&block);
    let digest = block_digest(&block, offset, key);
    block[offset..offset + DIGEST_LEN].copy_from_slice(&digest);
    (block, digest)
}

/// A 1536-byte C2/S2 proving we saw the peer's digest: random bytes whose last 32 are an
/// HMAC of the rest, keyed with HMAC(`key`, peer digest).
fn make_signed_response(
    rng: &mut HandshakeRng,
    peer_digest: &[u8; DIGEST_LEN],
    key: &[u8],
) -> [u8; HANDSHAKE_SIZE] {
    let mut block = [0u8; HANDSHAKE_SIZE];
    rng.fill(&mut block);
    let sig_key = hmac_sha256(key, &[peer_digest]);
    let sig = hmac_sha256(&sig_key, &[&block[..HANDSHAKE_SIZE - DIGEST_LEN]]);
    block[HANDSHAKE_SIZE - DIGEST_LEN..].copy_from_slice(&sig);
    block
}

fn signed_response_is_valid(block: &[u8], our_digest: &[u8; DIGEST_LEN], key: &[u8]) -> bool {
    let sig_key = hmac_sha256(key, &[our_digest]);
    let sig = hmac_sha256(&sig_key, &[&block[..HANDSHAKE_SIZE - DIGEST_LEN]]);
    block[HANDSHAKE_SIZE - DIGEST_LEN..] == sig
}

/// Checks the C0 version byte as soon as it arrives, so a non-RTMP peer (an HTTP request
/// on the RTMP port, TLS) is refused without waiting for 1537 bytes.
pub fn check_version(c0: u8) -> Result<(), RtmpError> {
    if c0 == RTMP_VERSION {
        Ok(())
    } else {
        Err(RtmpError::BadHandshakeVersion { version: c0 })
    }
}

/// The server's answer to C0+C1 (exactly 1537 bytes): S0+S1+S2, and which handshake
/// the client used.
pub fn server_response(
    c0c1: &[u8],
    rng: &mut HandshakeRng,
) -> Result<(Bytes, HandshakeKind), RtmpError> {
    if c0c1.len() != 1 + HANDSHAKE_SIZE {
        return Err(RtmpError::Handshake {
            detail: "C0+C1 must be exactly 1537 bytes",
        });
    }
    check_version(c0c1[0])?;
    let c1 = &c0c1[1..];
    let mut out = BytesMut::with_capacity(1 + 2 * HANDSHAKE_SIZE);
    out.put_u8(RTMP_VERSION);
    // A zero version in C1 announces the simple handshake; otherwise look for a digest.
    let digest = if c1[4..8] == [0; 4] {
        None
    } else {
        find_digest(c1, &FP_KEY[..FP_KEY_TEXT_LEN])
    };
    let kind = match digest {
        Some((scheme, client_digest)) => {
            let (s1, _) =
                make_digest_block(rng, SERVER_VERSION, scheme, &FMS_KEY[..FMS_KEY_TEXT_LEN]);
            out.put_slice(&s1);
            out.put_slice(&make_signed_response(rng, &client_digest, &FMS_KEY));
            HandshakeKind::Digest(scheme)
        }
        None => {
            let mut s1 = [0u8; HANDSHAKE_SIZE];
            rng.fill(&mut s1[8..]);
            out.put_slice(&s1);
            // S2 echoes C1
            out.put_slice(c1);
            HandshakeKind::Simple
        }
    };
    Ok((out.freeze(), kind))
}

/// The client side of the handshake: builds C0+C1, then answers S0+S1+S2 with C2.
#[derive(Debug)]
pub struct ClientHandshake {
    /// Our C1 digest when we used the digest handshake.
    c1_digest: Option<[u8; DIGEST_LEN]>,
    rng: HandshakeRng,
}

impl ClientHandshake {
    /// Returns the handshake state and C0+C1 to send.
    pub fn start(digest: bool, mut rng: HandshakeRng) -> (Self, Bytes) {
        let mut out = BytesMut::with_capacity(1 + HANDSHAKE_SIZE);
        out.put_u8(RTMP_VERSION);
        let c1_digest = if digest {
            let (c1, d) = make_digest_block(
                &mut rng,
                CLIENT_VERSION,
                DigestScheme::DigestFirst,
                &FP_KEY[..FP_KEY_TEXT_LEN],
            );
            out.put_slice(&c1);
            Some(d)
        } else {
            let mut c1 = [0u8; HANDSHAKE_SIZE];
            rng.fill(&mut c1[8..]);
            out.put_slice(&c1);
            None
        };
        (ClientHandshake { c1_digest, rng }, out.freeze())
    }

    /// Checks S0+S1+S2 (exactly 3073 bytes) and returns C2.
    ///
    /// With the digest handshake, a server that answers with a non-zero S1 version must
    /// send a valid S1 digest and an S2 signed over our digest; a server answering with
    /// a zero version gets the simple echo.
    pub fn finish(&mut self, s0s1s2: &[u8]) -> Result<Bytes, RtmpError> {
        if s0s1s2.len() != 1 + 2 * HANDSHAKE_SIZE {
            return Err(RtmpError::Handshake {
                detail: "S0+S1+S2 must be exactly 3073 bytes",
            });
        }
        check_version(s0s1s2[0])?;
        let s1 = &s0s1s2[1..1 + HANDSHAKE_SIZE];
        let s2 = &s0s1s2[1 + HANDSHAKE_SIZE..];
        match self.c1_digest {
            Some(our_digest) if s1[4..8] != [0; 4] => {
                let (_, server_digest) =
                    find_digest(s1, &FMS_KEY[..FMS_KEY_TEXT_LEN]).ok_or(RtmpError::Handshake {
                        detail: "S1 digest does not validate",
                    })?;
                if !signed_response_is_valid(s2, &our_digest, &FMS_KEY) {
                    return Err(RtmpError::Handshake {
                        detail: "S2 signature does not validate",
                    });
                }
                let c2 = make_signed_response(&mut self.rng, &server_digest, &FP_KEY);
                Ok(Bytes::copy_from_slice(&c2))
            }
            _ => Ok(Bytes::copy_from_slice(s1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_their_published_text() {
        assert_eq!(
            &FP_KEY[..FP_KEY_TEXT_LEN],
            b"Genuine Adobe Flash Player 001"
        );
        assert_eq!(
            &FMS_KEY[..FMS_KEY_TEXT_LEN],
            b"Genuine Adobe Flash Media Server 001"
        );
        assert_eq!(FP_KEY[FP_KEY_TEXT_LEN..], FMS_KEY[FMS_KEY_TEXT_LEN..]);
        assert_eq!(FMS_KEY[FMS_KEY_TEXT_LEN], 0xF0);
        assert_eq!(FMS_KEY[67], 0xAE);
    }

    #[test]
    fn simple_handshake_echoes_c1() {
        let (mut client, c0c1) = ClientHandshake::start(false, HandshakeRng::new(1));
        let (s, kind) = server_response(&c0c1, &mut HandshakeRng::new(2)).unwrap();
        assert_eq!(kind, HandshakeKind::Simple);
        assert_eq!(s[0], RTMP_VERSION);
        assert_eq!(&s[1 + HANDSHAKE_SIZE..], &c0c1[1..]);
        assert_eq!(&s[5..9], &[0; 4], "simple S1 has a zero version");
        let c2 = client.finish(&s).unwrap();
        assert_eq!(&c2[..], &s[1..1 + HANDSHAKE_SIZE]);
    }

    #[test]
    fn digest_handshake_in_both_layouts() {
        for scheme in [DigestScheme::KeyFirst, DigestScheme::DigestFirst] {
            for seed in 0..8 {
                let mut rng = HandshakeRng::new(seed);
                let (c1, c1_digest) =
                    make_digest_block(&mut rng, CLIENT_VERSION, scheme, &FP_KEY[..FP_KEY_TEXT_LEN]);
                let mut c0c1 = vec![RTMP_VERSION];
                c0c1.extend_from_slice(&c1);
                let (s, kind) = server_response(&c0c1, &mut rng).unwrap();
                assert_eq!(kind, HandshakeKind::Digest(scheme));
                let s1 = &s[1..1 + HANDSHAKE_SIZE];
                let s2 = &s[1 + HANDSHAKE_SIZE..];
                // S1 carries a valid FMS digest, in the client's layout
                let (s_scheme, _) = find_digest(s1, &FMS_KEY[..FMS_KEY_TEXT_LEN]).unwrap();
                assert_eq!(s_scheme, scheme);
                assert_ne!(&s1[4..8], &[0; 4]);
                // S2 is signed with a key derived from the client's digest
                assert!(signed_response_is_valid(s2, &c1_digest, &FMS_KEY));
                let mut tampered = s2.to_vec();
                tampered[100] ^= 1;
                assert!(!signed_response_is_valid(&tampered, &c1_digest, &FMS_KEY));
            }
        }
    }

    #[test]
    fn our_digest_client_and_server_agree() {
        let (mut client, c0c1) = ClientHandshake::start(true, HandshakeRng::new(5));
        let (s, kind) = server_response(&c0c1, &mut HandshakeRng::new(6)).unwrap();
        assert_eq!(kind, HandshakeKind::Digest(DigestScheme::DigestFirst));
        let c2 = client.finish(&s).unwrap();
        // C2 is signed over the server's S1 digest
        let (_, server_digest) =
            find_digest(&s[1..1 + HANDSHAKE_SIZE], &FMS_KEY[..FMS_KEY_TEXT_LEN]).unwrap();
        assert!(signed_response_is_valid(&c2, &server_digest, &FP_KEY));

        // a corrupted S2 is refused
        let mut bad = s.to_vec();
        bad[2000] ^= 0x55;
        let (mut client, _) = ClientHandshake::start(true, HandshakeRng::new(5));
        assert!(matches!(
            client.finish(&bad),
            Err(RtmpError::Handshake { .. })
        ));
    }

    #[test]
    fn c1_with_version_but_no_digest_gets_the_echo() {
        let mut c0c1 = vec![RTMP_VERSION];
        let mut c1 = [0u8; HANDSHAKE_SIZE];
        HandshakeRng::new(9).fill(&mut c1);
        c1[4..8].copy_from_slice(&CLIENT_VERSION.to_be_bytes());
        c0c1.extend_from_slice(&c1);
        let (s, kind) = server_response(&c0c1, &mut HandshakeRng::new(1)).unwrap();
        assert_eq!(kind, HandshakeKind::Simple);
        assert_eq!(&s[1 + HANDSHAKE_SIZE..], &c1[..]);
    }

    #[test]
    fn wrong_versions_and_lengths() {
        let mut c0c1 = vec![6u8; 1 + HANDSHAKE_SIZE];
        assert!(matches!(
            server_response(&c0c1, &mut HandshakeRng::new(0)),
            Err(RtmpError::BadHandshakeVersion { version: 6 })
        ));
        c0c1[0] = 3;
        assert!(matches!(
            server_response(&c0c1[..100], &mut HandshakeRng::new(0)),
            Err(RtmpError::Handshake { .. })
        ));
        assert!(check_version(b'G').is_err());
    }
}
