//! An archive's version, read from its trace file.

use sha2::{Digest, Sha256};

use crate::config::Archive;

/// The archive's version: the `Archive serial:` line of its trace file, else the trace's first
/// line, else a hash of its content. `None` when there is no trace file.
pub fn read_version(archive: &Archive) -> Option<String> {
    let text = std::fs::read(archive.root.join(&archive.trace)).ok()?;
    Some(version_of(&text))
}

/// The version of a trace file's content.
pub fn version_of(content: &[u8]) -> String {
    let text = String::from_utf8_lossy(content);
    if let Some(serial) = text.lines().find_map(|l| l.strip_prefix("Archive serial:")) {
        return serial.trim().to_string();
    }
    match text.lines().next().map(str::trim) {
        Some(first) if !first.is_empty() => first.to_string(),
        _ => {
            let digest = Sha256::digest(content);
            format!("sha256:{}", digest.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::version_of;

    #[test]
    fn serial_line_then_first_line_then_hash() {
        let trace = b"Wed Nov 25 12:00:03 UTC 2026\nDate: x\nArchive serial: 2026112501\nCreator: ftpsync\n";
        assert_eq!(version_of(trace), "2026112501");
        assert_eq!(version_of(b"Wed Nov 25 12:00:03 UTC 2026\n"), "Wed Nov 25 12:00:03 UTC 2026");
        assert!(version_of(b"\n\n").starts_with("sha256:"));
        assert_ne!(version_of(b"\n\n"), version_of(b"\n\n\n"));
    }
}
