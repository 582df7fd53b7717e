//! What both ends of a connection do the same way once the handshake is over: buffer
//! input, decode chunks, apply protocol control (chunk size, abort, window and peer
//! bandwidth), acknowledge received bytes, answer pings, and split aggregates.
//!
//! Responses it generates are queued in `tx` and must be drained by the owner after each
//! call, so they keep their place relative to the owner's own output.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::chunk::{ChunkDecoder, ChunkDecoderConfig, RawMessage};
use super::message::{self, split_aggregate, Message, UserControl};
use super::RtmpError;

/// Input buffer capacity a drained session may keep.
const IDLE_INBUF: usize = 512;

#[derive(Debug)]
pub(crate) struct Session {
    /// Received bytes not yet decoded.
    pub inbuf: BytesMut,
    decoder: ChunkDecoder,
    /// Sub-messages of an aggregate still to hand out.
    pending: VecDeque<RawMessage>,
    /// Bytes consumed from the peer, for acknowledgements (the handshake counts).
    received: u64,
    last_ack: u64,
    /// The window the peer asked us to acknowledge by (Window Acknowledgement Size).
    ack_window: u32,
    /// The peer's Set Peer Bandwidth: we answer with a matching Window Ack Size.
    peer_bandwidth: u32,
    /// Bytes we sent and the peer's last acknowledgement of them.
    pub sent: u64,
    pub peer_acked: u32,
    /// Responses to send, in order.
    pub tx: VecDeque<Bytes>,
}

impl Session {
    pub fn new(config: ChunkDecoderConfig) -> Self {
        Session {
            inbuf: BytesMut::new(),
            decoder: ChunkDecoder::new(config),
            pending: VecDeque::new(),
            received: 0,
            last_ack: 0,
            ack_window: 0,
            peer_bandwidth: 0,
            sent: 0,
            peer_acked: 0,
            tx: VecDeque::new(),
        }
    }

    /// Input held: undecoded bytes plus partially received messages.
    pub fn buffered_bytes(&self) -> usize {
        self.inbuf.len() + self.decoder.buffered_bytes()
    }

    /// Counts bytes consumed outside the chunk stream (the handshake).
    pub fn count_received(&mut self, n: usize) {
        self.received += n as u64;
        self.maybe_ack();
    }

    pub fn send(&mut self, bytes: Bytes) {
        self.sent += bytes.len() as u64;
        self.tx.push_back(bytes);
    }

    /// Bytes sent that the peer has not acknowledged (sequence numbers wrap at 2^32).
    pub fn unacknowledged(&self) -> u64 {
        u64::from((self.sent as u32).wrapping_sub(self.peer_acked))
    }

    fn maybe_ack(&mut self) {
        // Acknowledge each time another window's worth has arrived (spec 5.4.3); the
        // sequence number is the byte count so far, wrapping at 32 bits.
        if self.ack_window > 0 && self.received - self.last_ack >= u64::from(self.ack_window) {
            self.last_ack = self.received;
            self.send(message::acknowledgement(self.received as u32));
        }
    }

