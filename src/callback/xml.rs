//! Pure parsing of the push bodies: the outer `<xml><AppId/><Encrypt/></xml>` envelope and the
//! decrypted inner event. Both are flat: the root's child elements with text or CDATA.
//!
//! A DOCTYPE is refused outright and only XML's predefined entities are understood, so no
//! entity expansion can happen. Field count and depth are bounded.

use std::borrow::Cow;
use std::collections::BTreeMap;

use quick_xml::events::Event;
use quick_xml::Reader;

const MAX_FIELDS: usize = 64;
const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("body is not well-formed XML")]
    Malformed,
    #[error("XML with a DOCTYPE is refused")]
    Doctype,
    #[error("XML has too many fields or is nested too deeply")]
    TooComplex,
    #[error("XML lacks the {0} field")]
    Missing(&'static str),
    #[error("XML field {0} is not valid")]
    Invalid(&'static str),
}

/// The outer body of a push. Values borrow from the body where they can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Plain-text appid (not authenticated; the encrypted one is what counts).
    pub app_id: Option<Cow<'a, str>>,
    pub encrypt: Cow<'a, str>,
}

/// The decrypted event. Values borrow from the plaintext where they can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerEvent<'a> {
    pub app_id: Cow<'a, str>,
    pub create_time: i64,
    pub info_type: Cow<'a, str>,
    /// The other fields, in no particular order.
    pub fields: Vec<(Cow<'static, str>, Cow<'a, str>)>,
}

impl InnerEvent<'_> {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// A field name: the ones the push path reads are static, so naming them costs nothing.
type Name = Cow<'static, str>;

fn name_of(raw: &str) -> Name {
    const KNOWN: [&str; 6] = [
        "AppId",
        "Encrypt",
        "CreateTime",
        "InfoType",
        "ComponentVerifyTicket",
        "ToUserName",
    ];
    match KNOWN.iter().find(|k| **k == raw) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(raw.to_owned()),
    }
}

/// The root element's direct children that `want` names, in document order (the first
/// occurrence of a name wins). Values borrow from `body` where they can (a single CDATA or
/// text without entities); values of other fields are never copied.
fn scan<'a>(
    body: &'a [u8],
    want: impl Fn(&str) -> bool,
) -> Result<Vec<(Name, Cow<'a, str>)>, XmlError> {
    let mut reader = Reader::from_reader(body);
    let mut fields: Vec<(Name, Cow<'a, str>)> = Vec::with_capacity(4);
    let mut seen = 0usize;
    let mut depth = 0usize;
    // The field being read: its name and the value so far (None until a piece arrives).
    let mut current: Option<(Name, Option<Cow<'a, str>>)> = None;
    let mut saw_root = false;
    let append = |value: &mut Option<Cow<'a, str>>, piece: Cow<'a, str>| match value {
        None => *value = Some(piece),
        Some(v) => v.to_mut().push_str(&piece),
    };
    loop {
        match reader.read_event().map_err(|_| XmlError::Malformed)? {
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Start(e) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(XmlError::TooComplex);
                }
                if depth == 1 {
                    if saw_root {
                        return Err(XmlError::Malformed);
                    }
                    saw_root = true;
                } else if depth == 2 {
                    seen += 1;
                    if seen > MAX_FIELDS {
                        return Err(XmlError::TooComplex);
                    }
                    let qname = e.name();
                    let name =
                        std::str::from_utf8(qname.as_ref()).map_err(|_| XmlError::Malformed)?;
                    current = (want(name) && !fields.iter().any(|(n, _)| n == name))
                        .then(|| (name_of(name), None));
                }
            }
            // A second (empty) root element.
            Event::Empty(_) if depth == 0 => return Err(XmlError::Malformed),
            Event::Empty(e) if depth == 1 => {
                seen += 1;
                let qname = e.name();
                let name = std::str::from_utf8(qname.as_ref()).map_err(|_| XmlError::Malformed)?;
                if want(name) && !fields.iter().any(|(n, _)| n == name) {
                    fields.push((name_of(name), Cow::Borrowed("")));
                }
            }
            Event::Text(t) if depth == 2 => {
                if let Some((_, value)) = current.as_mut() {
                    let piece = match t.into_inner() {
                        Cow::Borrowed(raw) if !raw.contains(&b'&') => Cow::Borrowed(
                            std::str::from_utf8(raw).map_err(|_| XmlError::Malformed)?,
                        ),
                        raw => {
                            let text =
                                std::str::from_utf8(&raw).map_err(|_| XmlError::Malformed)?;
                            Cow::Owned(
                                quick_xml::escape::unescape(text)
                                    .map_err(|_| XmlError::Malformed)?
                                    .into_owned(),
                            )
                        }
                    };
                    append(value, piece);
                }
            }
            Event::CData(c) if depth == 2 => {
                if let Some((_, value)) = current.as_mut() {
                    let piece = match c.into_inner() {
                        Cow::Borrowed(raw) => Cow::Borrowed(
                            std::str::from_utf8(raw).map_err(|_| XmlError::Malformed)?,
                        ),
                        Cow::Owned(raw) => {
                            Cow::Owned(String::from_utf8(raw).map_err(|_| XmlError::Malformed)?)
                        }
                    };
                    append(value, piece);
                }
            }
            Event::End(_) => {
                if depth == 2 {
                    if let Some((name, value)) = current.take() {
                        fields.push((name, value.unwrap_or(Cow::Borrowed(""))));
                    }
                }
                depth = depth.checked_sub(1).ok_or(XmlError::Malformed)?;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root || depth != 0 {
        return Err(XmlError::Malformed);
    }
    Ok(fields)
}

fn take<'a>(fields: &mut Vec<(Name, Cow<'a, str>)>, name: &str) -> Option<Cow<'a, str>> {
    let i = fields.iter().position(|(n, _)| n == name)?;
    Some(fields.swap_remove(i).1)
}

