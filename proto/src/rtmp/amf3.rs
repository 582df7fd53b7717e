//! AMF3, as far as RTMP needs it: the values inside AMF3 command messages (type 17) and
//! data messages (type 15), which Flash-era clients with `objectEncoding = 3` send.
//!
//! Supported: undefined, null, booleans, U29 integers, doubles, strings (with the string
//! reference table), XML, dates, arrays (dense and associative), objects (sealed and
//! dynamic members, with trait references) and byte arrays. Externalizable objects,
//! vectors and dictionaries are reported as unsupported: no RTMP client sends them in
//! commands.
//!
//! Object references are kept as [`Amf3Value::Reference`] (validated, not resolved), for
//! the same reason as in AMF0: resolving by copy would let a few bytes expand without
//! bound. String references are resolved, under a budget of decoded bytes.

use bytes::{BufMut, BytesMut};

use super::amf0::{Amf0Value, AmfError, Reader};

/// Total bytes that string references may expand to in one decoder.
pub const MAX_REFERENCED_STRING_BYTES: usize = 1 << 20;

const UNDEFINED: u8 = 0x00;
const NULL: u8 = 0x01;
const FALSE: u8 = 0x02;
const TRUE: u8 = 0x03;
const INTEGER: u8 = 0x04;
const DOUBLE: u8 = 0x05;
const STRING: u8 = 0x06;
const XML_DOC: u8 = 0x07;
const DATE: u8 = 0x08;
const ARRAY: u8 = 0x09;
const OBJECT: u8 = 0x0A;
const XML: u8 = 0x0B;
const BYTE_ARRAY: u8 = 0x0C;
const DICTIONARY: u8 = 0x11;

const U29_MAX: u32 = (1 << 29) - 1;
const INT_MIN: i32 = -(1 << 28);
const INT_MAX: i32 = (1 << 28) - 1;

#[derive(Clone, Debug, PartialEq)]
pub enum Amf3Value {
    Undefined,
    Null,
    False,
    True,
    /// A 29-bit signed integer.
    Integer(i32),
    Double(f64),
    String(String),
    XmlDocument(String),
    /// Milliseconds since the Unix epoch.
    Date(f64),
    Array {
        associative: Vec<(String, Amf3Value)>,
        dense: Vec<Amf3Value>,
    },
    Object {
        class_name: String,
        sealed: Vec<(String, Amf3Value)>,
        /// `None` for objects whose traits are not dynamic.
        dynamic: Option<Vec<(String, Amf3Value)>>,
    },
    Xml(String),
    ByteArray(Vec<u8>),
    /// Index into the table of complex values (objects, arrays, dates, XML, byte arrays)
    /// decoded so far in this message.
    Reference(u32),
}

impl Amf3Value {
    /// The closest AMF0 value, so command handling reads one model: objects keep sealed
    /// then dynamic members, integers become numbers, arrays without named members
    /// become strict arrays. Byte arrays and references have no AMF0 form and stay
    /// wrapped.
    pub fn into_amf0(self) -> Amf0Value {
        let members = |m: Vec<(String, Amf3Value)>| {
            m.into_iter()
                .map(|(k, v)| (k, v.into_amf0()))
                .collect::<Vec<_>>()
        };
        match self {
            Amf3Value::Undefined => Amf0Value::Undefined,
            Amf3Value::Null => Amf0Value::Null,
            Amf3Value::False => Amf0Value::Boolean(false),
            Amf3Value::True => Amf0Value::Boolean(true),
            Amf3Value::Integer(i) => Amf0Value::Number(f64::from(i)),
            Amf3Value::Double(d) => Amf0Value::Number(d),
            Amf3Value::String(s) => Amf0Value::String(s),
            Amf3Value::XmlDocument(s) | Amf3Value::Xml(s) => Amf0Value::XmlDocument(s),
            Amf3Value::Date(millis) => Amf0Value::Date {
                millis,
                time_zone: 0,
            },
            Amf3Value::Array { associative, dense } if associative.is_empty() => {
                Amf0Value::StrictArray(dense.into_iter().map(Amf3Value::into_amf0).collect())
            }
            Amf3Value::Array { associative, dense } => {
                let mut all = members(associative);
                all.extend(
                    dense
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (i.to_string(), v.into_amf0())),
                );
                Amf0Value::EcmaArray(all)
            }
            Amf3Value::Object {
                class_name,
                sealed,
                dynamic,
            } => {
                let mut all = members(sealed);
                all.extend(members(dynamic.unwrap_or_default()));
                if class_name.is_empty() {
                    Amf0Value::Object(all)
                } else {
                    Amf0Value::TypedObject {
                        class_name,
                        properties: all,
                    }
                }
            }
            v @ (Amf3Value::ByteArray(_) | Amf3Value::Reference(_)) => Amf0Value::Amf3(v),
        }
    }
}

