//! The YAML of configuration files, as a small tree whose every node knows where it starts.
//!
//! Built from saphyr-parser's events, which carry the line and column the parser itself saw, so
//! an error found long after parsing (a bad duration, a missing file) still points at the right
//! place, whatever the layout (block or flow) and whatever the characters (columns count
//! characters, not bytes).
//!
//! Configuration needs only part of YAML, and the rest is refused with a position rather than
//! half-supported: anchors and aliases (which also make "billion laughs" documents possible),
//! tags other than `!!str`, more than one document, and nesting deeper than [`MAX_DEPTH`], which
//! stops the parse at once however deep the input goes. Plain scalars are resolved by the YAML 1.2
//! core schema.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Tag};

/// How deeply mappings and sequences may nest (the top-level mapping is 1). Configuration needs
/// four levels; anything near this bound is a mistake or an attack, and is refused as soon as the
/// parser reaches it.
pub const MAX_DEPTH: usize = 32;

/// A 1-based (line, column); the column counts characters.
pub type Pos = (usize, usize);

/// One YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts: its first character, or its `{`, `[` or `-`.
    pub pos: Pos,
    /// What it holds.
    pub value: Value,
}

/// The value of a node, scalars resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing at all.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer: decimal, `0x` hexadecimal or `0o` octal.
    Int(i128),
    /// A float, including `.inf` and `.nan`.
    Float(f64),
    /// A string: any quoted or block scalar, a plain scalar that is nothing else, or `!!str`.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, entries in file order, keys unique.
    Map(Vec<(Node, Node)>),
}

/// Why a text is not a configuration document, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Where the problem is.
    pub pos: Pos,
    /// What it is, in words.
    pub message: String,
}

impl Error {
    fn new(pos: Pos, message: impl Into<String>) -> Self {
        Error { pos, message: message.into() }
    }
}

/// Parses one YAML document. An empty text (or one of comments only) is [`Value::Null`] at 1:1.
///
/// Errors are sorted by position. A syntax error, or any construct that is refused, stops the
/// parse; duplicate keys do not, so that all of them are reported at once.
pub fn parse(text: &str) -> Result<Node, Vec<Error>> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let mut documents = 0;
    while let Some(next) = parser.next_event() {
        let (event, span) = match next {
            Ok(ev) => ev,
            Err(e) => return Err(builder.fail(indented_with_a_tab(text, &e).unwrap_or_else(|| scan_error(&e)))),
        };
        let pos = (span.start.line(), span.start.col() + 1);
        let outcome = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => Ok(()),
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    Err(Error::new(pos, "more than one YAML document (`---`): a configuration file holds one"))
                } else {
                    Ok(())
                }
            }
            Event::Alias(_) => Err(anchors_refused(pos)),
            Event::Scalar(_, _, anchor, _) | Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _)
                if anchor != 0 =>
            {
                Err(anchors_refused(pos))
            }
            Event::Scalar(text, style, _, tag) => {
                scalar(pos, &text, style, tag.as_deref()).and_then(|value| builder.add(Node { pos, value }))
            }
            Event::SequenceStart(_, tag) => builder.open(pos, tag.as_deref(), false),
            Event::MappingStart(_, tag) => builder.open(pos, tag.as_deref(), true),
            Event::SequenceEnd | Event::MappingEnd => builder.close(pos),
        };
        if let Err(e) = outcome {
            return Err(builder.fail(e));
        }
    }
    builder.finish()
}

/// A syntax error caused by a tab in the indentation, said so where the tab is: the parser's own
/// words for it ("did not find expected key", "found a tab" at the end of the line before) do
/// not point there.
fn indented_with_a_tab(text: &str, e: &ScanError) -> Option<Error> {
    let last = e.marker().line().max(1) + 1;
    text.lines().take(last).enumerate().find_map(|(i, line)| {
        let indent = &line[..line.len() - line.trim_start().len()];
        let col = indent.chars().position(|c| c == '\t')?;
        let message = "a tab in the indentation: YAML indents with spaces only";
        Some(Error::new((i + 1, col + 1), message))
    })
}

