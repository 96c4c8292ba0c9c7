//! Small file-system helpers: atomic writes of state, locks shared by every process, and reading
//! secrets only their owner may read.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::vocab::secret::Secret;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsynced, renamed
/// over the target, then the directory fsynced so that the rename survives a power cut. Readers
/// see the old or the new content, never a mix.
///
/// Each call has its own temporary file (process id, a process-wide counter and a random part), so
/// writers in one process or in several never write into each other's.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(temp_name(path));
    let written = write_new(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        // Best effort: the error that matters is the one returned.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}

/// Writes a configuration file of `mode` (a mirror file: 0644) atomically, like [`write_atomic`].
/// With `replace` false an existing `path` is an error (`AlreadyExists`) and is left as it was:
/// the new file is linked into place, which fails rather than overwrites.
pub fn write_config_file(path: &Path, bytes: &[u8], mode: u32, replace: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(temp_name(path));
    let written = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        // The umask may have taken bits away: the mode is what was asked for.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if replace { std::fs::rename(&tmp, path) } else { std::fs::hard_link(&tmp, path) }
    })();
    let _ = std::fs::remove_file(&tmp);
    written?;
    File::open(dir)?.sync_all()
}

/// `.NAME.PID.N.RANDOM.tmp`, with NAME cut short enough that the whole stays a valid file name.
fn temp_name(path: &Path) -> String {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let short: String = name.chars().take(64).collect();
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    format!(".{short}.{}.{call}.{:08x}.tmp", std::process::id(), rand::random::<u32>())
}

/// Creates `path`, which must not exist yet, with `bytes`, and fsyncs it.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Removes `path`; one that is not there is already removed.
pub fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
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

/// Size bounds of the files pushmirror reads because its configuration names them.
pub mod limit {
    /// The main file, a mirror file, `receive`'s file, a runmirrors file to import.
    pub const CONFIG_FILE: u64 = 1024 * 1024;
    /// `url_file`, `password_file`, `token_file`, `hmac_secret_file`.
    pub const SECRET: u64 = 64 * 1024;
    /// The sender's private key.
    pub const KEY: u64 = 64 * 1024;
    /// An archive's trace file (ftpsync's are about 2 KiB).
    pub const TRACE: u64 = 1024 * 1024;
    /// One mirror's rate-limit state (its recent sends, a few bytes each).
    pub const RATE_STATE: u64 = 1024 * 1024;
    /// State pushmirror writes itself and reads back (the freshness memory).
    pub const STATE: u64 = 16 * 1024 * 1024;
    /// pushmirror's known_hosts.
    pub const KNOWN_HOSTS: u64 = 16 * 1024 * 1024;
}

/// Opens `path` for reading without ever blocking in `open()` (a FIFO would), and refuses
/// anything that is not a regular file (FIFOs, devices such as a symlink to `/dev/zero`,
/// directories, sockets) before a byte is read.
pub fn open_regular(path: &Path) -> std::io::Result<(File, std::fs::Metadata)> {
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    let what = if kind.is_file() {
        return Ok((file, meta));
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("not a regular file ({what})")))
}

