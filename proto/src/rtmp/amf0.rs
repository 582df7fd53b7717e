//! AMF0 (Action Message Format 0): the encoding of RTMP command messages (type 20) and
//! data messages (type 18).
//!
//! The decoder covers every AMF0 marker (number, boolean, string, object, null,
//! undefined, reference, ECMA array, object end, strict array, date, long string, XML
//! document, typed object) plus the `avmplus-object` switch to AMF3 (see [`super::amf3`]).
//! It never panics on input, limits nesting depth, and never reserves memory from a count
//! field without checking that the remaining input could hold that many items.
//!
//! References (marker 0x07) are kept as [`Amf0Value::Reference`] rather than resolved:
//! resolving them by copy lets a few bytes expand into gigabytes, and RTMP commands never
//! use them.

use bytes::{BufMut, BytesMut};

use super::amf3;

/// How deep objects and arrays may nest before decoding fails.
pub const MAX_DEPTH: usize = 64;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const MOVIECLIP: u8 = 0x04;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const REFERENCE: u8 = 0x07;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0A;
const DATE: u8 = 0x0B;
const LONG_STRING: u8 = 0x0C;
const UNSUPPORTED: u8 = 0x0D;
const RECORDSET: u8 = 0x0E;
const XML_DOCUMENT: u8 = 0x0F;
const TYPED_OBJECT: u8 = 0x10;
const AVMPLUS: u8 = 0x11;

/// One AMF0 value. Objects keep their properties in wire order (order matters to some
/// Flash-era peers, and it makes encoding deterministic).
#[derive(Clone, Debug, PartialEq)]
pub enum Amf0Value {
    Number(f64),
    Boolean(bool),
    /// A string of at most 65535 bytes (marker 0x02).
    String(String),
    Object(Vec<(String, Amf0Value)>),
    Null,
    Undefined,
    /// Index into the table of complex values decoded so far in this message; kept as is.
    Reference(u16),
    /// An associative array; the wire's count field is only a hint and is recomputed on
    /// encode.
    EcmaArray(Vec<(String, Amf0Value)>),
    StrictArray(Vec<Amf0Value>),
    /// Milliseconds since the Unix epoch, and a time zone field that the spec says
    /// should be 0 and readers ignore.
    Date {
        millis: f64,
        time_zone: i16,
    },
    /// A string longer than 65535 bytes (marker 0x0C), or one sent that way.
    LongString(String),
    /// The `unsupported` marker (0x0D).
    Unsupported,
    XmlDocument(String),
    TypedObject {
        class_name: String,
        properties: Vec<(String, Amf0Value)>,
    },
    /// A value that followed the `avmplus-object` marker (0x11): encoded in AMF3.
    Amf3(amf3::Amf3Value),
}