#[derive(Clone, Debug)]
struct Traits {
    class_name: String,
    members: Vec<String>,
    dynamic: bool,
}

/// Decoder state: the reference tables of one AMF3 message (each `avmplus-object` marker
/// in AMF0 starts fresh tables, as the spec says).
#[derive(Debug, Default)]
pub struct Decoder {
    strings: Vec<String>,
    objects: u32,
    traits: Vec<Traits>,
    referenced_bytes: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes one value.
    pub fn decode(&mut self, r: &mut Reader<'_>) -> Result<Amf3Value, AmfError> {
        self.decode_nested(r, 0)
    }

    /// Decodes one value that sits `depth` levels deep in an enclosing structure.
    pub(crate) fn decode_nested(
        &mut self,
        r: &mut Reader<'_>,
        depth: usize,
    ) -> Result<Amf3Value, AmfError> {
        let position = r.position();
        if depth > super::amf0::MAX_DEPTH {
            return Err(AmfError::TooDeep {
                position,
                max: super::amf0::MAX_DEPTH,
            });
        }
        let marker = r.u8()?;
        Ok(match marker {
            UNDEFINED => Amf3Value::Undefined,
            NULL => Amf3Value::Null,
            FALSE => Amf3Value::False,
            TRUE => Amf3Value::True,
            INTEGER => {
                let raw = read_u29(r)?;
                // sign-extend the 29-bit value
                Amf3Value::Integer(((raw << 3) as i32) >> 3)
            }
            DOUBLE => Amf3Value::Double(r.f64()?),
            STRING => Amf3Value::String(self.string(r)?),
            XML_DOC | XML => match self.inline_or_reference(r)? {
                Err(index) => Amf3Value::Reference(index),
                Ok(len) => {
                    self.objects += 1;
                    let s = r.utf8(len as usize)?;
                    if marker == XML {
                        Amf3Value::Xml(s)
                    } else {
                        Amf3Value::XmlDocument(s)
                    }
                }
            },
            DATE => match self.inline_or_reference(r)? {
                Err(index) => Amf3Value::Reference(index),
                Ok(_) => {
                    self.objects += 1;
                    Amf3Value::Date(r.f64()?)
                }
            },
            ARRAY => match self.inline_or_reference(r)? {
                Err(index) => Amf3Value::Reference(index),
                Ok(dense_count) => {
                    self.objects += 1;
                    let associative = self.members_until_empty(r, depth)?;
                    r.check_count(3, dense_count, 1)?;
                    let mut dense = Vec::with_capacity(dense_count as usize);
                    for _ in 0..dense_count {
                        dense.push(self.decode_nested(r, depth + 1)?);
                    }
                    Amf3Value::Array { associative, dense }
                }
            },
            OBJECT => match self.inline_or_reference(r)? {
                Err(index) => Amf3Value::Reference(index),
                Ok(bits) => self.object(r, bits, position, depth)?,
            },
            BYTE_ARRAY => match self.inline_or_reference(r)? {
                Err(index) => Amf3Value::Reference(index),
                Ok(len) => {
                    self.objects += 1;
                    Amf3Value::ByteArray(r.take(len as usize)?.to_vec())
                }
            },
            0x0D..=DICTIONARY => {
                return Err(AmfError::UnsupportedMarker {
                    version: 3,
                    marker,
                    position,
                })
            }
            _ => {
                return Err(AmfError::UnknownMarker {
                    version: 3,
                    marker,
                    position,
                })
            }
        })
    }

    /// Reads a U29 whose low bit says inline (`Ok(rest)`) or reference into the object
    /// table (`Err(index)`, checked to exist).
    fn inline_or_reference(&mut self, r: &mut Reader<'_>) -> Result<Result<u32, u32>, AmfError> {
        let position = r.position();
        let v = read_u29(r)?;
        if v & 1 == 0 {
            let index = v >> 1;
            if index >= self.objects {
                return Err(AmfError::BadReference {
                    index,
                    table: "object",
                    position,
                });
            }
            return Ok(Err(index));
        }
        Ok(Ok(v >> 1))
    }

