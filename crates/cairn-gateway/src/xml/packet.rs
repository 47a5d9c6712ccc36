//! Packets of the Virtuozzo Agent XML API as a small element tree.
//!
//! Design: requests come from many clients (Perl, PHP, Python, Ruby, hand-written scripts) with
//! or without namespaces, pretty-printed or not, so the parser keeps only *local* names and
//! throws namespaces away; callers look elements up by name and never depend on order. Text is
//! kept exactly as sent (accessors like [`Element::text_of`] trim). The parser is defensive: the
//! input must be UTF-8, DTDs are refused outright (no entity expansion, hence no billion
//! laughs), only the five predefined entities and character references are understood, and
//! nesting depth and element count are capped so that a hostile packet costs at most a bounded
//! amount of work and memory. It never panics on any input.
//!
//! The writer produces responses in the real agent's shape: `ns1:` (protocol namespace) for
//! the envelope and `progress`, `ns2:` (the interface's namespace) for the interface element
//! inside `data` and everything below it. Output is deterministic; characters XML 1.0 cannot
//! carry (control characters, U+FFFE/U+FFFF) are written as U+FFFD so strict clients never
//! choke on a response.

use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::{QName, ResolveResult};
use quick_xml::{NsReader, Writer};

/// The namespace of the packet envelope (`packet`, `target`, `data`, `progress`, …).
pub const PROTOCOL_NS: &str = "http://www.swsoft.com/webservices/vzl/4.0.0/protocol";

/// XML Schema instance namespace (`xsi:type`, `xsi:nil`): such attributes are dropped.
const XSI_NS: &[u8] = b"http://www.w3.org/2001/XMLSchema-instance";

/// Deepest nesting accepted (the root is at depth 1).
pub const MAX_DEPTH: usize = 32;

/// Most elements accepted in one packet (the root included).
pub const MAX_ELEMENTS: usize = 10_000;

/// Longest id [`salvage_id`] returns.
const MAX_SALVAGED_ID: usize = 64;

/// Longest detail kept in an error message (names and quick-xml messages may echo input).
const MAX_DETAIL: usize = 160;

/// The namespace of an interface's elements:
/// `http://www.swsoft.com/webservices/vzl/4.0.0/<interface>`.
pub fn interface_ns(interface: &str) -> String {
    format!("http://www.swsoft.com/webservices/vzl/4.0.0/{interface}")
}

/// One XML element, by local name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    /// Local name (any prefix dropped).
    pub name: String,
    /// Attributes by local name, in document order; namespace declarations and
    /// XMLSchema-instance attributes (`xsi:type`, …) dropped; values unescaped.
    pub attrs: Vec<(String, String)>,
    /// Child elements, in document order.
    pub children: Vec<Element>,
    /// Text and CDATA directly inside, concatenated, unescaped, not trimmed.
    pub text: String,
}

impl Element {
    /// An element without attributes, children or text.
    pub fn new(name: &str) -> Element {
        Element {
            name: name.to_string(),
            ..Element::default()
        }
    }

    /// Sets the text.
    pub fn with_text(mut self, text: impl Into<String>) -> Element {
        self.text = text.into();
        self
    }

    /// Sets an attribute: replaces the value of an attribute of that name (keeping its
    /// position), or appends it.
    pub fn with_attr(mut self, name: &str, value: impl Into<String>) -> Element {
        let value = value.into();
        match self.attrs.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name.to_string(), value)),
        }
        self
    }

    /// Appends a child.
    pub fn with_child(mut self, child: Element) -> Element {
        self.children.push(child);
        self
    }

    /// Appends a child.
    pub fn push(&mut self, child: Element) {
        self.children.push(child);
    }

    /// The first child with that local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child with that local name, in document order.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Whether a child of that name is present (a "flag" element such as `<force/>`).
    pub fn has(&self, name: &str) -> bool {
        self.child(name).is_some()
    }

    /// The text of the first child of that name, trimmed.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    /// The value of an attribute, by local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Descends by local names, taking the first match at each step; `path(&[])` is `self`.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        names.iter().try_fold(self, |el, name| el.child(name))
    }
}

/// Why a packet could not be parsed. Messages are meant for operators (and for the `message`
/// of an error answer).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Not well-formed XML; the message says where (`malformed XML at byte N: …`).
    #[error("{0}")]
    Malformed(String),
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("elements nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// More than [`MAX_ELEMENTS`] elements.
    #[error("more than {MAX_ELEMENTS} elements in one packet")]
    TooManyElements,
    /// The bytes are not UTF-8.
    #[error("packet is not valid UTF-8")]
    NotUtf8,
    /// No root element at all.
    #[error("empty packet: no root element")]
    Empty,
    /// The root element is not `packet` (its local name is given).
    #[error("root element is <{0}>, expected <packet>")]
    WrongRoot(String),
    /// A `<!DOCTYPE …>`: refused, we never expand entities.
    #[error("DTDs (<!DOCTYPE …>) are not accepted")]
    DocType,
}

/// Cuts `s` to at most [`MAX_DETAIL`] characters.
fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_DETAIL) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

fn malformed(at: u64, what: impl std::fmt::Display) -> ParseError {
    ParseError::Malformed(format!(
        "malformed XML at byte {at}: {}",
        clip(&what.to_string())
    ))
}

fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Parses one packet document (the bytes between NULs).
///
/// Limits: depth ≤ [`MAX_DEPTH`], elements ≤ [`MAX_ELEMENTS`]; DTDs are refused. Tolerates a
/// leading UTF-8 BOM, the XML declaration, comments, processing instructions, whitespace
/// anywhere, any namespace prefixes (declared or not) and `xsi:*` attributes (dropped, as are
/// attributes whose prefix maps to the XMLSchema-instance namespace). The root element's local
/// name must be `packet`. Never panics.
pub fn parse_packet(bytes: &[u8]) -> Result<Element, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ParseError::NotUtf8)?;
    let (bom, text) = match text.strip_prefix('\u{feff}') {
        Some(rest) => (3u64, rest),
        None => (0u64, text),
    };
    if text.bytes().all(is_xml_space) {
        return Err(ParseError::Empty);
    }

    let mut reader = NsReader::from_str(text);
    reader.config_mut().trim_text(false);

    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;

    loop {
        let at = bom + reader.buffer_position();
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => return Err(malformed(bom + reader.error_position(), e)),
        };
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                if root.is_some() {
                    return Err(malformed(at, "element after the end of the root element"));
                }
                if stack.len() + 1 > MAX_DEPTH {
                    return Err(ParseError::TooDeep);
                }
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(ParseError::TooManyElements);
                }
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if stack.is_empty() && name != "packet" {
                    return Err(ParseError::WrongRoot(clip(&name)));
                }
                let mut el = Element::new(&name);
                for attr in start.attributes() {
                    let attr = attr.map_err(|e| malformed(at, e))?;
                    if keep_attr(&reader, attr.key) {
                        let local = attr.key.local_name();
                        let value = attr.unescape_value().map_err(|e| malformed(at, e))?;
                        el.attrs.push((
                            String::from_utf8_lossy(local.as_ref()).into_owned(),
                            value.into_owned(),
                        ));
                    }
                }
                if matches!(event, Event::Start(_)) {
                    stack.push(el);
                } else {
                    attach(&mut stack, &mut root, el);
                }
            }
            Event::End(_) => match stack.pop() {
                Some(el) => attach(&mut stack, &mut root, el),
                None => return Err(malformed(at, "end tag without a start tag")),
            },
            Event::Text(t) => {
                let s = t.unescape().map_err(|e| malformed(at, e))?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&s),
                    None if s.bytes().all(is_xml_space) => {}
                    None => return Err(malformed(at, "text outside the root element")),
                }
            }
            Event::CData(c) => {
                let s = c.decode().map_err(|e| malformed(at, e))?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&s),
                    None => return Err(malformed(at, "CDATA outside the root element")),
                }
            }
            Event::DocType(_) => return Err(ParseError::DocType),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }

    if let Some(open) = stack.last() {
        let at = bom + reader.buffer_position();
        return Err(malformed(
            at,
            format!("unexpected end of input inside <{}>", clip(&open.name)),
        ));
    }
    root.ok_or(ParseError::Empty)
}

/// Whether an attribute is kept: namespace declarations and XMLSchema-instance attributes are
/// not.
fn keep_attr(reader: &NsReader<&[u8]>, key: QName) -> bool {
    if key.as_namespace_binding().is_some() {
        return false;
    }
    if key.prefix().is_some_and(|p| p.as_ref() == b"xsi") {
        return false;
    }
    !matches!(reader.resolve_attribute(key).0, ResolveResult::Bound(ns) if ns.as_ref() == XSI_NS)
}

/// Hangs a finished element under its parent, or makes it the root.
fn attach(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

/// Best effort for error answers when the bytes are too broken to parse: the `id` attribute
/// of the first `<packet …` (any prefix) start tag, read even if the tag or document is cut
/// short after it, when it is 1..=64 characters of `[A-Za-z0-9._:-]`; `None` otherwise.
pub fn salvage_id(bytes: &[u8]) -> Option<String> {
    let mut i = 0;
    while let Some(off) = bytes.get(i..)?.iter().position(|&b| b == b'<') {
        let start = i + off + 1;
        let name_len = bytes[start..]
            .iter()
            .position(|&b| !is_name_byte(b))
            .unwrap_or(bytes.len() - start);
        let name = &bytes[start..start + name_len];
        let local = match name.iter().rposition(|&b| b == b':') {
            Some(colon) => &name[colon + 1..],
            None => name,
        };
        let after = start + name_len;
        let ends_name = match bytes.get(after) {
            Some(&b) => is_xml_space(b) || b == b'>' || b == b'/',
            None => true,
        };
        if local == b"packet" && ends_name {
            return id_in_tag(&bytes[after..]);
        }
        i = start;
    }
    None
}

/// Bytes that may belong to a tag name for [`salvage_id`]'s purposes.
fn is_name_byte(b: u8) -> bool {
    !is_xml_space(b) && !matches!(b, b'<' | b'>' | b'/' | b'=' | b'"' | b'\'' | 0)
}

/// Reads the attributes of a start tag (from just after its name) looking for `id`.
fn id_in_tag(tag: &[u8]) -> Option<String> {
    let mut i = 0;
    loop {
        while tag.get(i).is_some_and(|&b| is_xml_space(b)) {
            i += 1;
        }
        let name_start = i;
        while tag.get(i).is_some_and(|&b| is_name_byte(b)) {
            i += 1;
        }
        let name = &tag[name_start..i];
        if name.is_empty() {
            return None; // `>`, `/>`, end of input or garbage: no id
        }
        while tag.get(i).is_some_and(|&b| is_xml_space(b)) {
            i += 1;
        }
        if tag.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        while tag.get(i).is_some_and(|&b| is_xml_space(b)) {
            i += 1;
        }
        let quote = *tag.get(i).filter(|&&q| q == b'"' || q == b'\'')?;
        i += 1;
        let len = tag[i..].iter().position(|&b| b == quote)?;
        let value = &tag[i..i + len];
        i += len + 1;
        if name == b"id" {
            let ok = (1..=MAX_SALVAGED_ID).contains(&value.len())
                && value
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
            // The bytes are ASCII, hence valid UTF-8.
            return ok.then(|| String::from_utf8_lossy(value).into_owned());
        }
    }
}

/// How the writer names an element and its children.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ns {
    /// No prefixes ([`write_plain`]).
    Plain,
    /// The response's root: `ns1:`, declares `ns1`; its `data` child is [`Ns::Data`].
    Root,
    /// The root's `data`: `ns1:`; its children are interface elements (or `progress`).
    Data,
    /// `ns1:` all the way down.
    Protocol,
    /// The root's `dst`: `ns1:`; its children are unprefixed (no namespace), as the
    /// specification's packets write `<ns1:dst><director>gend</director></ns1:dst>`.
    Dst,
    /// An interface element directly inside `data`: `ns2:`, declares `ns2`.
    Interface,
    /// `ns2:` all the way down.
    InInterface,
}

