//! Small file-system helpers: atomic writes of state, locks shared by every process, and reading
//! secrets only their owner may read.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::secret::Secret;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsynced, then
/// renamed over the target. Readers see the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Takes an exclusive lock on the file at `path` (created if missing), held until the returned
/// file is dropped. It is an advisory `flock`: every process that takes it, and every handle in
/// one process, excludes the others. Lock a file that is never replaced: a rename over it would
/// leave the lock on the old inode.
pub fn lock_exclusive(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
    file.lock()?;
    Ok(file)
}

/// Reads a secret from a file that only its owner may read; trailing newlines are dropped.
pub fn read_secret_file(path: &Path) -> Result<Secret<String>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    check_private(path, &meta)?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = text.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(value))
}

/// Refuses files that group or others may access, as OpenSSH does for private keys.
pub fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "permissions {mode:04o} of {} are too open: it must not be accessible by group or others (chmod 600)",
            path.display()
        ));
    }
    Ok(())
}
