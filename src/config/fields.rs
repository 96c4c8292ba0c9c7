//! Reads a YAML mapping one field at a time, recording every problem (with its line and column)
//! instead of stopping at the first, and rejecting the keys nobody asked for.
//!
//! Positions come from the parser ([`super::yaml`]): every key remembers where it was written,
//! also after it was taken, since most errors are found only once a value has been read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::error::ConfigError;
use super::yaml::{self, Node, Pos, Value};
use crate::vocab::units::parse_duration;

/// Where errors of one validation run are collected.
pub type Sink = RefCell<Vec<ConfigError>>;

/// The not-yet-read fields of one YAML mapping in one file.
pub struct Fields<'a> {
    file: &'a Path,
    prefix: Vec<String>,
    /// Where this mapping's own key is (1:1 for a whole file): missing fields are reported here.
    at: Pos,
    /// Unread entries, in file order.
    entries: Vec<Field>,
    /// Keys already read, with their positions.
    taken: HashMap<String, Pos>,
    sink: &'a Sink,
}

/// One entry of the mapping.
struct Field {
    key: String,
    pos: Pos,
    value: Node,
}

impl<'a> Fields<'a> {
    /// Parses a whole file as a mapping. An empty file is an empty mapping.
    pub fn parse_file(file: &'a Path, text: &'a str, sink: &'a Sink) -> Option<Fields<'a>> {
        let node = match yaml::parse(text) {
            Ok(node) => node,
            Err(errors) => {
                let mut sink = sink.borrow_mut();
                sink.extend(errors.into_iter().map(|e| ConfigError::at(file, e.pos, "", e.message)));
                return None;
            }
        };
        let entries = match node.value {
            Value::Null => Vec::new(),
            Value::Map(entries) => entries,
            _ => {
                sink.borrow_mut().push(ConfigError::at(file, node.pos, "", "expected a mapping of `field: value`"));
                return None;
            }
        };
        Some(Fields::new(file, Vec::new(), (1, 1), entries, sink))
    }

    fn new(file: &'a Path, prefix: Vec<String>, at: Pos, entries: Vec<(Node, Node)>, sink: &'a Sink) -> Self {
        let entries = entries.into_iter().map(|(k, value)| Field { key: key_text(&k), pos: k.pos, value }).collect();
        Fields { file, prefix, at, entries, taken: HashMap::new(), sink }
    }

    /// The file these fields come from.
    pub fn file(&self) -> &'a Path {
        self.file
    }

    /// The dotted name of `key` under this mapping.
    pub fn field_name(&self, key: &str) -> String {
        let mut parts = self.prefix.clone();
        parts.push(key.to_string());
        parts.join(".")
    }

    /// The position of `key`, read or not; of this mapping's own key when `key` is absent.
    pub fn position(&self, key: &str) -> (usize, usize) {
        let unread = self.entries.iter().find(|f| f.key == key).map(|f| f.pos);
        unread.or_else(|| self.taken.get(key).copied()).unwrap_or(self.at)
    }

    /// Records an error about `key`.
    pub fn error(&self, key: &str, message: impl Into<String>) {
        let e = ConfigError::at(self.file, self.position(key), &self.field_name(key), message);
        self.sink.borrow_mut().push(e);
    }

    /// How many errors this validation run has recorded so far (in any file), so that a caller
    /// can tell "absent" from "present but already reported".
    pub fn errors_so_far(&self) -> usize {
        self.sink.borrow().len()
    }