impl Ns {
    fn prefix(self) -> &'static str {
        match self {
            Ns::Plain => "",
            Ns::Root | Ns::Data | Ns::Protocol | Ns::Dst => "ns1:",
            Ns::Interface | Ns::InInterface => "ns2:",
        }
    }

    fn for_child(self, child: &Element) -> Ns {
        match self {
            Ns::Plain => Ns::Plain,
            Ns::Root if child.name == "data" => Ns::Data,
            Ns::Root if child.name == "dst" => Ns::Dst,
            Ns::Dst => Ns::Plain,
            Ns::Root | Ns::Protocol => Ns::Protocol,
            Ns::Data if child.name == "progress" => Ns::Protocol,
            Ns::Data => Ns::Interface,
            Ns::Interface | Ns::InInterface => Ns::InInterface,
        }
    }
}

/// Serializes a response packet: `<?xml version="1.0" encoding="UTF-8"?>` then the tree.
///
/// The root and every element outside `data`'s interface child are in prefix `ns1` (declared
/// on the root as `xmlns:ns1=`[`PROTOCOL_NS`]), but for the children of the root's `dst`,
/// which are unprefixed as in the specification's packets; an element directly inside the root's `data`
/// other than `progress` (e.g. `backupm`, `system`) and all its descendants are in prefix
/// `ns2`, declared on that element as `xmlns:ns2=`[`interface_ns`]`(its name)`. Namespace
/// declarations come first, then the attributes unprefixed, in order. Text is written before
/// children. Does not append the NUL ([`super::frame::frame`] does).
pub fn write_packet(root: &Element) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    emit(
        &mut w,
        Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)),
    );
    write_element(&mut w, root, Ns::Root);
    w.into_inner()
}

/// Serializes a tree without namespaces or declaration (requests, for tests and tools):
/// `parse_packet(&write_plain(&e)) == Ok(e)` for a `packet` tree of plain names, unique
/// attribute names and text made of characters XML can carry.
pub fn write_plain(root: &Element) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    write_element(&mut w, root, Ns::Plain);
    w.into_inner()
}

fn write_element(w: &mut Writer<Vec<u8>>, el: &Element, ns: Ns) {
    let name = format!("{}{}", ns.prefix(), el.name);
    let mut start = BytesStart::new(name.as_str());
    match ns {
        Ns::Root => push_attr(&mut start, "xmlns:ns1", PROTOCOL_NS),
        Ns::Interface => push_attr(&mut start, "xmlns:ns2", &interface_ns(&el.name)),
        _ => {}
    }
    for (key, value) in &el.attrs {
        push_attr(&mut start, key, value);
    }
    if el.text.is_empty() && el.children.is_empty() {
        emit(w, Event::Empty(start));
        return;
    }
    emit(w, Event::Start(start));
    if !el.text.is_empty() {
        emit(
            w,
            Event::Text(BytesText::from_escaped(escape(&el.text, false))),
        );
    }
    for child in &el.children {
        write_element(w, child, ns.for_child(child));
    }
    emit(w, Event::End(BytesEnd::new(name.as_str())));
}

fn push_attr(start: &mut BytesStart, key: &str, value: &str) {
    let value = escape(value, true);
    start.push_attribute(Attribute {
        key: QName(key.as_bytes()),
        value: value.into_bytes().into(),
    });
}

fn emit(w: &mut Writer<Vec<u8>>, event: Event) {
    // Writing into a Vec cannot fail.
    w.write_event(event).expect("writing XML into memory");
}

/// Escapes `&`, `<`, `>` (and in attributes `"`, plus tab and newline so that attribute-value
/// normalization in the client's parser keeps them); `\r` as a character reference so that
/// end-of-line normalization keeps it; characters XML 1.0 cannot carry become U+FFFD.
fn escape(s: &str, attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            '\t' if attr => out.push_str("&#9;"),
            '\n' if attr => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            _ => out.push('\u{fffd}'),
        }
    }
    out
}

