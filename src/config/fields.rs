//! Reads a YAML mapping one field at a time, recording every problem (with its line and column)
//! instead of stopping at the first, and rejecting the keys nobody asked for.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_norway::{Mapping, Value};

use super::error::ConfigError;
use super::locate::locate;
use crate::units::parse_duration;

/// Where errors of one validation run are collected.
pub type Sink = RefCell<Vec<ConfigError>>;

/// The not-yet-read fields of one YAML mapping in one file.
pub struct Fields<'a> {
    file: &'a Path,
    text: &'a str,
    prefix: Vec<String>,
    map: Mapping,
    sink: &'a Sink,
}

impl<'a> Fields<'a> {
    /// Parses a whole file as a mapping. An empty file is an empty mapping.
    pub fn parse_file(file: &'a Path, text: &'a str, sink: &'a Sink) -> Option<Fields<'a>> {
        let value: Value = match serde_norway::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let pos = e.location().map_or((1, 1), |l| (l.line(), l.column()));
                sink.borrow_mut().push(ConfigError::at(
                    file,
                    pos,
                    "",
                    format!("invalid YAML: {}", strip_location(&e.to_string())),
                ));
                return None;
            }
        };
        let map = match value {
            Value::Null => Mapping::new(),
            Value::Mapping(m) => m,
            _ => {
                sink.borrow_mut().push(ConfigError::at(file, (1, 1), "", "expected a mapping of `field: value`"));
                return None;
            }
        };
        Some(Fields { file, text, prefix: Vec::new(), map, sink })
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

    /// The position of `key` (or of this mapping when absent).
    pub fn position(&self, key: &str) -> (usize, usize) {
        let mut parts: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        parts.push(key);
        locate(self.text, &parts)
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
        self.map.contains_key(key)
    }

    /// Removes `key` and converts it with serde; a wrong type is recorded and gives `None`.
    pub fn take<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let value = self.map.remove(key)?;
        if value.is_null() {
            return None;
        }
        match serde_norway::from_value(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(key, strip_location(&e.to_string()));
                None
            }
        }
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

    /// Removes a humantime duration (`30s`, `5m`, `6h`).
    pub fn duration(&mut self, key: &str) -> Option<Duration> {
        self.take_parsed(key, parse_duration)
    }

    /// Removes a path, resolved against the directory of this file.
    pub fn path(&mut self, key: &str) -> Option<PathBuf> {
        let raw: String = self.take(key)?;
        Some(resolve(self.file, &raw))
    }

    /// Removes a nested mapping and reads it field by field.
    pub fn nested(&mut self, key: &str) -> Option<Fields<'a>> {
        let value = self.map.remove(key)?;
        match value {
            Value::Mapping(map) => {
                let mut prefix = self.prefix.clone();
                prefix.push(key.to_string());
                Some(Fields { file: self.file, text: self.text, prefix, map, sink: self.sink })
            }
            Value::Null => None,
            _ => {
                self.error(key, "expected a mapping");
                None
            }
        }
    }

    /// The keys of this mapping that are still unread, as strings.
    pub fn remaining_keys(&self) -> Vec<String> {
        self.map.keys().map(key_text).collect()
    }

    /// Removes and returns every remaining entry (for free-form maps such as `archives:`).
    pub fn drain_nested(&mut self) -> Vec<(String, Option<Fields<'a>>)> {
        let keys = self.remaining_keys();
        keys.into_iter()
            .map(|k| {
                let f = self.nested(&k);
                (k, f)
            })
            .collect()
    }

    /// Ends reading: every key not taken is an unknown field.
    pub fn finish(self, known: &[&str]) {
        for key in self.remaining_keys() {
            self.error(&key, format!("unknown field, expected one of: {}", known.join(", ")));
        }
    }

    fn take_scalar_string(&mut self, key: &str) -> Option<String> {
        match self.map.remove(key)? {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
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

fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_norway::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}
