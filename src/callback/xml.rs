//! Pure parsing of the push bodies: the outer `<xml><AppId/><Encrypt/></xml>` envelope and the
//! decrypted inner event. Both are flat: the root's child elements with text or CDATA.
//!
//! A DOCTYPE is refused outright and only XML's predefined entities are understood, so no
//! entity expansion can happen. Field count and depth are bounded.

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

/// The outer body of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Plain-text appid (not authenticated; the encrypted one is what counts).
    pub app_id: Option<String>,
    pub encrypt: String,
}

/// The decrypted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerEvent {
    pub app_id: String,
    pub create_time: i64,
    pub info_type: String,
    pub fields: BTreeMap<String, String>,
}

impl InnerEvent {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// The root element's direct children, by name (the first occurrence wins).
pub fn flat_fields(body: &[u8]) -> Result<BTreeMap<String, String>, XmlError> {
    let mut reader = Reader::from_reader(body);
    let mut fields = BTreeMap::new();
    let mut depth = 0usize;
    let mut current: Option<(String, String)> = None;
    let mut saw_root = false;
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
                    let name = std::str::from_utf8(e.name().as_ref())
                        .map_err(|_| XmlError::Malformed)?
                        .to_owned();
                    current = Some((name, String::new()));
                }
            }
            // A second (empty) root element.
            Event::Empty(_) if depth == 0 => return Err(XmlError::Malformed),
            Event::Empty(e) if depth == 1 => {
                let qname = e.name();
                let name = std::str::from_utf8(qname.as_ref()).map_err(|_| XmlError::Malformed)?;
                fields.entry(name.to_owned()).or_insert_with(String::new);
            }
            Event::Text(t) if depth == 2 => {
                let text = t.unescape().map_err(|_| XmlError::Malformed)?;
                if let Some((_, value)) = current.as_mut() {
                    value.push_str(&text);
                }
            }
            Event::CData(c) if depth == 2 => {
                let text = std::str::from_utf8(&c).map_err(|_| XmlError::Malformed)?;
                if let Some((_, value)) = current.as_mut() {
                    value.push_str(text);
                }
            }
            Event::End(_) => {
                if depth == 2 {
                    if let Some((name, value)) = current.take() {
                        fields.entry(name).or_insert(value);
                        if fields.len() > MAX_FIELDS {
                            return Err(XmlError::TooComplex);
                        }
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

pub fn parse_envelope(body: &[u8]) -> Result<Envelope, XmlError> {
    let mut fields = flat_fields(body)?;
    let encrypt = fields
        .remove("Encrypt")
        .filter(|e| !e.trim().is_empty())
        .ok_or(XmlError::Missing("Encrypt"))?;
    Ok(Envelope {
        app_id: fields.remove("AppId"),
        encrypt,
    })
}

pub fn parse_event(plain: &[u8]) -> Result<InnerEvent, XmlError> {
    let mut fields = flat_fields(plain)?;
    let app_id = fields.remove("AppId").ok_or(XmlError::Missing("AppId"))?;
    let info_type = fields
        .remove("InfoType")
        .ok_or(XmlError::Missing("InfoType"))?;
    let create_time = fields
        .remove("CreateTime")
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
