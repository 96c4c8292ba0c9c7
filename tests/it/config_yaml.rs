//! Config files as YAML: every position comes from the parser, and no edit of a valid file makes
//! `config::load` panic or point outside the file it names.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use pushmirror::config::{self, ConfigError};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::common::Fixture;

/// `line:col: field: message` of each error, in order.
fn located(errors: &[ConfigError]) -> Vec<String> {
    errors.iter().map(|e| format!("{}:{}: {}: {}", e.line, e.col, e.field, e.message)).collect()
}

#[test]
fn a_multibyte_archive_name_after_a_list_line_is_located_not_a_panic() {
    // The old position finder sliced `      - aé: 1` inside the `é` and `check` exited 101.
    let f = Fixture::new();
    f.set_main(
        "mirrors_dir: mirrors.d\nstate_dir: state\narchives:\n  debian:\n    root: archive\n    locks:\n      \
         - aé: 1\n  aé:\n    trace: x\n",
    );
    let errors = config::load(&f.config_path()).unwrap_err().0;
    assert!(errors.iter().all(|e| e.path == f.config_path()), "{errors:?}");
    assert_eq!(
        located(&errors),
        [
            "6:5: archives.debian.locks: invalid type: map, expected a string",
            "8:3: archives.aé: archive names may hold only letters, digits, `.`, `_` and `-`",
            "8:3: archives.aé.root: missing: the archive's root directory",
        ]
    );
}

#[test]
fn yaml_the_config_does_not_accept_is_reported_where_it_is() {
    let f = Fixture::new();
    f.mirror("dup", "http:\n  url: http://127.0.0.1:9/\ntimeout: 5s\nretries: 1\ntimeout: 6s\n");
    f.mirror("alias", "http: &h\n  url: http://127.0.0.1:9/\n");
    f.mirror("tagged", "http:\n  url: !!binary aGk=\n");
    f.mirror("two-docs", "http:\n  url: http://127.0.0.1:9/\n---\nretries: 1\n");
    f.mirror("flow", "http: { url: \"http://127.0.0.1:9/日本\", méthode: POST }\n");
    f.mirror("deep", &format!("tags: {}{}\n", "[".repeat(40), "]".repeat(40)));
    let errors = config::load(&f.config_path()).unwrap_err().to_string();
    let dir = f.path("mirrors.d");
    for (file, want) in [
        ("dup", "5:1: duplicate key `timeout`, first defined at line 3"),
        ("alias", "1:7: anchors and aliases (`&name`, `*name`) are not supported"),
        ("tagged", "2:8: tag `!!binary` is not supported"),
        ("two-docs", "3:1: more than one YAML document"),
        // Columns count characters: 日本 are two, not six.
        ("flow", "1:39: http.méthode: unknown field"),
        // At the 32nd bracket: the file's own mapping is the first level.
        ("deep", "1:38: nested more than 32 levels deep"),
    ] {
        let want = format!("{}/{file}.yaml:{want}", dir.display());
        assert!(errors.contains(&want), "missing `{want}` in:\n{errors}");
    }
}

/// The shipped main file and mirror files, with the key and secret files an operator creates
/// next to them (as the test of the shipped examples sets them up), laid out afresh for each case.
/// On tmpfs where there is one: on a disk mounted with `discard`, removing or truncating a file
/// costs milliseconds, which made this test ten times slower.
struct Shipped {
    dir: tempfile::TempDir,
    /// Every YAML file, relative to an installation, with its shipped text.
    files: Vec<(PathBuf, String)>,
    /// The key and secret files, relative to an installation and kept under `dir/base`.
    extras: Vec<PathBuf>,
}

impl Shipped {
    fn new() -> Self {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
        let mut files = vec![(
            PathBuf::from("pushmirror.yaml"),
            std::fs::read_to_string(repo.join("dist/pushmirror.yaml")).unwrap(),
        )];
        let mut examples: Vec<PathBuf> =
            std::fs::read_dir(repo.join("mirrors.d")).unwrap().map(|e| e.unwrap().path()).collect();
        examples.sort();
        for path in examples {
            let rel = Path::new("mirrors.d").join(path.file_name().unwrap());
            files.push((rel, std::fs::read_to_string(&path).unwrap()));
        }
        let base = dir.path().join("base");
        pushmirror::wire::keys::generate(&base.join("keys/id_ed25519"), "pushmirror@example").unwrap();
        pushmirror::demo::write_secret(&base.join("mirrors.d/secrets/example.pw"), "s3cret").unwrap();
        pushmirror::demo::write_secret(
            &base.join("mirrors.d/secrets/example-mirror.url"),
            "https://cdn.example.com/push/5f0c1f3e-8a54-4a2b-9d3e-0b6f3d9c2a71",
        )
        .unwrap();
        let extras = ["keys/id_ed25519", "mirrors.d/secrets/example.pw", "mirrors.d/secrets/example-mirror.url"];
        Shipped { dir, files, extras: extras.iter().map(PathBuf::from).collect() }
    }