    /// Whether `key` is still unread.
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|f| f.key == key)
    }

    /// Removes `key` and converts it with serde; a wrong type is recorded and gives `None`.
    pub fn take<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let value = self.remove(key)?;
        if value.value == Value::Null {
            return None;
        }
        match serde_norway::from_value(to_serde(value)) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(key, e.to_string());
                None
            }
        }
    }

    /// Removes `key` unread, once an error about it has been recorded, so that
    /// [`Fields::finish`] does not report it a second time as unknown.
    pub fn discard(&mut self, key: &str) {
        self.remove(key);
    }

    /// Removes a string field and parses it with `parse`, recording its error.
    pub fn take_parsed<T>(&mut self, key: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let raw: String = self.take_scalar_string(key)?;
        match parse(&raw) {
            Ok(v) => Some(v),
            Err(msg) => {
                self.error(key, msg);
                None
            }
        }
    }

    /// Removes a field whose type implements `FromStr`.
    pub fn take_from_str<T: FromStr>(&mut self, key: &str) -> Option<T>
    where
        T::Err: std::fmt::Display,
    {
        self.take_parsed(key, |s| s.parse::<T>().map_err(|e| e.to_string()))
    }

    /// Removes a humantime duration (`30s`, `5m`, `6h`) of at most `max`.
    pub fn duration(&mut self, key: &str, max: Duration) -> Option<Duration> {
        self.take_parsed(key, |s| parse_duration(s, max))
    }

    /// Removes a path, resolved against the directory of this file.
    pub fn path(&mut self, key: &str) -> Option<PathBuf> {
        let raw: String = self.take(key)?;
        Some(resolve(self.file, &raw))
    }

    /// Removes a nested mapping and reads it field by field.
    pub fn nested(&mut self, key: &str) -> Option<Fields<'a>> {
        let i = self.entries.iter().position(|f| f.key == key)?;
        let field = self.entries.remove(i);
        self.open(field).1
    }

    /// Removes a sequence of mappings (`webhooks: [ { … }, { … } ]`) and reads each field by
    /// field; its items are named `KEY[N]` in errors. An item that is not a mapping is reported.
    pub fn nested_list(&mut self, key: &str) -> Vec<Fields<'a>> {
        let Some(i) = self.entries.iter().position(|f| f.key == key) else { return Vec::new() };
        let field = self.entries.remove(i);
        self.taken.entry(field.key.clone()).or_insert(field.pos);
        let items = match field.value.value {
            Value::Seq(items) => items,
            Value::Null => return Vec::new(),
            _ => {
                self.error(key, "expected a list of mappings");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (n, item) in items.into_iter().enumerate() {
            let name = format!("{key}[{n}]");
            match item.value {
                Value::Map(entries) => {
                    out.push(Fields::new(self.file, self.with_prefix(&name), item.pos, entries, self.sink))
                }
                _ => {
                    let e = ConfigError::at(self.file, item.pos, &self.field_name(&name), "expected a mapping");
                    self.sink.borrow_mut().push(e);
                }
            }
        }
        out
    }

    /// The keys of this mapping that are still unread, as strings.
    #[expect(dead_code, reason = "kept for callers of the reader; free-form maps use drain_nested")]
    pub fn remaining_keys(&self) -> Vec<String> {
        self.entries.iter().map(|f| f.key.clone()).collect()
    }

    /// Removes and returns every remaining entry (for free-form maps such as `archives:`).
    pub fn drain_nested(&mut self) -> Vec<(String, Option<Fields<'a>>)> {
        std::mem::take(&mut self.entries).into_iter().map(|field| self.open(field)).collect()
    }

    /// Ends reading: every key not taken is an unknown field.
    pub fn finish(self, known: &[&str]) {
        for field in &self.entries {
            let e = ConfigError::at(
                self.file,
                field.pos,
                &self.field_name(&field.key),
                unknown_field_message(&field.key, known),
            );
            self.sink.borrow_mut().push(e);
        }
    }

    fn with_prefix(&self, key: &str) -> Vec<String> {
        let mut prefix = self.prefix.clone();
        prefix.push(key.to_string());
        prefix
    }

    /// Takes `key` out of the unread entries, remembering where it was.
    fn remove(&mut self, key: &str) -> Option<Node> {
        let i = self.entries.iter().position(|f| f.key == key)?;
        let field = self.entries.remove(i);
        self.taken.entry(field.key).or_insert(field.pos);
        Some(field.value)
    }

    /// Reads a removed entry as a nested mapping, remembering where it was.
    fn open(&mut self, field: Field) -> (String, Option<Fields<'a>>) {
        self.taken.entry(field.key.clone()).or_insert(field.pos);
        let nested = match field.value.value {
            Value::Map(entries) => {
                Some(Fields::new(self.file, self.with_prefix(&field.key), field.pos, entries, self.sink))
            }
            Value::Null => None,
            _ => {
                self.error(&field.key, "expected a mapping");
                None
            }
        };
        (field.key, nested)
    }

    fn take_scalar_string(&mut self, key: &str) -> Option<String> {
        match self.remove(key)?.value {
            Value::Str(s) => Some(s),
            v @ (Value::Int(_) | Value::Float(_)) => Some(scalar_text(v)),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => None,
            _ => {
                self.error(key, "expected a single value");
                None
            }
        }
    }
}

