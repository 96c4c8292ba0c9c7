//! Small file-system helpers: atomic writes of state, locks shared by every process, and reading
//! secrets only their owner may read.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::secret::Secret;

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