fn scan_error(e: &ScanError) -> Error {
    let m = e.marker();
    let pos = (m.line().max(1), m.col() + 1);
    if e.info() == "recursion limit exceeded" {
        // The scanner reads a flow collection ahead to its end (it might be a key), and stops at
        // 255 open brackets: on deep flow nesting, that comes before the events reach our bound.
        return depth_exceeded(pos);
    }
    Error::new(pos, format!("invalid YAML: {}", e.info()))
}

fn depth_exceeded(pos: Pos) -> Error {
    Error::new(pos, format!("nested more than {MAX_DEPTH} levels deep"))
}

fn anchors_refused(pos: Pos) -> Error {
    Error::new(pos, "anchors and aliases (`&name`, `*name`) are not supported in configuration: write the value out")
}

/// A collection being read.
struct Frame {
    pos: Pos,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(Node, Node)>,
        /// A key whose value has not been read yet.
        key: Option<Node>,
        /// Canonical form of each key, with the line it was first defined on.
        seen: HashMap<String, usize>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    /// Errors that do not stop the parse (duplicate keys).
    errors: Vec<Error>,
}

impl Builder {
    fn open(&mut self, pos: Pos, tag: Option<&Tag>, map: bool) -> Result<(), Error> {
        if let Some(tag) = tag {
            return Err(Error::new(
                pos,
                format!("tag `{}` is not supported (only `!!str`, on a scalar)", tag_name(tag)),
            ));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(depth_exceeded(pos));
        }
        let kind = if map {
            FrameKind::Map { entries: Vec::new(), key: None, seen: HashMap::new() }
        } else {
            FrameKind::Seq(Vec::new())
        };
        self.stack.push(Frame { pos, kind });
        Ok(())
    }

    fn close(&mut self, pos: Pos) -> Result<(), Error> {
        // The parser closes only what it opened; should it not, that is an error, not a panic.
        let frame = self.stack.pop().ok_or_else(|| Error::new(pos, "invalid YAML: unbalanced end of a collection"))?;
        let value = match frame.kind {
            FrameKind::Seq(items) => Value::Seq(items),
            FrameKind::Map { entries, .. } => Value::Map(entries),
        };
        self.add(Node { pos: frame.pos, value })
    }

    fn add(&mut self, node: Node) -> Result<(), Error> {
        let Some(top) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        match &mut top.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map { entries, key, seen } => match key.take() {
                Some(k) => entries.push((k, node)),
                None => {
                    match seen.entry(canonical(&node)) {
                        Entry::Occupied(first) => self.errors.push(Error::new(
                            node.pos,
                            format!("duplicate key `{}`, first defined at line {}", key_display(&node), first.get()),
                        )),
                        Entry::Vacant(slot) => {
                            slot.insert(node.pos.0);
                        }
                    }
                    *key = Some(node);
                }
            },
        }
        Ok(())
    }

    /// Every error so far and `last`, in file order.
    fn fail(mut self, last: Error) -> Vec<Error> {
        self.errors.push(last);
        self.errors.sort_by_key(|e| e.pos);
        self.errors
    }

    fn finish(self) -> Result<Node, Vec<Error>> {
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        Ok(self.root.unwrap_or(Node { pos: (1, 1), value: Value::Null }))
    }
}