/// Resolves `raw` against the directory of the file that names it.
pub fn resolve(file: &Path, raw: &str) -> PathBuf {
    let p = Path::new(raw);
    if p.is_absolute() { p.to_path_buf() } else { file.parent().unwrap_or(Path::new(".")).join(p) }
}

/// A key as the code names it: a string as is, anything else as YAML would write it.
fn key_text(key: &Node) -> String {
    match &key.value {
        Value::Str(s) => s.clone(),
        other => scalar_text(other.clone()),
    }
}

/// A non-string value written as YAML, on one line when it is a scalar.
fn scalar_text(value: Value) -> String {
    let node = Node { pos: (1, 1), value };
    serde_norway::to_string(&to_serde(node)).unwrap_or_default().trim().to_string()
}

/// The node as a serde_norway value, for serde to convert into a field's type.
fn to_serde(node: Node) -> serde_norway::Value {
    use serde_norway::{Number, Value as V};
    match node.value {
        Value::Null => V::Null,
        Value::Bool(b) => V::Bool(b),
        Value::Int(i) => match (i64::try_from(i), u64::try_from(i)) {
            (Ok(i), _) => V::Number(i.into()),
            (_, Ok(u)) => V::Number(u.into()),
            #[allow(clippy::cast_precision_loss)]
            _ => V::Number(Number::from(i as f64)),
        },
        Value::Float(f) => V::Number(f.into()),
        Value::Str(s) => V::String(s),
        Value::Seq(items) => V::Sequence(items.into_iter().map(to_serde).collect()),
        Value::Map(entries) => V::Mapping(entries.into_iter().map(|(k, v)| (to_serde(k), to_serde(v))).collect()),
    }
}

/// "unknown field", with the known field nearest to `key` when one is close enough to be a typo
/// (`retires` → `retries`), then every known field.
pub fn unknown_field_message(key: &str, known: &[&str]) -> String {
    let all = known.join(", ");
    match nearest(key, known) {
        Some(near) => format!("unknown field; did you mean `{near}`? (expected one of: {all})"),
        None => format!("unknown field, expected one of: {all}"),
    }
}

/// The candidate closest to `word` by edit distance (a swap of neighbours counts once), if it is
/// within a third of the word's length (at least 1); ties go to the first listed.
pub fn nearest<'k>(word: &str, candidates: &[&'k str]) -> Option<&'k str> {
    let lower = word.to_ascii_lowercase();
    let within = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (strsim::osa_distance(&lower, c), *c))
        .filter(|(d, _)| *d <= within)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Reads the secret file named by `key`, recording why it cannot be used.
pub(crate) fn secret_field(f: &mut Fields<'_>, key: &str) -> Option<crate::vocab::secret::Secret<String>> {
    secret_file(f, key).map(|(value, _)| value)
}

/// [`secret_field`], with the file it was read from (the ownership audit names it).
pub(crate) fn secret_file(f: &mut Fields<'_>, key: &str) -> Option<(crate::vocab::secret::Secret<String>, PathBuf)> {
    let path = f.path(key)?;
    match crate::sys::fsutil::read_secret_file(&path) {
        Ok(s) => Some((s, path)),
        Err(msg) => {
            f.error(key, msg);
            None
        }
    }
}