    /// Lays out installation `name` with these texts (as bytes, which need not be UTF-8) and
    /// returns its main file.
    fn install(&self, name: &str, texts: &[(PathBuf, Vec<u8>)]) -> PathBuf {
        let root = self.dir.path().join(name);
        std::fs::create_dir_all(root.join("keys")).unwrap();
        std::fs::create_dir_all(root.join("mirrors.d/secrets")).unwrap();
        for rel in &self.extras {
            std::fs::copy(self.dir.path().join("base").join(rel), root.join(rel)).unwrap();
        }
        for (rel, bytes) in texts {
            std::fs::write(root.join(rel), bytes).unwrap();
        }
        root.join("pushmirror.yaml")
    }
}

/// What random edits insert: YAML's indicators, multi-byte characters, control characters.
#[rustfmt::skip]
const TOKENS: &[&str] = &[
    "é", "日", "本", "🦀", "\u{1F600}", "\u{FEFF}", "\u{85}", "\u{2028}", "\0", "\t", " ", "  ", "\n", "\r",
    "\r\n", ":", ": ", "-", "- ", "? ", "{", "}", "[", "]", ",", "#", "'", "\"", "\\", "|", ">", "|-\n", "&a ",
    "*a", "&a", "!!tag ", "!!str ", "!!int ", "!local ", "! ", "%YAML 1.2\n", "%TAG ! tag:x,2000:\n", "---\n",
    "...\n", "<<: *a", "~", "null", "true", "0x1F", "0o17", "0644", "1e9", ".inf", ".nan", "-1",
    "99999999999999999999999", "30s", "aé:", "日本: 1", "- aé: 1", "{a: 1}", "[a, b]", "@", "`", "%", "\u{7f}",
];

/// A byte offset at a random character boundary (the end included).
fn boundary(rng: &mut StdRng, text: &str) -> usize {
    let n = text.chars().count();
    let i = rng.random_range(0..=n);
    text.char_indices().nth(i).map_or(text.len(), |(b, _)| b)
}

/// The lines of `text`, each with its line break.
fn lines(text: &str) -> Vec<String> {
    text.split_inclusive('\n').map(str::to_string).collect()
}

/// One random edit of `text`.
fn mutate(rng: &mut StdRng, text: &mut String) {
    let mut ls = lines(text);
    match rng.random_range(0..12) {
        0 if !ls.is_empty() => {
            ls.remove(rng.random_range(0..ls.len()));
        }
        1 if !ls.is_empty() => {
            let i = rng.random_range(0..ls.len());
            ls.insert(rng.random_range(0..=ls.len()), ls[i].clone());
        }
        2 if ls.len() > 1 => {
            let (a, b) = (rng.random_range(0..ls.len()), rng.random_range(0..ls.len()));
            ls.swap(a, b);
        }
        3 if !ls.is_empty() => {
            // Indentation changed: more, less, or tabs.
            let i = rng.random_range(0..ls.len());
            let line = &ls[i];
            ls[i] = match rng.random_range(0..3) {
                0 => format!("{}{line}", " ".repeat(rng.random_range(1..5))),
                1 => line.trim_start_matches(' ').to_string(),
                _ => format!("\t{line}"),
            };
        }
        4 if !ls.is_empty() => {
            // A value replaced.
            let i = rng.random_range(0..ls.len());
            if let Some(colon) = ls[i].find(": ") {
                let token = TOKENS[rng.random_range(0..TOKENS.len())];
                ls[i] = format!("{}: {token}\n", &ls[i][..colon]);
            }
        }
        5 => {
            // Deep nesting, flow or block.
            let n = rng.random_range(1..400);
            let deep = match rng.random_range(0..4) {
                0 => format!("{}{}", "[".repeat(n), "]".repeat(n)),
                1 => format!("{}{}", "{a: ".repeat(n), "}".repeat(n)),
                2 => "[".repeat(n),
                _ => (0..n.min(60)).map(|d| format!("{}k{d}:\n", "  ".repeat(d))).collect(),
            };
            let at = boundary(rng, text);
            text.insert_str(at, &deep);
            return;
        }
        6 => {
            // Truncated.
            let at = boundary(rng, text);
            text.truncate(at);
            return;
        }
        7 => {
            // Any character at all.
            let c = loop {
                if let Some(c) = char::from_u32(rng.random_range(0..0x11_0000)) {
                    break c;
                }
            };
            let at = boundary(rng, text);
            text.insert(at, c);
            return;
        }
        _ => {
            let token = TOKENS[rng.random_range(0..TOKENS.len())];
            let at = boundary(rng, text);
            text.insert_str(at, token);
            return;
        }
    }
    *text = ls.concat();
}