    /// Decodes input until a message the owner must handle, handling protocol control on
    /// the way. `Ok(None)` when the input holds no further complete message.
    pub fn next_message(&mut self) -> Result<Option<Message>, RtmpError> {
        loop {
            let raw = match self.pending.pop_front() {
                Some(raw) => raw,
                None => match self.decoder.decode_chunk(&self.inbuf)? {
                    None => {
                        // Drained: give back what the handshake and the commands grew
                        // (a viewer then sends only a rare ack), so an idle or playing
                        // connection holds no input buffer.
                        if self.inbuf.is_empty() && self.inbuf.capacity() > IDLE_INBUF {
                            self.inbuf = BytesMut::new();
                        }
                        return Ok(None);
                    }
                    Some((used, msg)) => {
                        self.inbuf.advance(used);
                        self.received += used as u64;
                        self.maybe_ack();
                        match msg {
                            Some(raw) => raw,
                            None => continue,
                        }
                    }
                },
            };
            match Message::parse(raw)? {
                Message::SetChunkSize(size) => self.decoder.set_chunk_size(size)?,
                Message::Abort { csid } => self.decoder.abort(csid),
                Message::Acknowledgement { sequence } => self.peer_acked = sequence,
                Message::WindowAckSize(size) => {
                    self.ack_window = size;
                    self.maybe_ack();
                }
                Message::SetPeerBandwidth { size, .. } => {
                    // Answer a change with our Window Acknowledgement Size (spec 5.4.5).
                    if size != self.peer_bandwidth {
                        self.peer_bandwidth = size;
                        self.send(message::window_ack_size(size));
                    }
                }
                Message::UserControl(UserControl::PingRequest { timestamp }) => {
                    self.send(message::user_control(UserControl::PingResponse {
                        timestamp,
                    }));
                }
                Message::Aggregate(raw) => {
                    self.pending.extend(split_aggregate(&raw)?);
                }
                Message::Ignored { type_id } => {
                    tracing::trace!(type_id, "ignoring RTMP message type we do not use");
                }
                other => return Ok(Some(other)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk::serialize_message;
    use crate::rtmp::message::{MediaKind, AUDIO};

    fn drain_tx(s: &mut Session) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(b) = s.tx.pop_front() {
            let (_, m) = ChunkDecoder::default().decode_chunk(&b).unwrap().unwrap();
            out.push(Message::parse(m.unwrap()).unwrap());
        }
        out
    }

    #[test]
    fn acknowledges_each_window_and_answers_pings() {
        let mut s = Session::new(ChunkDecoderConfig::default());
        s.inbuf.extend_from_slice(&message::window_ack_size(1000));
        let body = [0u8; 100];
        for i in 0..20 {
            s.inbuf
                .extend_from_slice(&serialize_message(4, AUDIO, 1, i, &body, 128).unwrap());
        }
        s.inbuf
            .extend_from_slice(&message::user_control(UserControl::PingRequest {
                timestamp: 42,
            }));
        let mut media = 0;
        while let Some(m) = s.next_message().unwrap() {
            assert!(matches!(
                m,
                Message::Media {
                    kind: MediaKind::Audio,
                    ..
                }
            ));
            media += 1;
        }
        assert_eq!(media, 20);
        let sent = drain_tx(&mut s);
        // 16 bytes of window message + 20 * 112 bytes = 2256: two acks, then the pong
        assert_eq!(
            sent,
            vec![
                Message::Acknowledgement {
                    sequence: 16 + 9 * 112
                },
                Message::Acknowledgement {
                    sequence: 16 + 18 * 112
                },
                Message::UserControl(UserControl::PingResponse { timestamp: 42 }),
            ]
        );
    }

    #[test]
    fn set_chunk_size_applies_to_the_next_chunk() {
        let mut s = Session::new(ChunkDecoderConfig::default());
        s.inbuf.extend_from_slice(&message::set_chunk_size(4096));
        s.inbuf
            .extend_from_slice(&serialize_message(4, AUDIO, 1, 0, &[1u8; 4000], 4096).unwrap());
        match s.next_message().unwrap() {
            Some(Message::Media { body, .. }) => assert_eq!(body.len(), 4000),
            other => panic!("{other:?}"),
        }
        s.inbuf.extend_from_slice(&message::set_chunk_size(1 << 31));
        assert!(matches!(
            s.next_message(),
            Err(RtmpError::ChunkSizeOutOfRange { .. })
        ));
    }

    #[test]
    fn peer_bandwidth_is_answered_once_per_change() {
        let mut s = Session::new(ChunkDecoderConfig::default());
        s.inbuf
            .extend_from_slice(&message::set_peer_bandwidth(5_000_000, 2));
        s.inbuf
            .extend_from_slice(&message::set_peer_bandwidth(5_000_000, 2));
        assert!(s.next_message().unwrap().is_none());
        assert_eq!(drain_tx(&mut s), vec![Message::WindowAckSize(5_000_000)]);
        s.inbuf.extend_from_slice(&message::acknowledgement(10));
        assert!(s.next_message().unwrap().is_none());
        assert_eq!(s.peer_acked, 10);
        assert_eq!(s.unacknowledged(), s.sent - 10);
    }
}