/// Reads all of `file`, refusing more than `limit` bytes.
pub fn read_limited(mut file: File, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::io::Read::take(&mut file, limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// A regular file of at most `limit` bytes (see [`open_regular`]).
pub fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let (file, _) = open_regular(path)?;
    read_limited(file, limit)
}

/// Like [`read_bounded`], as UTF-8 text.
pub fn read_bounded_text(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, limit)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Reads a secret from a file that only its owner may read: one line of printable text (a
/// token, a password, a URL); trailing newlines are dropped.
pub fn read_secret_file(path: &Path) -> Result<Secret<String>, String> {
    let value = read_private_text(path)?;
    match one_clean_line(value.expose()) {
        Some(why) => Err(format!("{}: {why}", path.display())),
        None => Ok(value),
    }
}

/// Reads a file that only its owner may read (a PEM private key: several lines); trailing
/// newlines are dropped.
pub fn read_private_text(path: &Path) -> Result<Secret<String>, String> {
    let unreadable = |e: std::io::Error| {
        format!("cannot read {}: {}", path.display(), crate::sys::owner::unreadable_reason(path, &e))
    };
    let (file, meta) = open_regular(path).map_err(unreadable)?;
    check_private(path, &meta)?;
    let text = String::from_utf8(read_limited(file, limit::SECRET).map_err(unreadable)?)
        .map_err(|_| format!("cannot read {}: not UTF-8 text", path.display()))?;
    let value = text.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(value))
}

/// Why `value` (a secret, trailing line breaks removed) is not one line of text: a second line or
/// a control character would be cut or refused where the secret is used (a header, a URL), or
/// change what it means without a word. The position is said; the secret never is.
fn one_clean_line(value: &str) -> Option<String> {
    let (at, c) = value.char_indices().find(|(_, c)| c.is_control())?;
    let line = value[..at].matches('\n').count() + 1;
    let column = value[..at].rsplit('\n').next().unwrap_or("").chars().count() + 1;
    Some(if c == '\n' {
        format!(
            "holds more than one line (a line break after line {line}, column {column}): a secret file holds one line"
        )
    } else {
        format!(
            "line {line}, column {column}: a control character (U+{:04X}); a secret file holds one line of printable text",
            c as u32
        )
    })
}

/// Renames a state file that cannot be parsed to `NAME.corrupt-MS` beside it (kept for whoever
/// investigates; [`kept_aside`] finds it, and `status --check` warns while it is there) and
/// returns the new name.
pub fn keep_aside(path: &Path) -> std::io::Result<std::path::PathBuf> {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!("{CORRUPT}{ms}"));
    let aside = path.with_file_name(name);
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

const CORRUPT: &str = ".corrupt-";

/// Every state file [`keep_aside`] set aside in `state_dir` and the directories in it (one level
/// down), sorted; at most 100.
pub fn kept_aside(state_dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![state_dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(state_dir) {
        dirs.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).take(100));
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten().take(100_000) {
            if entry.file_name().to_string_lossy().contains(CORRUPT) {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found.truncate(100);
    found
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

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// What writer `w` writes in its `i`th call: a header naming its length, then filler, so
    /// that any mix or cut of two writes is told from a whole one.
    fn payload(w: usize, i: usize) -> Vec<u8> {
        let len = 64 + (w * 7919 + i * 104_729) % 8192;
        let mut bytes = format!("{w} {i} {len}\n").into_bytes();
        bytes.resize(len, b'a' + u8::try_from(w % 26).unwrap());
        bytes
    }

    fn is_whole(bytes: &[u8]) -> bool {
        let Some(end) = bytes.iter().position(|&b| b == b'\n') else { return false };
        let header = String::from_utf8_lossy(&bytes[..end]);
        let fields: Vec<usize> = header.split(' ').filter_map(|f| f.parse().ok()).collect();
        matches!(fields[..], [w, i, _] if w < 1000 && i < 1000 && payload(w, i) == bytes)
    }

    #[test]
    fn concurrent_atomic_writes_in_one_process_never_fail_and_always_leave_a_whole_file() {
        const WRITERS: usize = 8;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared.json");
        let start = Barrier::new(WRITERS + 1);
        let writing = AtomicUsize::new(WRITERS);
        let (errors, torn) = std::thread::scope(|s| {
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let (start, writing, shared) = (&start, &writing, &shared);
                    let own = dir.path().join(format!("own-{w}.json"));
                    s.spawn(move || {
                        start.wait();
                        let mut errors = Vec::new();
                        for i in 0..100 {
                            // Half the writes go to the target every writer shares.
                            let target = if i % 2 == 0 { shared } else { &own };
                            if let Err(e) = write_atomic(target, &payload(w, i)) {
                                errors.push(format!("{}: {e}", target.display()));
                            }
                        }
                        writing.fetch_sub(1, Ordering::SeqCst);
                        errors
                    })
                })
                .collect();
            let mut torn = 0;
            start.wait();
            while writing.load(Ordering::SeqCst) > 0 {
                if let Ok(bytes) = std::fs::read(&shared) {
                    torn += usize::from(!is_whole(&bytes));
                }
            }
            let errors: Vec<String> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
            (errors, torn)
        });
        assert!(errors.is_empty(), "{} writes failed, first: {}", errors.len(), errors[0]);
        assert_eq!(torn, 0, "reads of the shared target that were not one whole write");
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        let mut expected: Vec<String> = (0..WRITERS).map(|w| format!("own-{w}.json")).collect();
        expected.push("shared.json".into());
        expected.sort();
        assert_eq!(names, expected, "no temporary file is left behind");
        for name in &names {
            assert!(is_whole(&std::fs::read(dir.path().join(name)).unwrap()), "{name} is not one whole write");
        }
    }
}