/// Lines as YAML counts them: `\r\n`, `\r` and `\n` each end one.
fn yaml_lines(text: &str) -> Vec<&str> {
    let (b, mut out, mut start, mut i) = (text.as_bytes(), Vec::new(), 0, 0);
    while i < b.len() {
        match b[i] {
            b'\n' | b'\r' => {
                out.push(&text[start..i]);
                i += if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                start = i;
            }
            _ => i += 1,
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Whether `e` points into (or just past the end of) the file it names.
fn check_position(e: &ConfigError, texts: &HashMap<PathBuf, String>) -> Result<(), String> {
    let on_disk;
    let text = match texts.get(&e.path) {
        Some(t) => t.as_str(),
        None => {
            // A file the edits did not write (a mirrors_dir edited to `.`, say); unreadable is empty.
            on_disk = std::fs::read_to_string(&e.path).unwrap_or_default();
            &on_disk
        }
    };
    let ls = yaml_lines(text);
    if !(1..=ls.len() + 1).contains(&e.line) {
        return Err(format!("line {} of a file with {} lines", e.line, ls.len()));
    }
    let chars = ls.get(e.line - 1).map_or(0, |l| l.chars().count());
    if !(1..=chars + 1).contains(&e.col) {
        return Err(format!("column {} of a line with {chars} characters", e.col));
    }
    Ok(())
}

const CASES: usize = 6_000;

#[test]
fn random_edits_of_the_shipped_config_never_panic_and_every_error_points_into_its_file() {
    let shipped = Shipped::new();
    let pristine: Vec<(PathBuf, Vec<u8>)> =
        shipped.files.iter().map(|(rel, text)| (rel.clone(), text.clone().into_bytes())).collect();
    if let Err(e) = config::load(&shipped.install("pristine", &pristine)) {
        panic!("the shipped config does not load:\n{e}");
    }
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(0x5eed_9a11);
    let (mut loaded, mut rejected, mut errors_checked) = (0, 0, 0);
    for case in 0..CASES {
        // Edit one file, sometimes two, with one to four edits each; now and then add a byte
        // that is not UTF-8 (the file then cannot be read: an error at 1:1).
        let mut texts = shipped.files.clone();
        let mut edited = Vec::new();
        for _ in 0..if rng.random_bool(0.2) { 2 } else { 1 } {
            let i = rng.random_range(0..texts.len());
            for _ in 0..rng.random_range(1..=4) {
                mutate(&mut rng, &mut texts[i].1);
            }
            edited.push(i);
        }
        let mut bytes: Vec<(PathBuf, Vec<u8>)> =
            texts.iter().map(|(rel, text)| (rel.clone(), text.clone().into_bytes())).collect();
        if rng.random_bool(0.02) {
            let file = &mut bytes[edited[0]].1;
            file.insert(rng.random_range(0..=file.len()), rng.random_range(0x80..=0xff));
        }
        let name = format!("case-{case}");
        let main = shipped.install(&name, &bytes);
        let root = main.parent().unwrap().to_path_buf();
        let on_disk: HashMap<PathBuf, String> =
            bytes.iter().filter_map(|(rel, b)| Some((root.join(rel), String::from_utf8(b.clone()).ok()?))).collect();

        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let _ = config::identity_path(&main);
            config::load(&main)
        }));
        let describe = || {
            edited
                .iter()
                .map(|&i| format!("--- {}:\n{}", bytes[i].0.display(), String::from_utf8_lossy(&bytes[i].1)))
                .collect::<Vec<_>>()
                .join("\n")
        };
        match outcome {
            Err(_) => panic!("case {case}: config::load panicked on:\n{}", describe()),
            Ok(Ok(_)) => loaded += 1,
            Ok(Err(errors)) => {
                rejected += 1;
                assert!(!errors.0.is_empty(), "case {case}: rejected without an error");
                for e in &errors.0 {
                    if let Err(why) = check_position(e, &on_disk) {
                        panic!("case {case}: `{e}` is out of its file ({why}) on:\n{}", describe());
                    }
                    errors_checked += 1;
                }
            }
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
    eprintln!(
        "config fuzz: {CASES} cases ({loaded} loaded, {rejected} rejected with {errors_checked} errors, every one \
         inside its file) in {:.1?}",
        started.elapsed()
    );
    assert!(rejected > CASES / 2 && loaded > 0, "the edits should break most cases, not all: {loaded} loaded");
}

#[test]
fn a_duration_beyond_its_maximum_is_a_config_error_not_a_later_overflow() {
    // `settle: 300000000000y` used to pass `check`; the watcher then panicked on Instant overflow.
    let f = Fixture::new();
    f.set_main("mirrors_dir: mirrors.d\nstate_dir: state\narchives:\n  debian:\n    root: archive\n    settle: 300000000000y\n");
    f.mirror("m", "http:\n  url: http://127.0.0.1:9/\nsync_timeout: 8d\nrate_limit: 1/400d\n");
    let errors = config::load(&f.config_path()).unwrap_err().to_string();
    for want in [
        "pushmirror.yaml:6:5: archives.debian.settle: duration `300000000000y` is longer than the maximum 1day",
        "m.yaml:3:1: sync_timeout: duration `8d` is longer than the maximum 7days",
        "m.yaml:4:1: rate_limit: invalid rate limit `1/400d`: duration `400d` is longer than the maximum",
    ] {
        assert!(errors.contains(want), "missing {want:?} in\n{errors}");
    }
}