impl Amf0Value {
    /// The string content, for `String` and `LongString`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) | Amf0Value::LongString(s) => Some(s),
            Amf0Value::Amf3(amf3::Amf3Value::String(s)) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            Amf0Value::Amf3(amf3::Amf3Value::Double(n)) => Some(*n),
            Amf0Value::Amf3(amf3::Amf3Value::Integer(n)) => Some(f64::from(*n)),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Amf0Value::Boolean(b) => Some(*b),
            Amf0Value::Amf3(amf3::Amf3Value::True) => Some(true),
            Amf0Value::Amf3(amf3::Amf3Value::False) => Some(false),
            _ => None,
        }
    }

    /// The properties of an object, ECMA array or typed object.
    pub fn properties(&self) -> Option<&[(String, Amf0Value)]> {
        match self {
            Amf0Value::Object(p) | Amf0Value::EcmaArray(p) => Some(p),
            Amf0Value::TypedObject { properties, .. } => Some(properties),
            _ => None,
        }
    }

    /// Looks up a property of an object-like value by name (first match).
    pub fn property(&self, name: &str) -> Option<&Amf0Value> {
        self.properties()?
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// Convenience for building objects: `Amf0Value::object([("code", "x".into())])`.
    pub fn object<const N: usize>(props: [(&str, Amf0Value); N]) -> Amf0Value {
        Amf0Value::Object(props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}

impl From<&str> for Amf0Value {
    fn from(s: &str) -> Self {
        Amf0Value::String(s.to_owned())
    }
}

impl From<f64> for Amf0Value {
    fn from(n: f64) -> Self {
        Amf0Value::Number(n)
    }
}

impl From<bool> for Amf0Value {
    fn from(b: bool) -> Self {
        Amf0Value::Boolean(b)
    }
}

/// What went wrong while decoding AMF (0 or 3), and at which byte of the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmfError {
    #[error("AMF value truncated at byte {position}: needed {needed} more bytes")]
    Truncated { position: usize, needed: usize },
    #[error("unknown AMF{version} type marker 0x{marker:02x} at byte {position}")]
    UnknownMarker {
        version: u8,
        marker: u8,
        position: usize,
    },
    #[error("AMF{version} type marker 0x{marker:02x} at byte {position} is not supported")]
    UnsupportedMarker {
        version: u8,
        marker: u8,
        position: usize,
    },
    #[error("AMF string at byte {position} is not valid UTF-8")]
    InvalidUtf8 { position: usize },
    #[error("AMF values nested deeper than {max} levels at byte {position}")]
    TooDeep { position: usize, max: usize },
    #[error("AMF object end marker at byte {position} outside an object")]
    UnexpectedObjectEnd { position: usize },
    #[error("AMF{version} count {count} at byte {position} exceeds the remaining input")]
    CountTooLarge {
        version: u8,
        count: u64,
        position: usize,
    },
    #[error("AMF3 reference {index} at byte {position} points past the {table} table")]
    BadReference {
        index: u32,
        table: &'static str,
        position: usize,
    },
    #[error("AMF3 value at byte {position} would expand beyond {max} decoded bytes")]
    TooLarge { position: usize, max: usize },
    #[error("AMF string of {len} bytes is too long to encode")]
    StringTooLong { len: usize },
}

/// A cursor over an AMF message body. Positions in errors are offsets into the slice
/// the reader was created with.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unread rest of the input.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], AmfError> {
        if self.remaining() < n {
            return Err(AmfError::Truncated {
                position: self.pos,
                needed: n - self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, AmfError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn peek_u8(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn u16(&mut self) -> Result<u16, AmfError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, AmfError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn f64(&mut self) -> Result<f64, AmfError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }

    pub(crate) fn utf8(&mut self, len: usize) -> Result<String, AmfError> {
        let position = self.pos;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| AmfError::InvalidUtf8 { position })
    }

    fn short_string(&mut self) -> Result<String, AmfError> {
        let len = self.u16()? as usize;
        self.utf8(len)
    }

    fn long_string(&mut self) -> Result<String, AmfError> {
        let len = self.u32()? as usize;
        self.utf8(len)
    }

    /// Fails unless at least `count` items of at least `min_item` bytes each could fit in
    /// the rest of the input; called before reserving memory for `count` items.
    pub(crate) fn check_count(
        &self,
        version: u8,
        count: u32,
        min_item: usize,
    ) -> Result<(), AmfError> {
        if (count as u64) * (min_item as u64) > self.remaining() as u64 {
            return Err(AmfError::CountTooLarge {
                version,
                count: count.into(),
                position: self.pos,
            });
        }
        Ok(())
    }
}

/// Decodes one AMF0 value.
pub fn decode(r: &mut Reader<'_>) -> Result<Amf0Value, AmfError> {
    decode_at_depth(r, 0)
}

/// Decodes AMF0 values until the input is exhausted.
pub fn decode_all(buf: &[u8]) -> Result<Vec<Amf0Value>, AmfError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(decode(&mut r)?);
    }
    Ok(out)
}

fn decode_at_depth(r: &mut Reader<'_>, depth: usize) -> Result<Amf0Value, AmfError> {
    let position = r.position();
    if depth > MAX_DEPTH {
        return Err(AmfError::TooDeep {
            position,
            max: MAX_DEPTH,
        });
    }
    let marker = r.u8()?;
    Ok(match marker {
        NUMBER => Amf0Value::Number(r.f64()?),
        BOOLEAN => Amf0Value::Boolean(r.u8()? != 0),
        STRING => Amf0Value::String(r.short_string()?),
        OBJECT => Amf0Value::Object(decode_properties(r, depth)?),
        NULL => Amf0Value::Null,
        UNDEFINED => Amf0Value::Undefined,
        REFERENCE => Amf0Value::Reference(r.u16()?),
        ECMA_ARRAY => {
            // The count is a hint (encoders get it wrong); the object end marker is what
            // ends the array.
            let _count = r.u32()?;
            Amf0Value::EcmaArray(decode_properties(r, depth)?)
        }
        OBJECT_END => return Err(AmfError::UnexpectedObjectEnd { position }),
        STRICT_ARRAY => {
            let count = r.u32()?;
            r.check_count(0, count, 1)?;
            let mut items = Vec::with_capacity(count as usize);
            for _ in 0..count {
                items.push(decode_at_depth(r, depth + 1)?);
            }
            Amf0Value::StrictArray(items)
        }
        DATE => {
            let millis = r.f64()?;
            let time_zone = r.u16()? as i16;
            Amf0Value::Date { millis, time_zone }
        }
        LONG_STRING => Amf0Value::LongString(r.long_string()?),
        UNSUPPORTED => Amf0Value::Unsupported,
        XML_DOCUMENT => Amf0Value::XmlDocument(r.long_string()?),
        TYPED_OBJECT => {
            let class_name = r.short_string()?;
            Amf0Value::TypedObject {
                class_name,
                properties: decode_properties(r, depth)?,
            }
        }
        AVMPLUS => Amf0Value::Amf3(amf3::Decoder::new().decode_nested(r, depth + 1)?),
        MOVIECLIP | RECORDSET => {
            return Err(AmfError::UnsupportedMarker {
                version: 0,
                marker,
                position,
            })
        }
        _ => {
            return Err(AmfError::UnknownMarker {
                version: 0,
                marker,
                position,
            })
        }
    })
}