    fn object(
        &mut self,
        r: &mut Reader<'_>,
        bits: u32,
        position: usize,
        depth: usize,
    ) -> Result<Amf3Value, AmfError> {
        // bits is the U29O value without its inline flag: next bit says inline traits.
        let traits = if bits & 1 == 0 {
            let index = bits >> 1;
            self.traits
                .get(index as usize)
                .cloned()
                .ok_or(AmfError::BadReference {
                    index,
                    table: "traits",
                    position,
                })?
        } else if bits & 2 != 0 {
            // externalizable: the class decides the encoding, we cannot skip it
            return Err(AmfError::UnsupportedMarker {
                version: 3,
                marker: OBJECT,
                position,
            });
        } else {
            let dynamic = bits & 4 != 0;
            let count = bits >> 3;
            let class_name = self.string(r)?;
            r.check_count(3, count, 1)?;
            let mut members = Vec::with_capacity(count as usize);
            for _ in 0..count {
                members.push(self.string(r)?);
            }
            let t = Traits {
                class_name,
                members,
                dynamic,
            };
            self.traits.push(t.clone());
            t
        };
        self.objects += 1;
        let mut sealed = Vec::with_capacity(traits.members.len());
        for name in traits.members {
            let value = self.decode_nested(r, depth + 1)?;
            sealed.push((name, value));
        }
        let dynamic = if traits.dynamic {
            Some(self.members_until_empty(r, depth)?)
        } else {
            None
        };
        Ok(Amf3Value::Object {
            class_name: traits.class_name,
            sealed,
            dynamic,
        })
    }

    fn members_until_empty(
        &mut self,
        r: &mut Reader<'_>,
        depth: usize,
    ) -> Result<Vec<(String, Amf3Value)>, AmfError> {
        let mut out = Vec::new();
        loop {
            let key = self.string(r)?;
            if key.is_empty() {
                return Ok(out);
            }
            let value = self.decode_nested(r, depth + 1)?;
            out.push((key, value));
        }
    }

    /// A UTF-8-vr: inline string (added to the table unless empty) or string reference.
    fn string(&mut self, r: &mut Reader<'_>) -> Result<String, AmfError> {
        let position = r.position();
        let v = read_u29(r)?;
        if v & 1 == 0 {
            let index = v >> 1;
            let s = self
                .strings
                .get(index as usize)
                .ok_or(AmfError::BadReference {
                    index,
                    table: "string",
                    position,
                })?;
            self.referenced_bytes += s.len();
            if self.referenced_bytes > MAX_REFERENCED_STRING_BYTES {
                return Err(AmfError::TooLarge {
                    position,
                    max: MAX_REFERENCED_STRING_BYTES,
                });
            }
            return Ok(s.clone());
        }
        let s = r.utf8((v >> 1) as usize)?;
        if !s.is_empty() {
            self.strings.push(s.clone());
        }
        Ok(s)
    }
}

