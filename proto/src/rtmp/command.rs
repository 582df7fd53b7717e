//! NetConnection and NetStream commands: reading the generic shape of a command
//! (name, transaction id, command object, arguments) and building the replies both ends
//! send (`_result`, `_error`, `onStatus`).

use bytes::Bytes;

use super::amf0::Amf0Value;
use super::message;
use super::{RtmpError, MAX_NAME_BYTES, MAX_QUERY_BYTES};

/// A decoded command message.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    pub name: String,
    /// 0 for commands that expect no reply.
    pub transaction_id: f64,
    /// The command object (connect's properties), usually `Null` for other commands.
    pub object: Amf0Value,
    /// Everything after the command object.
    pub args: Vec<Amf0Value>,
}

impl Command {
    /// Reads the generic shape; values that arrived in AMF3 (type 17 commands) are
    /// converted to their AMF0 equivalents first.
    pub fn parse(values: Vec<Amf0Value>) -> Result<Command, RtmpError> {
        let mut it = values.into_iter().map(|v| match v {
            Amf0Value::Amf3(v) => v.into_amf0(),
            v => v,
        });
        let name = match it.next() {
            Some(v) => v
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| RtmpError::Malformed {
                    what: "command",
                    detail: format!("command name is {v:?}, not a string"),
                })?,
            None => {
                return Err(RtmpError::Malformed {
                    what: "command",
                    detail: "empty body".into(),
                })
            }
        };
        // A missing or non-numeric transaction id is treated as 0 ("no reply wanted"):
        // a few clients send notifications without one.
        let transaction_id = it.next().and_then(|v| v.as_number()).unwrap_or(0.0);
        let object = it.next().unwrap_or(Amf0Value::Null);
        Ok(Command {
            name,
            transaction_id,
            object,
            args: it.collect(),
        })
    }

    /// Argument `i` (after the command object) as a string.
    pub fn arg_str(&self, i: usize) -> Option<&str> {
        self.args.get(i).and_then(Amf0Value::as_str)
    }

    pub fn arg_number(&self, i: usize) -> Option<f64> {
        self.args.get(i).and_then(Amf0Value::as_number)
    }

    pub fn arg_bool(&self, i: usize) -> Option<bool> {
        self.args.get(i).and_then(Amf0Value::as_bool)
    }

    /// A string property of the command object.
    pub fn object_str(&self, name: &str) -> Option<&str> {
        self.object.property(name).and_then(Amf0Value::as_str)
    }

    /// Whether the sender waits for a `_result`/`_error`.
    pub fn wants_reply(&self) -> bool {
        self.transaction_id != 0.0
    }
}

/// The `{ level, code, description }` object of `onStatus` and `_error` replies.
pub fn status_object(level: &str, code: &str, description: &str) -> Amf0Value {
    Amf0Value::object([
        ("level", level.into()),
        ("code", code.into()),
        ("description", description.into()),
    ])
}

/// `onStatus` on a message stream.
pub fn on_status(
    stream_id: u32,
    level: &str,
    code: &str,
    description: &str,
    chunk_size: u32,
) -> Bytes {
    message::command(
        stream_id,
        &[
            "onStatus".into(),
            0.0.into(),
            Amf0Value::Null,
            status_object(level, code, description),
        ],
        chunk_size,
    )
}

/// `_result` for `transaction_id` with the given values after the name and id.
pub fn result(stream_id: u32, transaction_id: f64, values: &[Amf0Value], chunk_size: u32) -> Bytes {
    reply("_result", stream_id, transaction_id, values, chunk_size)
}

/// `_error` for `transaction_id`.
pub fn error(stream_id: u32, transaction_id: f64, values: &[Amf0Value], chunk_size: u32) -> Bytes {
    reply("_error", stream_id, transaction_id, values, chunk_size)
}

fn reply(name: &str, stream_id: u32, txn: f64, values: &[Amf0Value], chunk_size: u32) -> Bytes {
    let mut all = Vec::with_capacity(values.len() + 2);
    all.push(name.into());
    all.push(txn.into());
    all.extend_from_slice(values);
    message::command(stream_id, &all, chunk_size)
}

/// Splits `name?query` at the first `?`; the query is kept verbatim (it carries tokens).
pub fn split_query(s: &str) -> (&str, &str) {
    s.split_once('?').unwrap_or((s, ""))
}

/// The first [`MAX_NAME_BYTES`] of a peer's string (cut at a character boundary), for
/// replies and logs that quote it: a peer cannot make us send back or log megabytes.
pub fn quoted(s: &str) -> &str {
    let mut end = s.len().min(MAX_NAME_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Why a `name` and its `query` from a peer are refused for their length (the text for
/// the peer), if they are: see [`MAX_NAME_BYTES`] and [`MAX_QUERY_BYTES`].
pub fn check_lengths(what: &str, name: &str, query: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{what} is {} bytes long; at most {MAX_NAME_BYTES} are allowed",
            name.len()
        ));
    }
    if query.len() > MAX_QUERY_BYTES {
        return Err(format!(
            "the query string of the {what} is {} bytes long; at most {MAX_QUERY_BYTES} are allowed",
            query.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk::ChunkDecoder;
    use crate::rtmp::message::Message;

    #[test]
    fn parses_generic_shape() {
        let c = Command::parse(vec![
            "publish".into(),
            5.0.into(),
            Amf0Value::Null,
            "cam?token=a?b".into(),
            "live".into(),
        ])
        .unwrap();
        assert_eq!(c.name, "publish");
        assert!(c.wants_reply());
        assert_eq!(c.arg_str(0), Some("cam?token=a?b"));
        assert_eq!(split_query(c.arg_str(0).unwrap()), ("cam", "token=a?b"));
        assert_eq!(c.arg_str(1), Some("live"));
        assert_eq!(c.arg_str(2), None);

        let c = Command::parse(vec!["onBWDone".into()]).unwrap();
        assert!(!c.wants_reply());
        assert_eq!(c.object, Amf0Value::Null);

        assert!(Command::parse(vec![]).is_err());
        assert!(Command::parse(vec![1.0.into()]).is_err());
    }

    #[test]
    fn quoted_strings_are_cut_at_a_character_boundary() {
        assert_eq!(quoted("cam"), "cam");
        let long = "é".repeat(MAX_NAME_BYTES);
        let q = quoted(&long);
        assert!(q.len() <= MAX_NAME_BYTES && q.len() >= MAX_NAME_BYTES - 1);
        assert!(q.chars().all(|c| c == 'é'));
    }

    #[test]
    fn on_status_decodes_back() {
        let wire = on_status(1, "status", "NetStream.Play.Start", "go", 4096);
        let (_, raw) = ChunkDecoder::default()
            .decode_chunk(&wire)
            .unwrap()
            .unwrap();
        let raw = raw.unwrap();
        assert_eq!(raw.stream_id, 1);
        let Message::Command { values, .. } = Message::parse(raw).unwrap() else {
            panic!()
        };
        let c = Command::parse(values).unwrap();
        assert_eq!(c.name, "onStatus");
        assert_eq!(
            c.args[0].property("code").and_then(Amf0Value::as_str),
            Some("NetStream.Play.Start")
        );
    }
}