/// Name/value pairs up to the empty name followed by the object end marker.
fn decode_properties(
    r: &mut Reader<'_>,
    depth: usize,
) -> Result<Vec<(String, Amf0Value)>, AmfError> {
    let mut props = Vec::new();
    loop {
        let name = r.short_string()?;
        if name.is_empty() && r.peek_u8() == Some(OBJECT_END) {
            r.u8()?;
            return Ok(props);
        }
        let value = decode_at_depth(r, depth + 1)?;
        props.push((name, value));
    }
}

/// Appends the AMF0 encoding of `value`.
///
/// Fails only for strings that cannot be represented (a property name or short string
/// over 65535 bytes, a long string over 4 GiB) or an AMF3 value that cannot be encoded.
pub fn encode(out: &mut BytesMut, value: &Amf0Value) -> Result<(), AmfError> {
    match value {
        Amf0Value::Number(n) => {
            out.put_u8(NUMBER);
            out.put_f64(*n);
        }
        Amf0Value::Boolean(b) => {
            out.put_u8(BOOLEAN);
            out.put_u8(u8::from(*b));
        }
        Amf0Value::String(s) => {
            if s.len() > u16::MAX as usize {
                // Too long for the short form: the long string marker says the same thing.
                out.put_u8(LONG_STRING);
                put_long_string(out, s)?;
            } else {
                out.put_u8(STRING);
                put_short_string(out, s)?;
            }
        }
        Amf0Value::Object(props) => {
            out.put_u8(OBJECT);
            put_properties(out, props)?;
        }
        Amf0Value::Null => out.put_u8(NULL),
        Amf0Value::Undefined => out.put_u8(UNDEFINED),
        Amf0Value::Reference(i) => {
            out.put_u8(REFERENCE);
            out.put_u16(*i);
        }
        Amf0Value::EcmaArray(props) => {
            out.put_u8(ECMA_ARRAY);
            out.put_u32(u32::try_from(props.len()).unwrap_or(u32::MAX));
            put_properties(out, props)?;
        }
        Amf0Value::StrictArray(items) => {
            out.put_u8(STRICT_ARRAY);
            let count = u32::try_from(items.len())
                .map_err(|_| AmfError::StringTooLong { len: items.len() })?;
            out.put_u32(count);
            for item in items {
                encode(out, item)?;
            }
        }
        Amf0Value::Date { millis, time_zone } => {
            out.put_u8(DATE);
            out.put_f64(*millis);
            out.put_i16(*time_zone);
        }
        Amf0Value::LongString(s) => {
            out.put_u8(LONG_STRING);
            put_long_string(out, s)?;
        }
        Amf0Value::Unsupported => out.put_u8(UNSUPPORTED),
        Amf0Value::XmlDocument(s) => {
            out.put_u8(XML_DOCUMENT);
            put_long_string(out, s)?;
        }
        Amf0Value::TypedObject {
            class_name,
            properties,
        } => {
            out.put_u8(TYPED_OBJECT);
            put_short_string(out, class_name)?;
            put_properties(out, properties)?;
        }
        Amf0Value::Amf3(v) => {
            out.put_u8(AVMPLUS);
            amf3::encode(out, v)?;
        }
    }
    Ok(())
}

/// Encodes a sequence of values back to back (a command or data message body).
pub fn encode_all(values: &[Amf0Value]) -> Result<BytesMut, AmfError> {
    let mut out = BytesMut::with_capacity(128);
    for v in values {
        encode(&mut out, v)?;
    }
    Ok(out)
}