/// A scalar's value: plain ones resolved by the core schema, every other style a string.
fn scalar(pos: Pos, text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, Error> {
    match tag {
        None if style == ScalarStyle::Plain => Ok(resolve_plain(text)),
        None => Ok(Value::Str(text.to_string())),
        Some(t) if t.is_yaml_core_schema() && t.suffix == "str" => Ok(Value::Str(text.to_string())),
        Some(t) => Err(Error::new(pos, format!("tag `{}` is not supported (only `!!str`, on a scalar)", tag_name(t)))),
    }
}

/// A tag as written: `!!int`, `!local`, `!<tag:example.com:x>`.
fn tag_name(tag: &Tag) -> String {
    if tag.is_yaml_core_schema() {
        format!("!!{}", tag.suffix)
    } else if tag.handle == "!" {
        format!("!{}", tag.suffix)
    } else if tag.handle.is_empty() && tag.suffix == "!" {
        "!".to_string()
    } else {
        format!("!<{}{}>", tag.handle, tag.suffix)
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema, with one exception: digits with a leading
/// zero (`0644`) stay a string, as with serde_norway, because YAML 1.1 read them as octal.
pub fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    for (prefix, radix) in [("0x", 16), ("0o", 8)] {
        if let Some(digits) = s.strip_prefix(prefix) {
            if !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix)) {
                // Too large for any integer type: keep the text.
                return i128::from_str_radix(digits, radix).map_or_else(|_| Value::Str(s.to_string()), Value::Int);
            }
            return Value::Str(s.to_string());
        }
    }
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        if unsigned.len() > 1 && unsigned.starts_with('0') {
            return Value::Str(s.to_string());
        }
        return match s.parse::<i128>() {
            Ok(i) => Value::Int(i),
            Err(_) => s.parse::<f64>().map_or_else(|_| Value::Str(s.to_string()), Value::Float),
        };
    }
    if is_core_float(s)
        && let Ok(f) = s.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(s.to_string())
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(s: &str) -> bool {
    let b = s.strip_prefix(['-', '+']).unwrap_or(s).as_bytes();
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let whole = digits(0);
    let mut i = whole;
    if b.get(i) == Some(&b'.') {
        let fraction = digits(i + 1);
        if whole == 0 && fraction == 0 {
            return false;
        }
        i += 1 + fraction;
    } else if whole == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let exponent = digits(i);
        if exponent == 0 {
            return false;
        }
        i += exponent;
    }
    i == b.len()
}

/// A key's identity for duplicate detection: equal values, however written, are equal keys.
fn canonical(node: &Node) -> String {
    let mut out = String::new();
    write_canonical(node, &mut out);
    out
}

fn write_canonical(node: &Node, out: &mut String) {
    match &node.value {
        Value::Null => out.push('~'),
        Value::Bool(b) => out.push_str(if *b { "T" } else { "F" }),
        Value::Int(i) => out.push_str(&format!("i{i};")),
        Value::Float(f) => out.push_str(&format!("f{};", if f.is_nan() { f64::NAN } else { *f }.to_bits())),
        Value::Str(s) => out.push_str(&format!("s{}:{s}", s.len())),
        Value::Seq(items) => {
            out.push('[');
            items.iter().for_each(|n| write_canonical(n, out));
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (k, v) in entries {
                write_canonical(k, out);
                write_canonical(v, out);
            }
            out.push('}');
        }
    }
}

