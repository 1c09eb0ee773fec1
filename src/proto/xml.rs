//! The one reader of XML from peers (ONVIF device, media and event services, Hikvision
//! alerts, WS-Discovery), bounded in memory and linear in time whatever it is fed.
//!
//! [`walk`] drives quick-xml over a byte slice and calls back with each element opened or
//! closed and each piece of text, together with the [`Path`] of local names (namespace
//! prefixes dropped, since cameras use every prefix there is). Limits: [`MAX_BYTES`] of input,
//! [`MAX_DEPTH`] levels of nesting, [`MAX_NODES`] nodes. Because the path never holds more
//! than `MAX_DEPTH` names, a callback that looks up the path (`path.contains("Data")`) costs a
//! bounded amount per node: a deeply nested reply cannot make a parser quadratic. Entities
//! are never expanded: the five predefined ones and character references are resolved,
//! anything else (and every DTD) is ignored.

use std::ops::ControlFlow;

use quick_xml::events::{BytesStart, Event};

/// The largest document read.
pub const MAX_BYTES: usize = 1 << 20;
/// The deepest nesting read (a SOAP notification is about 12 deep).
pub const MAX_DEPTH: usize = 32;
/// The most nodes (elements and texts) read from one document.
pub const MAX_NODES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("XML larger than {MAX_BYTES} bytes")]
    TooLarge,
    #[error("XML nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("XML with more than {MAX_NODES} nodes")]
    TooManyNodes,
    #[error("bad XML at byte {at}: {what}")]
    Syntax { at: u64, what: String },
}

/// The local names of the open elements, outermost first (at most [`MAX_DEPTH`]).
#[derive(Debug, Default)]
pub struct Path {
    names: Vec<String>,
}

impl Path {
    pub fn last(&self) -> Option<&str> {
        self.names.last().map(String::as_str)
    }

    /// The name of the element enclosing the last one.
    pub fn parent(&self) -> Option<&str> {
        self.names.iter().rev().nth(1).map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    pub fn depth(&self) -> usize {
        self.names.len()
    }
}

/// An element as opened, with its attributes.
pub struct Element<'a, 'b> {
    start: &'b BytesStart<'a>,
    /// `<x/>`: a Close follows at once.
    pub empty: bool,
}

impl Element<'_, '_> {
    /// The value of the attribute with this local name.
    pub fn attr(&self, name: &str) -> Option<String> {
        // Without quick-xml's duplicate checks (quadratic on a crafted element), and at most
        // 64 attributes looked at.
        self.start
            .attributes()
            .with_checks(false)
            .take(64)
            .flatten()
            .find(|a| local(a.key.as_ref()) == name)
            .map(|a| String::from_utf8_lossy(&a.value).into_owned())
    }
}

pub enum Node<'x, 'a, 'b> {
    /// An element opened; the path ends with its name.
    Open(&'x Element<'a, 'b>),
    /// An element closed; the path still ends with its name.
    Close,
    /// Text inside the element the path ends with (entities resolved, trimmed, never empty).
    Text(&'x str),
}

/// The local part of a (possibly prefixed) name.
pub fn local(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(name);
    s.rsplit(':').next().unwrap_or("").to_string()
}

fn resolve(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => {
            let n = name.strip_prefix('#')?;
            let v = match n.strip_prefix('x').or_else(|| n.strip_prefix('X')) {
                Some(h) => u32::from_str_radix(h, 16).ok()?,
                None => n.parse().ok()?,
            };
            char::from_u32(v).filter(|&c| c != '\0')?
        }
    })
}

