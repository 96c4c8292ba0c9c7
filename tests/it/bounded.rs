//! Bad input is bounded: a FIFO, a device or an oversized file named by the configuration is
//! refused with its path before a byte is read (never waited for, never read whole), and
//! runmirrors files of any shape are converted or reported, never a panic.

use std::os::unix::fs::PermissionsExt as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pushmirror::compat::runmirrors::import::{Source, convert};
use pushmirror::config::ConfigErrors;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::common::Fixture;

fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status().expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", path.display());
}

/// `config::load` on another thread: a loader that blocks in `open()` would hang the test, so a
/// hang shows as a failure with a message rather than a stuck suite (the bound is a hang guard,
/// not a speed claim).
fn load_guarded(path: &Path) -> Result<pushmirror::config::Config, ConfigErrors> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(pushmirror::config::load(&path));
    });
    rx.recv_timeout(Duration::from_secs(120)).expect("config::load blocked on a special file")
}

#[test]
fn a_fifo_mirror_file_is_refused_not_waited_for() {
    let f = Fixture::new();
    mkfifo(&f.path("mirrors.d/fifo.yaml"));
    std::os::unix::fs::symlink("/dev/zero", f.path("mirrors.d/zero.yaml")).unwrap();
    let errors = load_guarded(&f.config_path()).unwrap_err().to_string();
    assert!(errors.contains("fifo.yaml:1:1: cannot read: not a regular file (a FIFO)"), "{errors}");
    assert!(errors.contains("zero.yaml:1:1: cannot read: not a regular file (a device)"), "{errors}");
}

#[test]
fn a_fifo_as_the_main_config_is_refused_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("pushmirror.yaml");
    mkfifo(&main);
    let errors = load_guarded(&main).unwrap_err().to_string();
    assert!(errors.contains("cannot read config file: not a regular file (a FIFO)"), "{errors}");
}

#[test]
fn fifo_secrets_keys_and_huge_sparse_files_are_refused_with_their_path() {
    let f = Fixture::with_main("identity: keys/id\n");
    std::fs::create_dir_all(f.path("keys")).unwrap();
    mkfifo(&f.path("keys/id"));
    mkfifo(&f.path("pw"));
    // A 1 GiB file that costs nothing on disk: read whole, it would cost a gigabyte of memory.
    let huge = std::fs::File::create(f.path("url")).unwrap();
    huge.set_len(1 << 30).unwrap();
    for secret in ["pw", "url"] {
        std::fs::set_permissions(f.path(secret), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    f.mirror("basic", "http:\n  url: http://127.0.0.1:9/\n  basic_auth: { user: u, password_file: ../pw }\n");
    f.mirror("big", "http:\n  url_file: ../url\n");
    f.mirror("ssh", "ssh: { host: 127.0.0.1, user: mirror }\n");
    let errors = load_guarded(&f.config_path()).unwrap_err().to_string();
    for want in
        ["pw: not a regular file (a FIFO)", "url: larger than 65536 bytes", "keys/id: not a regular file (a FIFO)"]
    {
        assert!(errors.contains(want), "missing {want:?} in\n{errors}");
    }
}

#[test]
fn a_config_file_over_its_size_bound_is_refused_before_it_is_parsed() {
    let f = Fixture::new();
    // 50 MiB of `tags:` used to be parsed (3 GB of memory) and accepted.
    let tags = "  - t\n".repeat(9 * 1024 * 1024 / 6 + 1);
    f.mirror("tags", &format!("http:\n  url: http://127.0.0.1:9/\ntags:\n{tags}"));
    let errors = load_guarded(&f.config_path()).unwrap_err().to_string();
    assert!(errors.contains("tags.yaml:1:1: cannot read: larger than 1048576 bytes"), "{errors}");
}

/// Random runmirrors.mirror files (with and without a runmirrors.conf): every one converts or is
/// reported line by line; none panics.
#[test]
fn random_runmirrors_files_never_panic_the_importer() {
    const WORDS: &[&str] = &[
        "all",
        "staged",
        "mhop",
        "mirror",
        "mirror.example.org",
        "ssh+ftpsync://u@h:22/debian",
        "-i",
        "key",
        "-b",
        "192.0.2.1",
        "-o",
        "BindAddress=::1",
        "-p",
        "2200",
        "user",
        "DELAY",
        "HOOK1=x",
        "MAILTO=a@b",
        "é",
        "日本",
        "🙂",
        "#",
        "=",
        "\"",
        "'",
        "\\",
        "::",
        "[",
        "]",
        "{",
        "}",
        "-",
        "",
        " ",
        "\t",
        "KEYFILE=/k",
        "SSH_OPTS=\"-o A=b\"",
        "PUSHDELAY=600",
        "GENERATE_MIRRORS",
        "$(x)",
        "`x`",
    ];
    let mut rng = StdRng::seed_from_u64(0x7275_6e6d);
    let path = Path::new("runmirrors-debian.mirror");
    let conf_path = Path::new("runmirrors.conf");
    let cases = 3000;
    for case in 0..cases {
        let line = |rng: &mut StdRng| {
            let n = rng.random_range(0..8);
            (0..n).map(|_| WORDS[rng.random_range(0..WORDS.len())]).collect::<Vec<_>>().join(" ")
        };
        let mut text: String = (0..rng.random_range(0..12)).map(|_| line(&mut rng) + "\n").collect();
        if case % 50 == 0 {
            // A very long line and a long file.
            text.push_str(&"x".repeat(200_000));
            text.push_str(&"all m h\n".repeat(2000));
        }
        let conf: String = (0..rng.random_range(0..4)).map(|_| line(&mut rng) + "\n").collect();
        let archive = ["debian", "é", ""][case % 3];
        let run = catch_unwind(AssertUnwindSafe(|| {
            let conf = (case % 2 == 0).then(|| Source { path: conf_path, text: &conf });
            convert(Source { path, text: &text }, conf, Some(archive).filter(|a| !a.is_empty()), Path::new("/home/u"))
        }));
        assert!(run.is_ok(), "case {case} panicked on\n{text}\n--- conf\n{conf}");
    }
    eprintln!("import fuzz: {cases} runmirrors files, no panic");
}

#[test]
fn check_refuses_a_fifo_trace_file_and_a_device_as_known_hosts() {
    let f = Fixture::with_main("identity: keys/id\nknown_hosts: kh\n");
    pushmirror::wire::keys::generate(&f.path("keys/id"), "test").unwrap();
    std::fs::remove_file(f.path("archive/project/trace/master")).unwrap();
    mkfifo(&f.path("archive/project/trace/master"));
    std::os::unix::fs::symlink("/dev/zero", f.path("kh")).unwrap();
    f.mirror("ssh", "ssh: { host: 127.0.0.1, user: mirror }\n");
    let (tx, rx) = std::sync::mpsc::channel();
    let path = f.config_path();
    std::thread::spawn(move || {
        let _ = tx.send(pushmirror::config::verify_files(&pushmirror::config::load(&path).unwrap()));
    });
    let errors = rx.recv_timeout(Duration::from_secs(120)).expect("verify_files blocked").unwrap_err().to_string();
    for want in ["archives.debian.trace: cannot read", "(a FIFO)", "known_hosts: cannot read", "(a device)"] {
        assert!(errors.contains(want), "missing {want:?} in\n{errors}");
    }
}