/// How a key is named in a message.
fn key_display(node: &Node) -> String {
    match &node.value {
        Value::Null => "~".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => s.clone(),
        Value::Seq(_) => "[…]".to_string(),
        Value::Map(_) => "{…}".to_string(),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn ok(text: &str) -> Node {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
    }

    fn err(text: &str) -> Error {
        let errors = parse(text).expect_err(text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.into_iter().next().unwrap()
    }

    fn entries(node: &Node) -> &[(Node, Node)] {
        match &node.value {
            Value::Map(entries) => entries,
            other => panic!("not a mapping: {other:?}"),
        }
    }

    /// The position of the key at `path`.
    fn key_pos(node: &Node, path: &[&str]) -> Pos {
        let (first, rest) = path.split_first().unwrap();
        let (k, v) = entries(node).iter().find(|(k, _)| k.value == Value::Str(first.to_string())).unwrap();
        if rest.is_empty() { k.pos } else { key_pos(v, rest) }
    }

    #[test]
    fn block_and_flow_keys_have_their_positions() {
        let doc = ok("# comment\n\
                      http:\n  \
                        url_file: secrets/x.url\n  \
                        basic_auth: { user: u, password_file: pw }\n\
                      timeout: 20s\n\
                      ssh: {host: a,\n   port: 22}\n\
                      list:\n- a\n-   b\n");
        assert_eq!(key_pos(&doc, &["http"]), (2, 1));
        assert_eq!(key_pos(&doc, &["http", "url_file"]), (3, 3));
        assert_eq!(key_pos(&doc, &["http", "basic_auth"]), (4, 3));
        assert_eq!(key_pos(&doc, &["http", "basic_auth", "password_file"]), (4, 26));
        assert_eq!(key_pos(&doc, &["timeout"]), (5, 1));
        assert_eq!(key_pos(&doc, &["ssh", "host"]), (6, 7));
        assert_eq!(key_pos(&doc, &["ssh", "port"]), (7, 4));
        let (_, list) = &entries(&doc)[3];
        let Value::Seq(items) = &list.value else { panic!("{list:?}") };
        assert_eq!(items.iter().map(|n| n.pos).collect::<Vec<_>>(), [(9, 3), (10, 5)]);
        assert_eq!(entries(&doc)[0].1.pos, (3, 3), "a block mapping starts at its first key");
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let doc = ok("aé: { 日本: 1, x: 2 }\nb: [é, 日本: 3]\n");
        assert_eq!(key_pos(&doc, &["aé", "日本"]), (1, 7));
        assert_eq!(key_pos(&doc, &["aé", "x"]), (1, 14));
        assert_eq!(key_pos(&doc, &["b"]), (2, 1));
        let Value::Seq(items) = &entries(&doc)[1].1.value else { panic!() };
        assert_eq!(items[1].pos, (2, 8));
        assert_eq!(entries(&items[1])[0].0.pos, (2, 8));
        // The case that made the old locator slice inside a character.
        let doc = ok("archives:\n  x:\n    locks:\n      - aé: 1\n  aé:\n    trace: x\n");
        assert_eq!(key_pos(&doc, &["archives", "aé"]), (5, 3));
        assert_eq!(key_pos(&doc, &["archives", "aé", "trace"]), (6, 5));
    }

    #[test]
    fn a_duplicate_key_is_reported_where_it_is_repeated() {
        let e = err("a: 1\nb:\n  c: 1\n  d: 2\n  \"c\": 3\n");
        assert_eq!(e, Error::new((5, 3), "duplicate key `c`, first defined at line 3"));
        // Equal values are equal keys, however they are written.
        assert_eq!(err("{1: a, 0x1: b}").message, "duplicate key `1`, first defined at line 1");
        // Every duplicate is reported, in file order.
        let errors = parse("a: 1\nb: 1\nb: 2\na: 2\n").unwrap_err();
        assert_eq!(errors.iter().map(|e| e.pos).collect::<Vec<_>>(), [(3, 1), (4, 1)]);
        // The same key in different mappings is fine.
        ok("a: {x: 1}\nb: {x: 1}\n");
    }

    #[test]
    fn deep_nesting_is_refused_at_once_with_a_position() {
        let deep = 100_000;
        let cases = [
            // Block nesting, one level per line: refused at the first level too many.
            (
                (0..deep).map(|i| format!("{}a:\n", " ".repeat(i % 200))).collect::<String>(),
                (MAX_DEPTH + 1, MAX_DEPTH + 1),
            ),
            (format!("{}{}", "- ".repeat(deep), "x"), (1, 2 * MAX_DEPTH + 1)),
            // Flow nesting: the scanner reads a whole flow collection ahead (it might be a key),
            // and its own bound of 255 open brackets comes before the events reach ours.
            (format!("{}{}", "[".repeat(deep), "]".repeat(deep)), (1, 256)),
            (format!("{}{}", "[\n".repeat(deep), "]".repeat(deep)), (256, 1)),
            (format!("{}{}", "{a: ".repeat(deep), "}".repeat(deep)), (1, 4 * 255 + 1)),
            // Between the two bounds, ours.
            (format!("{}{}", "[".repeat(100), "]".repeat(100)), (1, MAX_DEPTH + 1)),
        ];
        for (text, pos) in cases {
            // Refused where the bound is, not after reading on.
            assert_eq!(err(&text), depth_exceeded(pos), "{:?}…", &text[..8]);
        }
        // Exactly MAX_DEPTH levels are fine.
        ok(&format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH)));
        ok(&(0..MAX_DEPTH).map(|i| format!("{}a:\n", " ".repeat(i))).collect::<String>());
    }

    #[test]
    fn anchors_aliases_tags_and_documents_are_refused_where_they_are() {
        let e = err("a: &x 1\nb: *x\n");
        assert_eq!(e.pos, (1, 4));
        assert!(e.message.starts_with("anchors and aliases"), "{e:?}");
        assert_eq!(err("a: 1\nb: *x\n").pos, (2, 4), "an unknown alias is a scan error");
        assert_eq!(err("a: &x {b: 1}\n").pos, (1, 4));
        assert_eq!(err("- &x [1]\n").pos, (1, 3));
        let e = err("a:\n  b: !!int 5\n");
        assert_eq!(e, Error::new((2, 6), "tag `!!int` is not supported (only `!!str`, on a scalar)"));
        assert_eq!(err("a: !local x\n").message, "tag `!local` is not supported (only `!!str`, on a scalar)");
        assert_eq!(err("a: !!map {}\n").pos, (1, 4));
        let e = err("a: 1\n---\nb: 2\n");
        assert_eq!(e.pos, (2, 1));
        assert!(e.message.starts_with("more than one YAML document"), "{e:?}");
        ok("---\na: 1\n...\n");
    }

    #[test]
    fn a_tab_in_the_indentation_is_named_where_it_is() {
        for (text, pos) in [
            ("archives:\n  debian:\n    root: archive\n\tsettle: 30s\n", (4, 1)),
            ("archives:\n  debian:\n    root: archive\n  \t  settle: 30s\n", (4, 3)),
            ("archives:\n\tdebian:\n    root: archive\n", (2, 1)),
        ] {
            let e = err(text);
            assert_eq!(
                (e.pos, e.message.as_str()),
                (pos, "a tab in the indentation: YAML indents with spaces only"),
                "{text:?}"
            );
        }
        // A tab elsewhere is not blamed on indentation.
        assert!(err("a: [1,\n b: 2\n").message.starts_with("invalid YAML: "));
    }

    #[test]
    fn syntax_errors_carry_the_parsers_position() {
        let e = err("http:\n  url: [unclosed\n");
        assert_eq!(e.pos, (3, 1));
        assert!(e.message.starts_with("invalid YAML: "), "{e:?}");
        let e = err("a: 1\n b: 2\n");
        assert_eq!(e.pos.0, 2, "{e:?}");
        // An unterminated string is reported where it starts, in characters.
        let e = err("é: \"unterminated\n");
        assert_eq!(e.pos, (1, 4), "{e:?}");
    }

    #[test]
    fn plain_scalars_follow_the_core_schema_quoted_ones_are_strings() {
        let s = |v: &str| Value::Str(v.to_string());
        let table = [
            ("", Value::Null),
            ("~", Value::Null),
            ("null", Value::Null),
            ("NULL", Value::Null),
            ("true", Value::Bool(true)),
            ("False", Value::Bool(false)),
            ("yes", s("yes")),
            ("off", s("off")),
            ("0", Value::Int(0)),
            ("42", Value::Int(42)),
            ("-17", Value::Int(-17)),
            ("+5", Value::Int(5)),
            ("0x1F", Value::Int(31)),
            ("0o17", Value::Int(15)),
            ("0b11", s("0b11")),
            ("-0x1F", s("-0x1F")),
            ("0644", s("0644")),
            ("1.5", Value::Float(1.5)),
            ("-.5", Value::Float(-0.5)),
            ("1.", Value::Float(1.0)),
            ("1e3", Value::Float(1000.0)),
            ("2.5E-1", Value::Float(0.25)),
            (".inf", Value::Float(f64::INFINITY)),
            ("-.Inf", Value::Float(f64::NEG_INFINITY)),
            ("inf", s("inf")),
            ("1_000", s("1_000")),
            ("30s", s("30s")),
            ("6/1h", s("6/1h")),
            ("127.0.0.1:9470", s("127.0.0.1:9470")),
            ("1.2.3", s("1.2.3")),
            ("99999999999999999999999999999999999999999", Value::Float(1e41)),
        ];
        for (text, want) in table {
            assert_eq!(resolve_plain(text), want, "{text:?}");
            let doc = ok(&format!("k: {text}\n"));
            assert_eq!(entries(&doc)[0].1.value, want, "{text:?} in a document");
        }
        assert!(matches!(resolve_plain(".NaN"), Value::Float(f) if f.is_nan()));
        for quoted in ["'42'", "\"true\"", "\"~\"", "!!str 42", "!!str", "|\n  42\n", ">\n  null\n"] {
            let Value::Str(_) = &entries(&ok(&format!("k: {quoted}\n")))[0].1.value else {
                panic!("{quoted:?} is not a string")
            };
        }
        assert_eq!(entries(&ok("k: !!str 0x10\n"))[0].1.value, s("0x10"));
    }

    #[test]
    fn an_empty_document_is_null_at_the_start() {
        for text in ["", "# only a comment\n", "\n\n", "---\n"] {
            assert_eq!(ok(text).value, Value::Null, "{text:?}");
        }
    }
}