/// The `Char` production of XML 1.0.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests {
    use super::super::fuzzkit;
    use super::*;
    use proptest::prelude::*;

    const EID: &str = "6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21";
    const BACKUP: &str = "6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21/20261122081500";

    fn corpus(name: &str) -> Vec<u8> {
        fuzzkit::corpus_file(name)
    }

    fn parse(s: &str) -> Element {
        parse_packet(s.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{s}"))
    }

    fn call<'a>(p: &'a Element, iface: &str, name: &str) -> &'a Element {
        p.path(&["data", iface, name])
            .unwrap_or_else(|| panic!("no data/{iface}/{name} in {p:?}"))
    }

    fn check_login(p: &Element) {
        assert_eq!(p.attr("id"), Some("1"));
        assert_eq!(p.attr("version"), Some("4.0.0"));
        assert!(!p.has("target"), "a system call has no target");
        let login = call(p, "system", "login");
        assert_eq!(login.text_of("name"), Some("cm9vdA=="));
        assert_eq!(login.text_of("password"), Some("c2VjcmV0"));
        assert_eq!(
            login.text_of("realm"),
            Some("00000000-0000-0000-0000-000000000000")
        );
        assert_eq!(login.text_of("domain"), None);
    }

    fn check_backup_env(p: &Element) {
        assert_eq!(p.attr("id"), Some("b17"));
        assert_eq!(p.attr("progress"), Some("on"));
        assert_eq!(p.text_of("target"), Some("backupm"));
        let call = call(p, "backupm", "backup_env");
        let eids: Vec<&str> = call
            .path(&["env_list"])
            .unwrap()
            .children_named("eid")
            .map(|e| e.text.trim())
            .collect();
        assert_eq!(eids, [EID]);
        let opts = call.child("backup_options").unwrap();
        assert_eq!(opts.text_of("type"), Some("0"));
        assert_eq!(opts.text_of("compression"), Some("2"));
        assert_eq!(opts.text_of("description"), Some("bmlnaHRseQ=="));
        assert!(!opts.has("policy"));
        assert!(!call.has("backup_server"));
    }

    fn check_list(p: &Element) {
        assert_eq!(p.attr("id"), Some("l1"));
        let opts = call(p, "backupm", "list").child("options").unwrap();
        assert_eq!(opts.text_of("eid"), Some(EID));
        assert!(opts.has("latest"));
        assert!(!opts.has("info"));
        assert_eq!(
            call(p, "backupm", "list")
                .children_named("backup_id")
                .count(),
            0
        );
    }

    fn check_restore(p: &Element) {
        assert_eq!(p.attr("id"), Some("r9"));
        let call = call(p, "backupm", "restore_env");
        assert_eq!(call.text_of("backup_id"), Some(BACKUP));
        assert!(call.path(&["restore_options"]).unwrap().has("force"));
        assert!(!call.has("parent_eid"));
    }

    fn check_remove(p: &Element) {
        assert_eq!(p.attr("id"), Some("rm3"));
        let backupm = p.path(&["data", "backupm"]).unwrap();
        let removes: Vec<&Element> = backupm.children_named("remove").collect();
        assert_eq!(removes.len(), 2);
        assert_eq!(removes[0].text_of("backup_id"), Some(BACKUP));
        assert!(removes[0].path(&["options"]).unwrap().has("prev"));
        assert_eq!(removes[1].text_of("backup_id"), None);
        assert_eq!(
            removes[1].path(&["options", "eid"]).map(|e| e.text.trim()),
            Some("0b7e4a53-91c2-4f0e-8d3a-5a6b7c8d9e0f")
        );
        assert!(!removes[1].child("options").unwrap().has("prev"));
    }

    fn check_get_info(p: &Element) {
        assert_eq!(p.attr("id"), Some("gi-4"));
        let call = call(p, "backupm", "get_info");
        assert_eq!(call.text_of("backup_id"), Some(BACKUP));
        let opts = call.child("options").unwrap();
        assert!(opts.attrs.is_empty(), "xsi:type dropped: {:?}", opts.attrs);
        assert!(opts.has("env") && opts.has("excludes"));
    }

    const RESTORE_NS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ns1:packet xmlns:ns1="http://www.swsoft.com/webservices/vzl/4.0.0/protocol" version="4.0.0"
  id="r9" progress="on">
    <ns1:data>
        <ns2:backupm xmlns:ns2="http://www.swsoft.com/webservices/vzl/4.0.0/backupm">
            <ns2:restore_env>
                <ns2:restore_options>
                    <ns2:force/>
                </ns2:restore_options>
                <ns2:backup_id>
                    6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21/20261122081500
                </ns2:backup_id>
            </ns2:restore_env>
        </ns2:backupm>
    </ns1:data>
    <ns1:target>backupm</ns1:target>
</ns1:packet>
"#;

    const REMOVE_NS: &str = r#"<ns1:packet xmlns:ns1="http://www.swsoft.com/webservices/vzl/4.0.0/protocol" id="rm3">
  <ns1:target>backupm</ns1:target>
  <ns1:data>
    <ns2:backupm xmlns:ns2="http://www.swsoft.com/webservices/vzl/4.0.0/backupm">
      <ns2:remove>
        <ns2:options><ns2:prev/></ns2:options>
        <ns2:backup_id>6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21/20261122081500</ns2:backup_id>
      </ns2:remove>
      <ns2:remove>
        <ns2:options><ns2:eid>0b7e4a53-91c2-4f0e-8d3a-5a6b7c8d9e0f</ns2:eid></ns2:options>
      </ns2:remove>
    </ns2:backupm>
  </ns1:data>