fn read_u29(r: &mut Reader<'_>) -> Result<u32, AmfError> {
    let mut v: u32 = 0;
    for _ in 0..3 {
        let b = r.u8()?;
        v = (v << 7) | u32::from(b & 0x7f);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    // the fourth byte contributes all 8 bits
    Ok((v << 8) | u32::from(r.u8()?))
}

fn put_u29(out: &mut BytesMut, v: u32) {
    let v = v & U29_MAX;
    if v < 0x80 {
        out.put_u8(v as u8);
    } else if v < 0x4000 {
        out.put_u8(((v >> 7) | 0x80) as u8);
        out.put_u8((v & 0x7f) as u8);
    } else if v < 0x20_0000 {
        out.put_u8(((v >> 14) | 0x80) as u8);
        out.put_u8(((v >> 7) | 0x80) as u8);
        out.put_u8((v & 0x7f) as u8);
    } else {
        out.put_u8(((v >> 22) | 0x80) as u8);
        out.put_u8(((v >> 15) | 0x80) as u8);
        out.put_u8(((v >> 8) | 0x80) as u8);
        out.put_u8(v as u8);
    }
}

/// A length that must fit the 28 bits a U29 with a flag bit leaves.
fn put_inline_len(out: &mut BytesMut, len: usize) -> Result<(), AmfError> {
    if len > (U29_MAX >> 1) as usize {
        return Err(AmfError::StringTooLong { len });
    }
    put_u29(out, ((len as u32) << 1) | 1);
    Ok(())
}

fn put_string(out: &mut BytesMut, s: &str) -> Result<(), AmfError> {
    put_inline_len(out, s.len())?;
    out.put_slice(s.as_bytes());
    Ok(())
}

fn put_members(out: &mut BytesMut, members: &[(String, Amf3Value)]) -> Result<(), AmfError> {
    for (k, v) in members {
        put_string(out, k)?;
        encode(out, v)?;
    }
    put_string(out, "")
}

/// Appends the AMF3 encoding of `value`. Everything is written inline (no string or
/// traits references); `Reference` values are written as object references, which stay
/// valid because every complex value is added to the table in the same order as decoded.
/// Integers outside the 29-bit range are written as doubles, as the spec requires.
pub fn encode(out: &mut BytesMut, value: &Amf3Value) -> Result<(), AmfError> {
    match value {
        Amf3Value::Undefined => out.put_u8(UNDEFINED),
        Amf3Value::Null => out.put_u8(NULL),
        Amf3Value::False => out.put_u8(FALSE),
        Amf3Value::True => out.put_u8(TRUE),
        Amf3Value::Integer(i) if (INT_MIN..=INT_MAX).contains(i) => {
            out.put_u8(INTEGER);
            put_u29(out, *i as u32);
        }
        Amf3Value::Integer(i) => {
            out.put_u8(DOUBLE);
            out.put_f64(f64::from(*i));
        }
        Amf3Value::Double(d) => {
            out.put_u8(DOUBLE);
            out.put_f64(*d);
        }
        Amf3Value::String(s) => {
            out.put_u8(STRING);
            put_string(out, s)?;
        }
        Amf3Value::XmlDocument(s) => {
            out.put_u8(XML_DOC);
            put_string(out, s)?;
        }
        Amf3Value::Xml(s) => {
            out.put_u8(XML);
            put_string(out, s)?;
        }
        Amf3Value::Date(ms) => {
            out.put_u8(DATE);
            put_u29(out, 1);
            out.put_f64(*ms);
        }
        Amf3Value::Array { associative, dense } => {
            out.put_u8(ARRAY);
            put_inline_len(out, dense.len())?;
            put_members(out, associative)?;
            for v in dense {
                encode(out, v)?;
            }
        }
        Amf3Value::Object {
            class_name,
            sealed,
            dynamic,
        } => {
            out.put_u8(OBJECT);
            let count = sealed.len();
            if count > (U29_MAX >> 4) as usize {
                return Err(AmfError::StringTooLong { len: count });
            }
            // inline object (1), inline traits (2), not externalizable, dynamic flag (8)
            let flags = 0b011 | if dynamic.is_some() { 0b1000 } else { 0 };
            put_u29(out, ((count as u32) << 4) | flags);
            put_string(out, class_name)?;
            for (name, _) in sealed {
                put_string(out, name)?;
            }
            for (_, v) in sealed {
                encode(out, v)?;
            }
            if let Some(members) = dynamic {
                put_members(out, members)?;
            }
        }
        Amf3Value::ByteArray(b) => {
            out.put_u8(BYTE_ARRAY);
            put_inline_len(out, b.len())?;
            out.put_slice(b);
        }
        Amf3Value::Reference(index) => {
            out.put_u8(OBJECT);
            put_u29(out, index << 1);
        }
    }
    Ok(())
}

/// Decodes AMF3 values until the input is exhausted, sharing one set of reference tables.
pub fn decode_all(buf: &[u8]) -> Result<Vec<Amf3Value>, AmfError> {
    let mut r = Reader::new(buf);
    let mut d = Decoder::new();
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(d.decode(&mut r)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Amf3Value) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(&mut out, v).unwrap();
        out.to_vec()
    }

    #[test]
    fn u29_boundaries() {
        for v in [0, 0x7f, 0x80, 0x3fff, 0x4000, 0x1f_ffff, 0x20_0000, U29_MAX] {
            let mut out = BytesMut::new();
            put_u29(&mut out, v);
            let expected_len = match v {
                0..=0x7f => 1,
                0x80..=0x3fff => 2,
                0x4000..=0x1f_ffff => 3,
                _ => 4,
            };
            assert_eq!(out.len(), expected_len, "{v:#x}");
            assert_eq!(read_u29(&mut Reader::new(&out)).unwrap(), v);
        }
    }

    #[test]
    fn integers_sign_extend() {
        for i in [0, 1, -1, INT_MIN, INT_MAX, 1000, -1000] {
            let bytes = enc(&Amf3Value::Integer(i));
            assert_eq!(decode_all(&bytes).unwrap(), vec![Amf3Value::Integer(i)]);
        }
        // out of range integers become doubles
        assert_eq!(
            decode_all(&enc(&Amf3Value::Integer(1 << 29))).unwrap(),
            vec![Amf3Value::Double((1 << 29) as f64)]
        );
    }

    #[test]
    fn string_references_resolve() {
        // "abc", then a reference to string 0
        let wire = [STRING, 0x07, b'a', b'b', b'c', STRING, 0x00];
        assert_eq!(
            decode_all(&wire).unwrap(),
            vec![
                Amf3Value::String("abc".into()),
                Amf3Value::String("abc".into())
            ]
        );
        assert!(matches!(
            decode_all(&[STRING, 0x02]).unwrap_err(),
            AmfError::BadReference {
                index: 1,
                table: "string",
                position: 1
            }
        ));
    }

    #[test]
    fn string_reference_bomb_hits_the_budget() {
        let mut wire = vec![STRING];
        put_inline_len_vec(&mut wire, 60_000);
        wire.extend_from_slice(&[b'x'; 60_000]);
        for _ in 0..100 {
            wire.extend_from_slice(&[STRING, 0x00]);
        }
        assert!(matches!(
            decode_all(&wire).unwrap_err(),
            AmfError::TooLarge { .. }
        ));
    }

    fn put_inline_len_vec(v: &mut Vec<u8>, len: usize) {
        let mut b = BytesMut::new();
        put_inline_len(&mut b, len).unwrap();
        v.extend_from_slice(&b);
    }

    #[test]
    fn objects_with_traits_references_and_dynamic_members() {
        let first = Amf3Value::Object {
            class_name: String::new(),
            sealed: vec![("app".into(), Amf3Value::String("live".into()))],
            dynamic: Some(vec![("fpad".into(), Amf3Value::False)]),
        };
        let mut wire = enc(&first);
        // second object reusing traits 0 (U29O = 0b01: inline object, traits ref 0)
        wire.extend_from_slice(&[OBJECT, 0x01, STRING, 0x07, b'v', b'o', b'd', 0x01]);
        // and a reference to object 0
        wire.extend_from_slice(&[OBJECT, 0x00]);
        let values = decode_all(&wire).unwrap();
        assert_eq!(values[0], first);
        assert_eq!(
            values[1],
            Amf3Value::Object {
                class_name: String::new(),
                sealed: vec![("app".into(), Amf3Value::String("vod".into()))],
                dynamic: Some(vec![]),
            }
        );
        assert_eq!(values[2], Amf3Value::Reference(0));
        // reference 2 does not exist yet
        assert!(matches!(
            decode_all(&[OBJECT, 0x04]).unwrap_err(),
            AmfError::BadReference {
                table: "object",
                ..
            }
        ));
    }

    #[test]
    fn complex_values_round_trip() {
        let v = vec![
            Amf3Value::Array {
                associative: vec![("k".into(), Amf3Value::Null)],
                dense: vec![
                    Amf3Value::Double(1.5),
                    Amf3Value::Undefined,
                    Amf3Value::True,
                ],
            },
            Amf3Value::Date(1.0e12),
            Amf3Value::Xml("<x/>".into()),
            Amf3Value::XmlDocument("<y/>".into()),
            Amf3Value::ByteArray(vec![1, 2, 3]),
            Amf3Value::Reference(1),
            Amf3Value::Object {
                class_name: "C".into(),
                sealed: vec![],
                dynamic: None,
            },
        ];
        let mut out = BytesMut::new();
        for x in &v {
            encode(&mut out, x).unwrap();
        }
        assert_eq!(decode_all(&out).unwrap(), v);
    }

    #[test]
    fn unsupported_and_truncated() {
        assert!(matches!(
            decode_all(&[0x0D, 0x01]).unwrap_err(),
            AmfError::UnsupportedMarker {
                version: 3,
                marker: 0x0D,
                ..
            }
        ));
        assert!(matches!(
            decode_all(&[0x20]).unwrap_err(),
            AmfError::UnknownMarker { .. }
        ));
        assert!(matches!(
            decode_all(&[INTEGER, 0x80]).unwrap_err(),
            AmfError::Truncated { .. }
        ));
        // dense array count far beyond the input
        assert!(matches!(
            decode_all(&[ARRAY, 0xff, 0xff, 0xff, 0xff, 0x01]).unwrap_err(),
            AmfError::CountTooLarge { version: 3, .. }
        ));
    }
}
