//! Building answer packets: the envelope every answer and progress packet has, the
//! request's cookie echoed, and the base64 the protocol wraps text in. A leaf both the
//! connection (`server`) and the calls (`backupm`) use.

use base64::Engine;

use super::error::{code, XmlError};
use super::packet::Element;

/// The priority the real agent gives its answers and progress packets.
pub const PRIORITY: &str = "4000";

/// A packet's envelope as the specification's answers have it: `version`, `id`, `time`,
/// `priority="4000"`; `origin` (the answering interface), `target` (the client's
/// connection), `dst` with an unprefixed `director` (`gend`). The caller appends `data`,
/// then [`src`].
fn packet(id: Option<&str>, client: &str, origin: &str) -> Element {
    let mut p = Element::new("packet").with_attr("version", "4.0.0");
    if let Some(id) = id {
        p = p.with_attr("id", id);
    }
    p.with_attr("time", now_stamp())
        .with_attr("priority", PRIORITY)
        .with_child(Element::new("origin").with_text(origin))
        .with_child(Element::new("target").with_text(client))
        .with_child(Element::new("dst").with_child(Element::new("director").with_text("gend")))
}

/// The route's source, after `data` as in the specification's packets.
fn src() -> Element {
    Element::new("src").with_child(Element::new("director").with_text("gend"))
}

/// `YYYY-MM-DDThh:mm:ss+0000`.
pub fn now_stamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S+0000")
        .to_string()
}

/// A response packet: `body` inside `data/<interface>`.
pub fn response(id: Option<&str>, client: &str, interface: &str, body: Vec<Element>) -> Element {
    let mut inner = Element::new(interface);
    for b in body {
        inner.push(b);
    }
    packet(id, client, interface)
        .with_child(Element::new("data").with_child(inner))
        .with_child(src())
}

/// Echoes a request's `cookie` in its answer, unchanged and first (the protocol's order:
/// `auth`, `cookie`, `target`, …).
pub(crate) fn with_cookie(mut packet: Element, cookie: Option<&Element>) -> Element {
    if let Some(c) = cookie {
        packet.children.insert(0, c.clone());
    }
    packet
}

pub fn error_packet(id: Option<&str>, client: &str, interface: &str, e: &XmlError) -> Element {
    response(id, client, interface, vec![e.element()])
}

fn b64(s: &str) -> Result<String, XmlError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| XmlError::new(code::BAD_PARAMETER, "a base64 value does not decode"))?;
    String::from_utf8(raw)
        .map_err(|_| XmlError::new(code::BAD_PARAMETER, "a base64 value is not UTF-8 text"))
}

/// Decodes a base64 child (the spec's `name`, `password`, `description`, paths).
pub fn b64_of(el: &Element, name: &str) -> Result<Option<String>, XmlError> {
    el.text_of(name).map(b64).transpose()
}

pub fn enc(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}