/// Walks `xml`, calling `f` for every node until the end or until `f` breaks.
pub fn walk<F>(xml: &[u8], mut f: F) -> Result<(), XmlError>
where
    F: FnMut(&Path, Node<'_, '_, '_>) -> ControlFlow<()>,
{
    if xml.len() > MAX_BYTES {
        return Err(XmlError::TooLarge);
    }
    let mut r = quick_xml::Reader::from_reader(xml);
    r.config_mut().trim_text(false);
    let mut path = Path::default();
    let mut text = String::new();
    let mut nodes = 0usize;
    // Text arrives in pieces (text, entity, text): hand it over whole, before the next tag.
    let flush = |path: &Path, text: &mut String, f: &mut F| -> ControlFlow<()> {
        let t = text.trim();
        let r = if t.is_empty() || path.depth() == 0 {
            ControlFlow::Continue(())
        } else {
            f(path, Node::Text(t))
        };
        text.clear();
        r
    };
    // `?` for ControlFlow inside a function that returns a Result: a break ends the walk.
    macro_rules! go {
        ($e:expr) => {
            if $e.is_break() {
                return Ok(());
            }
        };
    }
    loop {
        let ev = r.read_event().map_err(|e| XmlError::Syntax {
            at: r.error_position(),
            what: e.to_string(),
        })?;
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(XmlError::TooManyNodes);
        }
        match ev {
            Event::Text(t) => {
                text.push_str(&String::from_utf8_lossy(t.as_ref()));
            }
            Event::CData(t) => {
                text.push_str(&String::from_utf8_lossy(t.as_ref()));
            }
            Event::GeneralRef(g) => {
                if let Some(c) = resolve(&String::from_utf8_lossy(g.as_ref())) {
                    text.push(c);
                }
            }
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                go!(flush(&path, &mut text, &mut f));
                if path.depth() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                path.names.push(local(e.local_name().as_ref()));
                let el = Element { start: e, empty };
                go!(f(&path, Node::Open(&el)));
                if empty {
                    go!(f(&path, Node::Close));
                    path.names.pop();
                }
            }
            Event::End(_) => {
                go!(flush(&path, &mut text, &mut f));
                go!(f(&path, Node::Close));
                path.names.pop();
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

/// Text of every element by local name, in document order: `(local name, text)`.
pub fn texts(xml: &[u8]) -> Result<Vec<(String, String)>, XmlError> {
    let mut out = Vec::new();
    walk(xml, |path, node| {
        if let (Node::Text(t), Some(name)) = (node, path.last()) {
            out.push((name.to_string(), t.to_string()));
        }
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_by_local_name_with_entities_resolved() {
        let x = br#"<?xml version="1.0"?><s:Envelope xmlns:s="x"><s:Body><tt:Model>A &amp; B &#x41;&lt;</tt:Model><Empty/><Junk>&bogus;x</Junk></s:Body></s:Envelope>"#;
        assert_eq!(
            texts(x).unwrap(),
            vec![
                ("Model".to_string(), "A & B A<".to_string()),
                ("Junk".to_string(), "x".to_string())
            ]
        );
    }

    #[test]
    fn a_deep_document_is_refused_at_the_depth_bound_not_walked() {
        let mut x = Vec::new();
        for _ in 0..100_000 {
            x.extend_from_slice(b"<a>");
        }
        assert_eq!(texts(&x).unwrap_err(), XmlError::TooDeep);
        let ok = "<a>".repeat(MAX_DEPTH) + "t" + &"</a>".repeat(MAX_DEPTH);
        assert_eq!(texts(ok.as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn size_and_node_bounds_hold() {
        let big = vec![b' '; MAX_BYTES + 1];
        assert_eq!(texts(&big).unwrap_err(), XmlError::TooLarge);
        let many = "<a/>".repeat(MAX_NODES + 1);
        let many = format!("<r>{many}</r>");
        assert_eq!(texts(many.as_bytes()).unwrap_err(), XmlError::TooManyNodes);
    }

    #[test]
    fn entity_declarations_are_not_expanded() {
        let x =
            br#"<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><r>&b;&b;</r>"#;
        assert_eq!(texts(x).unwrap(), vec![]);
    }

    #[test]
    fn a_callback_can_stop_the_walk() {
        let mut seen = 0;
        walk(b"<r><a>1</a><a>2</a></r>", |_, n| {
            if matches!(n, Node::Text(_)) {
                seen += 1;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(seen, 1);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = texts(&b);
        }
    }
}