</ns1:packet>"#;

    const GET_INFO_PLAIN: &str = concat!(
        r#"<packet version="4.0.0" id="gi-4"><target>backupm</target><data><backupm><get_info>"#,
        r#"<backup_id>6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21/20261122081500</backup_id>"#,
        r#"<options xsi:type="get_env_info_optionsType"><env/><excludes/></options>"#,
        r#"</get_info></backupm></data></packet>"#
    );

    #[test]
    fn spec_examples_parse_plain_and_namespaced() {
        let text = |name: &str| String::from_utf8(corpus(name)).unwrap();
        type Check = fn(&Element);
        let cases: Vec<(Check, Vec<String>)> = vec![
            (
                check_login,
                vec![text("login.xml"), text("login-ns-pretty.xml")],
            ),
            (
                check_backup_env,
                vec![text("backup_env.xml"), text("backup_env-ns-pretty.xml")],
            ),
            (
                check_list,
                vec![text("list-latest.xml"), text("list-ns-pretty.xml")],
            ),
            (
                check_restore,
                vec![text("restore_env-force.xml"), RESTORE_NS.to_string()],
            ),
            (
                check_remove,
                vec![text("remove-prev.xml"), REMOVE_NS.to_string()],
            ),
            (
                check_get_info,
                vec![GET_INFO_PLAIN.to_string(), text("get_info-xsi.xml")],
            ),
        ];
        for (check, variants) in cases {
            for v in &variants {
                check(&parse(v));
            }
        }
    }

    #[test]
    fn every_corpus_file_parses() {
        for (name, bytes) in fuzzkit::corpus() {
            let p = parse_packet(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p.name, "packet", "{name}");
            assert!(p.attr("id").is_some(), "{name}");
            assert_eq!(salvage_id(bytes).as_deref(), p.attr("id"), "{name}");
            assert!(p.has("data"), "{name}");
        }
    }

    #[test]
    fn namespaces_and_xsi_attributes_are_dropped_by_local_name() {
        let p = parse_packet(&corpus("realms-xsi.xml")).unwrap();
        assert_eq!(
            p.attrs,
            [
                ("id".to_string(), "r-77".to_string()),
                ("priority".to_string(), "0".to_string()),
                ("version".to_string(), "4.0.0".to_string()),
            ]
        );
        let realms: Vec<&Element> = p
            .path(&["data", "system", "realms"])
            .unwrap()
            .children_named("realm")
            .collect();
        assert_eq!(realms.len(), 2);
        for r in &realms {
            assert!(r.attrs.is_empty(), "{:?}", r.attrs);
            assert!(r.has("builtin"));
        }
        assert_eq!(realms[1].text_of("type"), Some("1000"));

        // The packet's own `type` attribute survives next to an undeclared xsi:type, and an
        // attribute prefixed with some other (even undeclared) prefix keeps its local name.
        let p = parse(r#"<packet type="1" xsi:type="x" foo:bar="2" xml:lang="en"/>"#);
        assert_eq!(p.attr("type"), Some("1"));
        assert_eq!(p.attr("bar"), Some("2"));
        assert_eq!(p.attr("lang"), Some("en"));
        assert_eq!(p.attrs.len(), 3);
        // A default namespace on the root is fine too.
        let p = parse(
            r#"<packet xmlns="http://www.swsoft.com/webservices/vzl/4.0.0/protocol" id="d"><data/></packet>"#,
        );
        assert_eq!(p.attrs, [("id".to_string(), "d".to_string())]);
        assert!(p.has("data"));
    }

    #[test]
    fn text_is_kept_untrimmed_and_accessors_trim() {
        let p = parse("<packet>\n <a> x\ty </a><b><![CDATA[ <c> ]]>&amp;</b></packet>");
        assert_eq!(p.child("a").unwrap().text, " x\ty ");
        assert_eq!(p.text_of("a"), Some("x\ty"));
        assert_eq!(p.text_of("b"), Some("<c> &"));
        assert_eq!(p.child("b").unwrap().text, " <c> &");
        assert_eq!(p.text, "\n ");
        assert_eq!(p.path(&[]), Some(&p));
        assert_eq!(p.path(&["a", "nothing"]), None);
        assert_eq!(p.text_of("nothing"), None);
    }

    #[test]
    fn tolerates_bom_declaration_comments_pis_and_crlf() {
        let p = parse_packet(&corpus("bom-crlf-entities.xml")).unwrap();
        assert_eq!(p.attr("id"), Some("e.8"));
        let d = p
            .path(&[
                "data",
                "backupm",
                "set_config",
                "backupm_config",
                "description",
            ])
            .unwrap();
        assert_eq!(d.text, "a <raw> & &<AB>\"'");
        let p = parse_packet(&corpus("config.xml")).unwrap();
        assert!(p
            .path(&["data", "backupm", "get_config"])
            .unwrap()
            .has("local"));
        let p = parse(" \n<?xml version=\"1.0\"?><!-- c --><?pi x?>\n<packet><!-- in --><a/><?pi?></packet>\n<!-- after -->\n ");
        assert_eq!(p.children.len(), 1);
    }

    #[test]
    fn entities_unescape_and_dtds_are_refused() {
        let p = parse(
            r#"<packet id="&quot;&#x41;&amp;"><m>&amp; &lt; &gt; &#x41;&#66; &apos;&quot;</m></packet>"#,
        );
        assert_eq!(p.attr("id"), Some("\"A&"));
        assert_eq!(p.text_of("m"), Some("& < > AB '\""));

        let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<packet id="1"><m>&lol3;</m></packet>"#;
        assert_eq!(parse_packet(laughs.as_bytes()), Err(ParseError::DocType));
        assert_eq!(
            parse_packet(b"<!DOCTYPE packet SYSTEM \"file:///etc/passwd\"><packet/>"),
            Err(ParseError::DocType)
        );
        // Without a DTD an unknown entity is simply malformed.
        for bad in [
            "<packet><m>&lol;</m></packet>",
            "<packet a='&x;'/>",
            "<packet>&#0;</packet>",
            "<packet>& </packet>",
        ] {
            match parse_packet(bad.as_bytes()) {
                Err(ParseError::Malformed(m)) => {
                    assert!(m.starts_with("malformed XML at byte "), "{m}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    fn nested(depth: usize, leaf: &str) -> String {
        let mut s = String::from("<packet>");
        for _ in 1..depth {
            s.push_str("<a>");
        }
        s.push_str(leaf);
        for _ in 1..depth {
            s.push_str("</a>");
        }
        s.push_str("</packet>");
        s
    }

    #[test]
    fn limits_are_enforced() {
        assert!(parse_packet(nested(32, "").as_bytes()).is_ok());
        assert!(parse_packet(nested(31, "<b/>").as_bytes()).is_ok());
        assert_eq!(
            parse_packet(nested(33, "").as_bytes()),
            Err(ParseError::TooDeep)
        );
        assert_eq!(
            parse_packet(nested(32, "<b/>").as_bytes()),
            Err(ParseError::TooDeep)
        );
        assert_eq!(
            parse_packet(nested(100_000, "").as_bytes()),
            Err(ParseError::TooDeep)
        );

        let flat = |n: usize| format!("<packet>{}</packet>", "<a/>".repeat(n));
        let p = parse_packet(flat(MAX_ELEMENTS - 1).as_bytes()).unwrap();
        assert_eq!(p.children.len(), MAX_ELEMENTS - 1);
        assert_eq!(
            parse_packet(flat(MAX_ELEMENTS).as_bytes()),
            Err(ParseError::TooManyElements)
        );
    }

    #[test]
    fn bad_documents_are_refused_with_errors() {
        assert_eq!(
            parse_packet(b"<system id=\"1\"/>"),
            Err(ParseError::WrongRoot("system".into()))
        );
        assert_eq!(
            parse_packet(b"<ns1:packets/>"),
            Err(ParseError::WrongRoot("packets".into()))
        );
        for empty in [
            &b""[..],
            b"  \r\n\t",
            b"\xef\xbb\xbf",
            b"<?xml version=\"1.0\"?><!-- nothing -->",
        ] {
            assert_eq!(parse_packet(empty), Err(ParseError::Empty), "{empty:?}");
        }
        assert_eq!(
            parse_packet(b"<packet id=\"\xff\"/>"),
            Err(ParseError::NotUtf8)
        );
        assert_eq!(parse_packet(b"\xfe\xff\0<\0p\0"), Err(ParseError::NotUtf8));
        for bad in [
            "<packet>",
            "<packet><a></packet>",
            "<packet><a></b></packet>",
            "<packet/><packet/>",
            "<packet></packet>junk",
            "junk<packet/>",
            "</packet>",
            "<packet id=\"1\" id=\"2\"/>",
            "<packet id=1/>",
            "<packet id=\"1",
            "<packet><![CDATA[x</packet>",
            "<packet><!-- x</packet>",
            "<packet xmlns:xml=\"urn:x\"/>",
        ] {
            match parse_packet(bad.as_bytes()) {
                Err(ParseError::Malformed(m)) => {
                    assert!(m.starts_with("malformed XML at byte "), "{bad}: {m}");
                    assert!(m.len() < 400, "{m}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        let err = parse_packet(b"<packet><a></b></packet>").unwrap_err();
        assert!(err.to_string().contains("byte "), "{err}");
        // Long names are clipped in messages.
        let long = format!("<{}/>", "r".repeat(10_000));
        match parse_packet(long.as_bytes()) {
            Err(ParseError::WrongRoot(n)) => assert!(n.len() < 200),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn salvage_id_reads_broken_packets() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (
                b"<packet version=\"4.0.0\" id=\"b17\" progress=\"on\"><target>backupm</tar",
                Some("b17"),
            ),
            (
                b"<?xml version=\"1.0\"?>\n<ns1:packet\n id='x-1.2:3_4'",
                Some("x-1.2:3_4"),
            ),
            (
                b"\xff\xfe garbage <packet  id = \"q\" ><data><<<",
                Some("q"),
            ),
            (b"<packet version=\"4.0.0\" id=\"b17\"", Some("b17")),
            (b"<packet uid=\"5\" id=\"6\">", Some("6")),
            (b"<packet note=\"id='no'\" id=\"yes\">", Some("yes")),
            (b"<!-- x --><packet\tid=\"c\"/>", Some("c")),
            (b"<packet uid=\"5\">", None),
            (b"<packet id=\"b17", None),
            (b"<packet id=\"a b\">", None),
            (b"<packet id=\"\">", None),
            (b"<packet id=\"<script>\">", None),
            (b"<packet id=\"\xc3\xa9\">", None),
            (b"<packetx id=\"1\">", None),
            (b"<foo id=\"1\"><packet>", None),
            (b"</packet id=\"1\">", None),
            (b"<packet garbage id=\"1\">", None),
            (b"", None),
            (b"<", None),
            (b"<packet", None),
            (b"\0\0\0\xff", None),
            (b"id=\"1\"", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                salvage_id(bytes).as_deref(),
                *want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let ok = format!("<packet id=\"{}\">", "i".repeat(64));
        assert_eq!(salvage_id(ok.as_bytes()).map(|s| s.len()), Some(64));
        let long = format!("<packet id=\"{}\">", "i".repeat(65));
        assert_eq!(salvage_id(long.as_bytes()), None);
    }

    fn ok_response() -> Element {
        Element::new("packet")
            .with_attr("version", "4.0.0")
            .with_attr("id", "7")
            .with_child(Element::new("origin").with_text("backupm"))
            .with_child(Element::new("target").with_text("vzclient1"))
            .with_child(Element::new("dst").with_child(Element::new("director").with_text("gend")))
            .with_child(
                Element::new("data")
                    .with_child(Element::new("backupm").with_child(Element::new("ok"))),
            )
    }

    #[test]
    fn write_packet_golden_ok() {
        let bytes = write_packet(&ok_response());
        let want = concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<ns1:packet xmlns:ns1="http://www.swsoft.com/webservices/vzl/4.0.0/protocol" version="4.0.0" id="7">"#,
            r#"<ns1:origin>backupm</ns1:origin><ns1:target>vzclient1</ns1:target>"#,
            // The specification's packets leave `dst/director` unprefixed.
            r#"<ns1:dst><director>gend</director></ns1:dst>"#,
            r#"<ns1:data><ns2:backupm xmlns:ns2="http://www.swsoft.com/webservices/vzl/4.0.0/backupm">"#,
            r#"<ns2:ok/></ns2:backupm></ns1:data></ns1:packet>"#
        );
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), want);
        assert_eq!(parse_packet(&bytes), Ok(ok_response()));
        assert!(!bytes.contains(&0));
    }

    #[test]
    fn write_packet_golden_progress() {
        let progress = Element::new("packet")
            .with_attr("version", "4.0.0")
            .with_attr("id", "b17")
            .with_attr("type", "1")
            .with_attr("priority", "4000")
            .with_child(Element::new("origin").with_text("backupm"))
            .with_child(Element::new("target").with_text("vzclient3"))
            .with_child(
                Element::new("data").with_child(
                    Element::new("progress")
                        .with_child(Element::new("op").with_text("backupm.backup_env"))
                        .with_child(Element::new("status").with_text("2"))
                        .with_child(Element::new("percent").with_text("54"))
                        .with_child(
                            Element::new("eid_list").with_child(Element::new("eid").with_text(EID)),
                        ),
                ),
            );
        let bytes = write_packet(&progress);
        let want = concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<ns1:packet xmlns:ns1="http://www.swsoft.com/webservices/vzl/4.0.0/protocol" version="4.0.0" id="b17" type="1" priority="4000">"#,
            r#"<ns1:origin>backupm</ns1:origin><ns1:target>vzclient3</ns1:target>"#,
            r#"<ns1:data><ns1:progress><ns1:op>backupm.backup_env</ns1:op><ns1:status>2</ns1:status>"#,
            r#"<ns1:percent>54</ns1:percent><ns1:eid_list><ns1:eid>6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21</ns1:eid></ns1:eid_list>"#,
            r#"</ns1:progress></ns1:data></ns1:packet>"#
        );
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), want);
        assert_eq!(parse_packet(&bytes), Ok(progress));
    }

    #[test]
    fn write_packet_golden_escaping_and_system() {
        let e = Element::new("packet")
            .with_attr("id", "a\"b'<&>\t\n\r")
            .with_child(
                Element::new("data").with_child(
                    Element::new("system").with_child(
                        Element::new("error")
                            .with_child(Element::new("code").with_text("1"))
                            .with_child(
                                Element::new("message").with_text("a<b & \"c\" 'd'>\r\n\u{1}"),
                            ),
                    ),
                ),
            );
        let bytes = write_packet(&e);
        let want = concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<ns1:packet xmlns:ns1="http://www.swsoft.com/webservices/vzl/4.0.0/protocol" id="a&quot;b'&lt;&amp;&gt;&#9;&#10;&#13;">"#,
            r#"<ns1:data><ns2:system xmlns:ns2="http://www.swsoft.com/webservices/vzl/4.0.0/system">"#,
            "<ns2:error><ns2:code>1</ns2:code><ns2:message>a&lt;b &amp; \"c\" 'd'&gt;&#13;\n\u{fffd}</ns2:message></ns2:error>",
            r#"</ns2:system></ns1:data></ns1:packet>"#
        );
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), want);
        let back = parse_packet(&bytes).unwrap();
        assert_eq!(back.attr("id"), Some("a\"b'<&>\t\n\r"));
        assert_eq!(
            back.path(&["data", "system", "error"])
                .unwrap()
                .child("message")
                .unwrap()
                .text,
            "a<b & \"c\" 'd'>\r\n\u{fffd}"
        );
        // Only the root's data child switches namespaces; a nested `data` stays ns1.
        let nested = Element::new("packet").with_child(
            Element::new("origin").with_child(Element::new("data").with_child(Element::new("x"))),
        );
        assert_eq!(
            String::from_utf8(write_packet(&nested)).unwrap(),
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<ns1:packet xmlns:ns1="http://www.swsoft.com/webservices/vzl/4.0.0/protocol">"#,
                r#"<ns1:origin><ns1:data><ns1:x/></ns1:data></ns1:origin></ns1:packet>"#
            )
        );
    }

    #[test]
    fn write_plain_round_trips_and_builders() {
        let e = Element::new("packet")
            .with_attr("id", "1")
            .with_attr("version", "4.0.0")
            .with_attr("id", "2")
            .with_text(" t ")
            .with_child(Element::new("target").with_text("backupm"));
        assert_eq!(
            e.attrs,
            [
                ("id".to_string(), "2".to_string()),
                ("version".to_string(), "4.0.0".to_string())
            ]
        );
        assert_eq!(
            String::from_utf8(write_plain(&e)).unwrap(),
            r#"<packet id="2" version="4.0.0"> t <target>backupm</target></packet>"#
        );
        assert_eq!(parse_packet(&write_plain(&e)), Ok(e.clone()));
        let mut f = e.clone();
        f.push(Element::new("data"));
        assert!(f.has("data") && !e.has("data"));
        assert_eq!(
            interface_ns("backupm"),
            "http://www.swsoft.com/webservices/vzl/4.0.0/backupm"
        );
    }

    // ---- property tests -------------------------------------------------------------------

    /// The property tests' settings (see [`fuzzkit`]; `scripts/fuzz-xml.sh` runs the
    /// `*_never_panic` tests below and the chunking tests of `frame.rs`).
    fn config(cases: u32) -> ProptestConfig {
        fuzzkit::config(cases, 0x00ca_1e4b_ac0f_f1e5)
    }

    /// XML-ish building blocks, so that random documents reach deep into the parser.
    const TOKENS: &[&str] = &[
        "<",
        ">",
        "/>",
        "</",
        "packet",
        "ns1:",
        "xsi:",
        "xmlns:ns1=",
        "id=",
        "\"",
        "'",
        "=",
        " ",
        "\n",
        "a",
        "data",
        "<packet id=\"",
        "<ns1:packet ",
        "</packet>",
        "&",
        "&amp;",
        "&#x41;",
        "&#",
        ";",
        "<![CDATA[",
        "]]>",
        "<!--",
        "-->",
        "<?xml version=\"1.0\"?>",
        "<?",
        "?>",
        "<!DOCTYPE",
        "<!",
        "[",
        "]",
        "\u{feff}",
        "\u{e9}",
        "\0",
        "\u{fffd}",
    ];

    fn xmlish() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            4 => prop::sample::select(TOKENS).prop_map(|t| t.as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 1..4),
        ];
        prop::collection::vec(token, 0..64).prop_map(|parts| parts.concat())
    }

    #[derive(Clone, Debug)]
    enum Mutation {
        Flip(prop::sample::Index, u8),
        Set(prop::sample::Index, u8),
        Truncate(prop::sample::Index),
        Insert(prop::sample::Index, Vec<u8>),
        Delete(prop::sample::Index, usize),
        Duplicate(prop::sample::Index, prop::sample::Index),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let idx = any::<prop::sample::Index>;
        prop_oneof![
            3 => (idx(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, bit)),
            2 => (idx(), prop::sample::select(&b"<>/&;\"'=:!?[]- \0\xff"[..])).prop_map(|(i, b)| Mutation::Set(i, b)),
            1 => idx().prop_map(Mutation::Truncate),
            2 => (idx(), xmlish()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            2 => (idx(), 1usize..32).prop_map(|(i, n)| Mutation::Delete(i, n)),
            1 => (idx(), idx()).prop_map(|(a, b)| Mutation::Duplicate(a, b)),
        ]
    }

    fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
        let len = bytes.len();
        if len == 0 {
            if let Mutation::Insert(_, b) = m {
                bytes.extend_from_slice(b);
            }
            return;
        }
        match m {
            Mutation::Flip(i, bit) => bytes[i.index(len)] ^= 1 << bit,
            Mutation::Set(i, b) => bytes[i.index(len)] = *b,
            Mutation::Truncate(i) => bytes.truncate(i.index(len)),
            Mutation::Insert(i, b) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = i.index(len);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Duplicate(a, b) => {
                let (a, b) = (a.index(len), b.index(len));
                let (lo, hi) = (a.min(b), a.max(b));
                let piece = bytes[lo..=hi].to_vec();
                bytes.splice(hi..hi, piece);
            }
        }
    }

    /// Characters XML can carry, weighted toward the ones that need escaping.
    fn xml_char() -> impl Strategy<Value = char> {
        prop_oneof![
            3 => prop::sample::select(vec!['&', '<', '>', '"', '\'', ' ', '\t', '\n', '\r', ']', ';', '#']),
            3 => prop::char::range('a', 'z'),
            2 => any::<char>().prop_filter("XML Char", |&c| is_xml_char(c)),
        ]
    }

    fn xml_text() -> impl Strategy<Value = String> {
        prop_oneof![
            2 => Just(String::new()),
            3 => prop::collection::vec(xml_char(), 1..16).prop_map(|cs| cs.into_iter().collect()),
        ]
    }

    fn attrs() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::btree_map("[a-w][a-z0-9_.-]{0,5}", xml_text(), 0..4)
            .prop_map(|m| m.into_iter().collect())
    }

    fn element() -> impl Strategy<Value = Element> {
        let leaf =
            ("[a-z_][a-z0-9_.-]{0,7}", attrs(), xml_text()).prop_map(|(name, attrs, text)| {
                Element {
                    name,
                    attrs,
                    text,
                    children: Vec::new(),
                }
            });
        leaf.prop_recursive(5, 48, 5, |inner| {
            (
                "[a-z_][a-z0-9_.-]{0,7}",
                attrs(),
                xml_text(),
                prop::collection::vec(inner, 0..5),
            )
                .prop_map(|(name, attrs, text, children)| Element {
                    name,
                    attrs,
                    text,
                    children,
                })
        })
    }

    fn packet_tree() -> impl Strategy<Value = Element> {
        (
            attrs(),
            xml_text(),
            prop::collection::vec(element(), 0..4),
            prop::collection::vec(element(), 0..3),
            any::<bool>(),
        )
            .prop_map(|(attrs, text, children, ifaces, progress)| {
                let mut data = Element::new("data");
                for (i, iface) in ifaces.into_iter().enumerate() {
                    if progress && i == 0 {
                        data.push(Element {
                            name: "progress".into(),
                            ..iface
                        });
                    } else {
                        data.push(iface);
                    }
                }
                Element {
                    name: "packet".into(),
                    attrs,
                    text,
                    children,
                }
                .with_child(data)
            })
    }

    proptest! {
        #![proptest_config(config(2_000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_packet(&bytes);
            let _ = salvage_id(&bytes);
        }

        #[test]
        fn xmlish_bytes_never_panic(bytes in xmlish()) {
            if let Ok(p) = parse_packet(&bytes) {
                prop_assert_eq!(p.name.as_str(), "packet");
            }
            if let Some(id) = salvage_id(&bytes) {
                prop_assert!(!id.is_empty() && id.len() <= 64);
            }
        }

        #[test]
        fn corpus_mutations_never_panic(
            file in any::<prop::sample::Index>(),
            mutations in prop::collection::vec(mutation(), 1..6),
        ) {
            let files = corpus_files();
            let mut bytes = files[file.index(files.len())].1.clone();
            for m in &mutations {
                apply(&mut bytes, m);
            }
            if let Ok(p) = parse_packet(&bytes) {
                prop_assert_eq!(p.name.as_str(), "packet");
            }
            let _ = salvage_id(&bytes);
        }
    }

    proptest! {
        #![proptest_config(config(500))]

        #[test]
        fn write_plain_round_trips(tree in packet_tree()) {
            let bytes = write_plain(&tree);
            prop_assert_eq!(parse_packet(&bytes), Ok(tree));
        }

        #[test]
        fn write_packet_round_trips(tree in packet_tree()) {
            let bytes = write_packet(&tree);
            prop_assert!(!bytes.contains(&0));
            prop_assert_eq!(parse_packet(&bytes), Ok(tree.clone()));
            prop_assert_eq!(write_packet(&tree), bytes, "deterministic");
        }
    }

    fn corpus_files() -> &'static [(String, Vec<u8>)] {
        fuzzkit::corpus()
    }
}