/// Every direct child of the root, by name (the first occurrence wins).
pub fn flat_fields(body: &[u8]) -> Result<BTreeMap<String, String>, XmlError> {
    Ok(scan(body, |_| true)?
        .into_iter()
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect())
}

pub fn parse_envelope(body: &[u8]) -> Result<Envelope<'_>, XmlError> {
    let mut fields = scan(body, |n| n == "Encrypt" || n == "AppId")?;
    let encrypt = take(&mut fields, "Encrypt")
        .filter(|e| !e.trim().is_empty())
        .ok_or(XmlError::Missing("Encrypt"))?;
    Ok(Envelope {
        app_id: take(&mut fields, "AppId"),
        encrypt,
    })
}

pub fn parse_event(plain: &[u8]) -> Result<InnerEvent<'_>, XmlError> {
    let mut fields = scan(plain, |_| true)?;
    let app_id = take(&mut fields, "AppId").ok_or(XmlError::Missing("AppId"))?;
    let info_type = take(&mut fields, "InfoType").ok_or(XmlError::Missing("InfoType"))?;
    let create_time = take(&mut fields, "CreateTime")
        .ok_or(XmlError::Missing("CreateTime"))?
        .trim()
        .parse()
        .map_err(|_| XmlError::Invalid("CreateTime"))?;
    Ok(InnerEvent {
        app_id,
        create_time,
        info_type,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn envelope_with_cdata_and_no_to_user_name() {
        let e = parse_envelope(
            b"<xml><AppId><![CDATA[wx1]]></AppId><Encrypt><![CDATA[abc+/=]]></Encrypt></xml>",
        )
        .unwrap();
        assert_eq!(e.app_id.as_deref(), Some("wx1"));
        assert!(
            matches!(e.encrypt, Cow::Borrowed(_)),
            "no copy of the ciphertext"
        );
        assert_eq!(e.encrypt, "abc+/=");
    }

    #[test]
    fn envelope_with_plain_text_and_extra_fields() {
        let e = parse_envelope(
            b"<xml>\n <ToUserName>gh</ToUserName>\n <Encrypt>x&amp;y</Encrypt></xml>",
        )
        .unwrap();
        assert_eq!(e.app_id, None);
        assert_eq!(e.encrypt, "x&y");
    }

    #[test]
    fn ticket_event() {
        let ev = parse_event(b"<xml><AppId><![CDATA[wx1]]></AppId><CreateTime>1413192605</CreateTime><InfoType><![CDATA[component_verify_ticket]]></InfoType><ComponentVerifyTicket><![CDATA[ticket@@@T]]></ComponentVerifyTicket></xml>").unwrap();
        assert_eq!(ev.app_id, "wx1");
        assert_eq!(ev.create_time, 1413192605);
        assert_eq!(ev.info_type, "component_verify_ticket");
        assert_eq!(ev.field("ComponentVerifyTicket"), Some("ticket@@@T"));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            parse_envelope(b"<xml><AppId>a</AppId></xml>"),
            Err(XmlError::Missing("Encrypt"))
        );
        assert_eq!(
            parse_envelope(b"<xml><Encrypt>  </Encrypt></xml>"),
            Err(XmlError::Missing("Encrypt"))
        );
        assert_eq!(
            parse_envelope(b"not xml at all <"),
            Err(XmlError::Malformed)
        );
        assert_eq!(
            parse_envelope(b"<xml><Encrypt>a</Encrypt>"),
            Err(XmlError::Malformed)
        );
        assert_eq!(
            parse_envelope(b"<xml><Encrypt>a</Encrypt></xml><xml/>"),
            Err(XmlError::Malformed)
        );
        assert_eq!(
            parse_envelope(b"<!DOCTYPE x [<!ENTITY e \"boom\">]><xml><Encrypt>&e;</Encrypt></xml>"),
            Err(XmlError::Doctype)
        );
        assert_eq!(
            parse_envelope(b"<xml><Encrypt>&e;</Encrypt></xml>"),
            Err(XmlError::Malformed)
        );
        assert_eq!(
            parse_event(
                b"<xml><AppId>a</AppId><InfoType>x</InfoType><CreateTime>soon</CreateTime></xml>"
            ),
            Err(XmlError::Invalid("CreateTime"))
        );
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(20), "</a>".repeat(20));
        assert_eq!(parse_envelope(deep.as_bytes()), Err(XmlError::TooComplex));
        let wide: String = (0..100).map(|i| format!("<f{i}>x</f{i}>")).collect();
        assert_eq!(
            parse_envelope(format!("<xml>{wide}</xml>").as_bytes()),
            Err(XmlError::TooComplex)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_envelope(&bytes);
            let _ = parse_event(&bytes);
        }
    }
}