fn put_short_string(out: &mut BytesMut, s: &str) -> Result<(), AmfError> {
    let len = u16::try_from(s.len()).map_err(|_| AmfError::StringTooLong { len: s.len() })?;
    out.put_u16(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

fn put_long_string(out: &mut BytesMut, s: &str) -> Result<(), AmfError> {
    let len = u32::try_from(s.len()).map_err(|_| AmfError::StringTooLong { len: s.len() })?;
    out.put_u32(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

fn put_properties(out: &mut BytesMut, props: &[(String, Amf0Value)]) -> Result<(), AmfError> {
    for (name, value) in props {
        put_short_string(out, name)?;
        encode(out, value)?;
    }
    out.put_u16(0);
    out.put_u8(OBJECT_END);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &Amf0Value) -> Amf0Value {
        let bytes = encode_all(std::slice::from_ref(v)).unwrap();
        let mut r = Reader::new(&bytes);
        let back = decode(&mut r).unwrap();
        assert!(r.is_empty(), "trailing bytes after {v:?}");
        back
    }

    #[test]
    fn decodes_a_connect_command_as_ffmpeg_sends_it() {
        // "connect", 1.0, { app: "live", tcUrl: "rtmp://h/live", fpad: false }
        let mut wire = vec![0x02, 0x00, 0x07];
        wire.extend_from_slice(b"connect");
        wire.push(0x00);
        wire.extend_from_slice(&1.0f64.to_be_bytes());
        wire.push(0x03);
        for (k, v) in [("app", "live"), ("tcUrl", "rtmp://h/live")] {
            wire.extend_from_slice(&(k.len() as u16).to_be_bytes());
            wire.extend_from_slice(k.as_bytes());
            wire.push(0x02);
            wire.extend_from_slice(&(v.len() as u16).to_be_bytes());
            wire.extend_from_slice(v.as_bytes());
        }
        wire.extend_from_slice(&[0x00, 0x04]);
        wire.extend_from_slice(b"fpad");
        wire.extend_from_slice(&[0x01, 0x00]);
        wire.extend_from_slice(&[0x00, 0x00, 0x09]);

        let values = decode_all(&wire).unwrap();
        assert_eq!(values.len(), 3);
        assert_eq!(values[0].as_str(), Some("connect"));
        assert_eq!(values[1].as_number(), Some(1.0));
        assert_eq!(
            values[2].property("app").and_then(Amf0Value::as_str),
            Some("live")
        );
        assert_eq!(values[2].property("fpad"), Some(&Amf0Value::Boolean(false)));
        // and our encoder produces the very same bytes
        assert_eq!(&encode_all(&values).unwrap()[..], &wire[..]);
    }

    #[test]
    fn every_type_round_trips() {
        let v = Amf0Value::StrictArray(vec![
            Amf0Value::Number(-0.5),
            Amf0Value::Boolean(true),
            "text".into(),
            Amf0Value::object([("a", 1.0.into()), ("b", Amf0Value::Null)]),
            Amf0Value::Undefined,
            Amf0Value::Reference(3),
            Amf0Value::EcmaArray(vec![("duration".into(), 0.0.into())]),
            Amf0Value::Date {
                millis: 1.7e12,
                time_zone: 0,
            },
            Amf0Value::LongString("long".into()),
            Amf0Value::Unsupported,
            Amf0Value::XmlDocument("<a/>".into()),
            Amf0Value::TypedObject {
                class_name: "flex.Foo".into(),
                properties: vec![("x".into(), Amf0Value::Number(2.0))],
            },
            Amf0Value::Amf3(amf3::Amf3Value::Integer(7)),
        ]);
        assert_eq!(round_trip(&v), v);
    }

    #[test]
    fn long_short_string_is_sent_as_long_string() {
        let s = "x".repeat(70_000);
        let back = round_trip(&Amf0Value::String(s.clone()));
        assert_eq!(back, Amf0Value::LongString(s));
    }

    #[test]
    fn truncated_input_reports_position() {
        let err = decode_all(&[0x02, 0x00, 0x05, b'a', b'b']).unwrap_err();
        assert_eq!(
            err,
            AmfError::Truncated {
                position: 3,
                needed: 3
            }
        );
        let err = decode_all(&[0x00, 0x01]).unwrap_err();
        assert!(matches!(err, AmfError::Truncated { position: 1, .. }));
    }

    #[test]
    fn huge_strict_array_count_is_rejected_before_allocating() {
        let err = decode_all(&[0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x05]).unwrap_err();
        assert!(
            matches!(
                err,
                AmfError::CountTooLarge {
                    count: 0xFFFF_FFFF,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut wire = Vec::new();
        for _ in 0..10_000 {
            wire.extend_from_slice(&[0x0A, 0, 0, 0, 1]);
        }
        wire.push(0x05);
        assert!(matches!(
            decode_all(&wire).unwrap_err(),
            AmfError::TooDeep { .. }
        ));
    }

    #[test]
    fn garbage_markers_are_errors() {
        assert!(matches!(
            decode_all(&[0x42]).unwrap_err(),
            AmfError::UnknownMarker {
                marker: 0x42,
                position: 0,
                ..
            }
        ));
        assert!(matches!(
            decode_all(&[0x09]).unwrap_err(),
            AmfError::UnexpectedObjectEnd { position: 0 }
        ));
        assert!(matches!(
            decode_all(&[0x02, 0x00, 0x02, 0xff, 0xfe]).unwrap_err(),
            AmfError::InvalidUtf8 { position: 3 }
        ));
    }
}
