//! A wrapper for values that must never be printed: URLs with tokens, passwords, keys.

use std::fmt;

/// A secret value. `Debug` and `Display` print `[redacted]`; only [`Secret::expose`] reveals it,
/// so every place that uses the real value is greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The real value, for the one place that has to send it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s} {s:?} {s:#?}"), "[redacted] [redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }
}
