//! archvsync compatibility: the staged barrier against in-process SSH receivers, `runmirrors`
//! through a symlink named `runmirrors` (exact strings per `-k`, config discovery in a bare
//! environment), and `import-runmirrors` on every runmirrors.mirror line form.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use pushmirror::config::{MirrorKind, Transport};
use pushmirror::demo::{Behaviour, SshReceiver};
use pushmirror::push::plan::PushRequest;
use pushmirror::vocab::model::{Outcome, Stage};
use pushmirror::wire::keys;
use russh::keys::PublicKey;

use crate::common::{Fixture, row, run_bin, stderr, stdout};

const IDENTITY: &str = "keys/id_ed25519";
// What archvsync's runmirrors (ftpsync 20180513+nmu1, `signal()`) gives ssh as the remote
// command, byte for byte: it builds `PUSHARGS=" sync:archive:${PUSHARCHIVE}"`, appends
// ` sync:mhop` for an mhop mirror in an mhop push, and passes `"${PUSHARGS} sync:STAGE"` as one
// argument, so the command starts with a space. Downstream wrappers compare
// `$SSH_ORIGINAL_COMMAND` with exactly these strings.
const STAGE1: &str = " sync:archive:debian sync:stage1";
const STAGE2: &str = " sync:archive:debian sync:stage2";
const ALL: &str = " sync:archive:debian sync:all";
const MHOP1: &str = " sync:archive:debian sync:mhop sync:stage1";
const MHOP2: &str = " sync:archive:debian sync:mhop sync:stage2";

/// An installation whose sender key is `keys/id_ed25519`; returns its public key.
fn installation() -> (Fixture, PublicKey) {
    let f = Fixture::with_main(&format!("identity: {IDENTITY}\nknown_hosts: known_hosts\n"));
    let key = keys::generate(&f.path(IDENTITY), "pushmirror@test").unwrap();
    (f, key.public)
}

/// A receiver that answers the first exec requests as `script` says, later ones with exit 0.
async fn receiver(client: &PublicKey, script: impl IntoIterator<Item = Behaviour>) -> SshReceiver {
    SshReceiver::builder().authorize(client).script(script).start().await.unwrap()
}

/// Mirror `name` of type `kind` on `rx`, host key pinned, no retries.
fn mirror(f: &Fixture, name: &str, kind: &str, rx: &SshReceiver) {
    f.mirror(
        name,
        &format!(
            "ssh: {{ host: 127.0.0.1, port: {}, user: archvsync }}\nhost_key: \"{}\"\ntype: {kind}\nretries: 0\n",
            rx.port(),
            rx.host_key_line()
        ),
    );
}

#[tokio::test(start_paused = true)]
async fn stage_two_waits_for_the_last_stage_one_and_all_mirrors_do_not_wait() {
    let (f, client) = installation();
    let mut staged = Vec::new();
    for secs in [1, 2, 3] {
        let rx = receiver(&client, [Behaviour::ExitAfter(Duration::from_secs(secs), 0)]).await;
        mirror(&f, &format!("staged-{secs}s"), "staged", &rx);
        staged.push(rx);
    }
    let broken = receiver(&client, [Behaviour::Exit(3)]).await;
    mirror(&f, "staged-broken", "staged", &broken);
    let plain = receiver(&client, []).await;
    mirror(&f, "plain", "all", &plain);

    let start = tokio::time::Instant::now();
    let report = f.push(PushRequest::default()).await;

    let last_stage_one_end =
        staged.iter().zip(1..).map(|(rx, secs)| rx.log().execs()[0].at + Duration::from_secs(secs)).max().unwrap();
    for (rx, secs) in staged.iter().zip(1..) {
        let name = format!("staged-{secs}s");
        assert_eq!(rx.log().commands(), [STAGE1, STAGE2], "{name}");
        let stage_two_at = rx.log().execs()[1].at;
        assert!(stage_two_at >= last_stage_one_end, "{name} got stage 2 before the last stage 1 ended");
        let rows: Vec<_> = report.triggers.iter().filter(|t| t.mirror == name).collect();
        assert_eq!(
            rows.iter().map(|r| (r.stage, r.outcome)).collect::<Vec<_>>(),
            [(Stage::Stage1, Outcome::Ok), (Stage::Stage2, Outcome::Ok)]
        );
        let waited = rows[0].sync_duration_ms.unwrap();
        assert!((secs * 1000..secs * 1000 + 200).contains(&waited), "{name}: stage 1 took {waited} ms");
    }

    assert_eq!(broken.log().commands(), [STAGE1], "a failed stage 1 gets no stage 2");
    let failed: Vec<_> = report.triggers.iter().filter(|t| t.mirror == "staged-broken").collect();
    assert_eq!((failed[0].stage, failed[0].outcome, failed[0].exit_code), (Stage::Stage1, Outcome::Failed, Some(3)));
    assert_eq!((failed[1].stage, failed[1].outcome), (Stage::Stage2, Outcome::Skipped));
    assert!(report.to_table().contains("failed (remote-exit 3)"), "{}", report.to_table());
    assert_eq!(report.exit_code(), 1);

    assert_eq!(plain.log().commands(), [ALL]);
    assert!(plain.log().execs()[0].at - start < Duration::from_secs(1), "the all mirror waited for stage 1");
    assert_eq!(row(&report, "plain").outcome, Outcome::Ok);
}

#[tokio::test(start_paused = true)]
async fn every_kind_of_ssh_trigger_is_byte_for_byte_what_runmirrors_sends() {
    let tier = Tier::new().await;
    // runmirrors' default kind: a complete push, hubs told sync:mhop.
    let report = tier.f.push(PushRequest::default()).await;
    assert_eq!(report.summary.ok, 5, "{}", report.to_table());
    // The receiver records the exec request's bytes; comparing strings compares them all.
    let received = |name: &str| tier.receivers[name].log().commands();
    assert_eq!(received("leaf"), [ALL]);
    assert_eq!(received("staged"), [STAGE1, STAGE2]);
    assert_eq!(received("hub"), [MHOP1, MHOP2]);
}

/// A `runmirrors` symlink to the pushmirror binary in a fresh directory.
fn runmirrors_symlink() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("runmirrors");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_pushmirror"), &link).unwrap();
    (dir, link)
}

/// Runs `program args` with only the environment variables `env`, off the runtime's thread.
async fn run_bare(program: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(program);
    command.env_clear().args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

/// Three mirrors, one of each type, each on its own receiver.
struct Tier {
    f: Fixture,
    receivers: BTreeMap<&'static str, SshReceiver>,
}

impl Tier {
    async fn new() -> Tier {
        let (f, client) = installation();
        let mut receivers = BTreeMap::new();
        for (name, kind) in [("leaf", "all"), ("staged", "staged"), ("hub", "mhop")] {
            let rx = receiver(&client, []).await;
            mirror(&f, name, kind, &rx);
            receivers.insert(name, rx);
        }
        Tier { f, receivers }
    }

    /// What each mirror received since the last call.
    fn received(&self, seen: &mut BTreeMap<&'static str, usize>) -> BTreeMap<&'static str, Vec<String>> {
        self.receivers
            .iter()
            .map(|(name, rx)| {
                let all = rx.log().commands();
                let from = seen.insert(name, all.len()).unwrap_or(0);
                (*name, all[from..].to_vec())
            })
            .collect()
    }
}

fn expect(leaf: &[&str], staged: &[&str], hub: &[&str]) -> BTreeMap<&'static str, Vec<String>> {
    let owned = |s: &[&str]| s.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    BTreeMap::from([("hub", owned(hub)), ("leaf", owned(leaf)), ("staged", owned(staged))])
}

#[tokio::test]
async fn runmirrors_sends_what_archvsync_runmirrors_sends_for_each_kind() {
    let tier = Tier::new().await;
    let (_dir, runmirrors) = runmirrors_symlink();
    let config = tier.f.config_path();
    let env = [("PUSHMIRROR_CONFIG", config.as_path())];
    let mut seen = BTreeMap::new();
    let cases: [(&[&str], _); 4] = [
        (&["-a", "debian", "-k", "all"], expect(&[ALL], &[STAGE1, STAGE2], &[STAGE1, STAGE2])),
        (&["-a", "debian", "-f", "-k", "stage2"], expect(&[ALL], &[STAGE2], &[STAGE2])),
        // What ftpsync runs after an mhop stage 1: stage 1 only, all mirrors wait for stage 2.
        (&["-a", "debian", "-f", "-k", "mhop"], expect(&[], &[STAGE1], &[MHOP1])),
        // runmirrors' default kind from a shell: a complete push, hubs told sync:mhop.
        (&["-a", "debian"], expect(&[ALL], &[STAGE1, STAGE2], &[MHOP1, MHOP2])),
    ];
    for (args, expected) in cases {
        let out = run_bare(&runmirrors, args, &env).await;
        assert_eq!(out.status.code(), Some(0), "runmirrors {args:?}: {}", stderr(&out));
        assert_eq!(tier.received(&mut seen), expected, "runmirrors {args:?}");
        let text = stdout(&out);
        let kind = args.iter().position(|a| *a == "-k").map_or("mhop", |i| args[i + 1]);
        assert!(text.contains(&format!("runmirrors -a debian -k {kind}")), "header names the push: {text}");
        assert!(text.contains("MIRROR") && text.contains("debian serial 2026112501: "), "{text}");
    }
}

#[tokio::test]
async fn runmirrors_finds_the_config_in_home_with_no_other_environment() {
    let tier = Tier::new().await;
    let (_dir, runmirrors) = runmirrors_symlink();
    let home = tempfile::tempdir().unwrap();
    let user_config = home.path().join(".config/pushmirror/pushmirror.yaml");
    std::fs::create_dir_all(user_config.parent().unwrap()).unwrap();
    let at = |rel: &str| tier.f.path(rel).display().to_string();
    std::fs::write(
        &user_config,
        format!(
            "identity: {}\nknown_hosts: {}\nmirrors_dir: {}\nstate_dir: {}\narchives:\n  debian:\n    root: {}\n",
            at(IDENTITY),
            at("known_hosts"),
            at("mirrors.d"),
            at("state"),
            at("archive")
        ),
    )
    .unwrap();
    // No -a: the only configured archive, as ftpsync calls it for `sync:archive:`.
    let out = run_bare(&runmirrors, &["-f", "-k", "stage2"], &[("HOME", home.path())]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(&user_config.display().to_string()), "{}", stdout(&out));
    assert_eq!(tier.received(&mut BTreeMap::new()), expect(&[ALL], &[STAGE2], &[STAGE2]));
}

#[tokio::test]
async fn runmirrors_exit_codes_usage_errors_and_failures_under_ftpsync() {
    let (f, client) = installation();
    let broken = SshReceiver::builder().authorize(&client).behaviour(Behaviour::Exit(3)).start().await.unwrap();
    mirror(&f, "broken", "all", &broken);
    let (_dir, runmirrors) = runmirrors_symlink();
    let config = f.config_path();
    let env = [("PUSHMIRROR_CONFIG", config.as_path())];

    let out = run_bare(&runmirrors, &["-a", "debian", "-k", "all"], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).contains("failed (remote-exit 3)"), "{}", stdout(&out));
    // ftpsync runs runmirrors under `set -e`: a failed leaf must not fail the hub's own sync.
    let out = run_bare(&runmirrors, &["-a", "debian", "-f", "-k", "all"], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 mirror(s) failed"), "{}", stderr(&out));
    assert_eq!(broken.log().count(), 2);

    for (args, says) in [
        (&["-a", "ubuntu"][..], "unknown archive `ubuntu`"),
        (&["-k", "sideways"][..], "unknown push kind `sideways`"),
        (&["-x"][..], "-x"),
    ] {
        let out = run_bare(&runmirrors, args, &env).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(broken.log().count(), 2, "usage errors send nothing");

    // The same through the subcommand, with pushmirror's own -c.
    let out = tokio::task::spawn_blocking(move || run_bin(&config, &["runmirrors", "-a", "debian", "-k", "stage2"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(broken.log().commands(), [ALL, ALL, ALL]);
}

/// runmirrors' HOOK1 and HOOK3, as `import-runmirrors` carries them over, run under the
/// `runmirrors` drop-in too: a `before_push` that fails sends nothing (as HOOK1 failing stopped
/// runmirrors, and no HOOK3 ran), `after_push` gets the report of a push that went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runmirrors_runs_the_hooks_its_import_carried_over() {
    let (f, client) = installation();
    let rx = receiver(&client, []).await;
    mirror(&f, "leaf", "all", &rx);
    let gate = f.path("gate.sh");
    std::fs::write(&gate, format!("#!/bin/sh\n[ ! -e {} ]\n", f.path("veto").display())).unwrap();
    let after = f.path("after.sh");
    std::fs::write(&after, format!("#!/bin/sh\ncat > {}\n", f.path("after.json").display())).unwrap();
    for script in [&gate, &after] {
        std::fs::set_permissions(script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let main = std::fs::read_to_string(f.config_path()).unwrap();
    let hooks = format!("hooks:\n  before_push: [\"{}\"]\n  after_push: [\"{}\"]\n", gate.display(), after.display());
    std::fs::write(f.config_path(), format!("{main}{hooks}")).unwrap();
    let (_dir, runmirrors) = runmirrors_symlink();
    let config = f.config_path();
    let env = [("PUSHMIRROR_CONFIG", config.as_path())];

    std::fs::write(f.path("veto"), "").unwrap();
    let out = run_bare(&runmirrors, &["-a", "debian", "-k", "all"], &env).await;
    assert!(stderr(&out).contains("push vetoed: before_push hook"), "{}", stderr(&out));
    assert!(stdout(&out).contains("vetoed by the before_push hook"), "{}", stdout(&out));
    assert_eq!(rx.log().count(), 0, "a vetoed push sent something");
    assert!(!f.path("after.json").exists(), "after_push ran for a push that did not happen");

    std::fs::remove_file(f.path("veto")).unwrap();
    let out = run_bare(&runmirrors, &["-a", "debian", "-k", "all"], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(rx.log().commands(), [ALL]);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(f.path("after.json")).unwrap()).unwrap();
    assert_eq!(report["summary"]["ok"], 1, "{report}");
}

/// Every runmirrors.mirror line form, with the line numbers the errors must name.
const MIRROR_FILE: &str = "\
# Debian push mirrors
all eu.plain plain.example.net archvsync
all eu.proto plain2.example.net archvsync 2
staged eu.port port.example.net archvsync -p 2222
mhop eu.hub hub.example.net archvsync -oPort=2200
staged eu.key key.example.net archvsync 2 {OTHER_KEY}
all url.one ssh+ftpsync://mirror@url.example.org
all url.two ssh+ftpsync://mirror@two.example.org:2022/debian

DELAY 60
all eu.jump jump.example.net archvsync -o Port=2201 -J bastion.example.net
staged eu.user user.example.net archvsync -l other
DELAY 600 stage1
weird eu.nope nope.example.net archvsync
";

const CONF_FILE: &str = "\
# runmirrors.conf
KEYFILE=/home/archvsync/.ssh/pushmirror
PUSHDELAY=900
MAILTO=\"mirrors@example.org\"
HOOK1=/usr/local/bin/before-push
SSH_OPTS=\"-o StrictHostKeyChecking=no\"
HOOK2=\"logger between\"
HOOK3=\"/usr/local/bin/after-push --quiet\"
";

#[test]
fn import_runmirrors_converts_every_line_form_and_names_the_rest() {
    let (f, _client) = installation();
    std::fs::remove_dir(f.path("mirrors.d")).unwrap();
    let source = f.path("runmirrors-debian.mirror");
    let conf = f.path("runmirrors-debian.conf");
    // Line 6 names a key of its own, which `check` must be able to load.
    let other_key = f.path("keys/other_key");
    keys::generate(&other_key, "other@test").unwrap();
    std::fs::write(&source, MIRROR_FILE.replace("{OTHER_KEY}", other_key.to_str().unwrap())).unwrap();
    std::fs::write(&conf, CONF_FILE).unwrap();
    let out_dir = f.path("mirrors.d");
    let import = |args: &[&str]| {
        let mut all = vec!["import-runmirrors", source.to_str().unwrap(), "--out", out_dir.to_str().unwrap()];
        all.extend_from_slice(args);
        run_bin(&f.config_path(), &all)
    };
    let out = import(&["--conf", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "some lines cannot be converted: {}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().find(|l| !l.starts_with('#')),
        Some("identity: \"/home/archvsync/.ssh/pushmirror\"")
    );

    let err = stderr(&out);
    let (src, cnf) = (source.display(), conf.display());
    for expected in [
        format!("{src}:10: DELAY 60: "),
        format!("{src}:11: -J bastion.example.net: pushmirror has no setting for this ssh option"),
        format!("{src}:13: DELAY 600 stage1: "),
        format!("{src}:14: unknown type `weird`"),
        format!("{cnf}:4: note: MAILTO: runmirrors mailed every failed trigger; pushmirror mails when"),
        format!("{cnf}:5: note: HOOK1 becomes hooks.before_push: a non-zero exit skips the push"),
        format!("{cnf}:7: HOOK2=logger between: pushmirror has no hook between two mirrors"),
        format!("{cnf}:8: note: HOOK3 becomes hooks.after_push"),
        format!("{cnf}:6: SSH_OPTS -o StrictHostKeyChecking=no: pushmirror always verifies host keys"),
        format!("{src}:12: note: user other: ssh ignored it"),
    ] {
        assert!(err.lines().any(|l| l.starts_with(&expected)), "missing `{expected}` in:\n{err}");
    }
    let lost = err.lines().filter(|l| l.starts_with(&*src.to_string()) || l.starts_with(&*cnf.to_string()));
    assert_eq!(lost.filter(|l| !l.contains(": note: ")).count(), 6, "{err}");
    // MAILTO, HOOK1 and HOOK3 are printed for pushmirror.yaml, which `check` takes as they are.
    let printed = stdout(&out);
    for expected in [
        "notify:\n  mail:\n    to: [\"mirrors@example.org\"]\n",
        "hooks:\n  before_push: [\"/usr/local/bin/before-push\"]\n  after_push: [\"/usr/local/bin/after-push\", \"--quiet\"]\n",
    ] {
        assert!(printed.contains(expected), "missing {expected:?} in:\n{printed}");
    }
    let main = std::fs::read_to_string(f.config_path()).unwrap();
    let added: String = printed.lines().filter(|l| !l.starts_with("identity:")).map(|l| format!("{l}\n")).collect();
    std::fs::write(f.config_path(), format!("{main}{added}")).unwrap();
    assert!(!err.contains(&format!("{src}:6:")), "line 6's key file is carried over:\n{err}");
    let key_yaml = std::fs::read_to_string(out_dir.join("eu.key.yaml")).unwrap();
    assert!(key_yaml.contains(&format!("identity: \"{}\"\n", other_key.display())), "{key_yaml}");

    let check = f.cli(&["check"]);
    assert_eq!(check.status.code(), Some(0), "generated files must pass check: {}", stderr(&check));
    assert!(stdout(&check).contains("9 mirror(s)"), "{}", stdout(&check));
    // The imported hooks are not installed here: `check` says so.
    assert!(
        stderr(&check).contains(
            "warning: hooks.before_push: /usr/local/bin/before-push: No such file or directory (os error 2): every \
             push would be skipped"
        ),
        "{}",
        stderr(&check)
    );

    let targets: Vec<_> = f
        .config()
        .mirrors
        .iter()
        .map(|m| {
            let Transport::Ssh(t) = &m.transport else { panic!("{} is not SSH", m.name) };
            let archives = m.archives.clone().unwrap_or_default().join(",");
            let wait = (m.kind != MirrorKind::All).then_some(m.sync_timeout.as_secs());
            (m.name.as_str().to_owned(), t.host.clone(), t.port, t.user.clone(), m.kind, archives, m.busy_exit, wait)
        })
        .collect();
    let s = |x: &str| x.to_string();
    let expected = [
        (s("eu.hub"), s("hub.example.net"), 2200, s("archvsync"), MirrorKind::Mhop, s("debian"), Some(1), Some(900)),
        (s("eu.jump"), s("jump.example.net"), 2201, s("archvsync"), MirrorKind::All, s("debian"), Some(1), None),
        (s("eu.key"), s("key.example.net"), 22, s("archvsync"), MirrorKind::Staged, s("debian"), Some(1), Some(900)),
        (s("eu.plain"), s("plain.example.net"), 22, s("archvsync"), MirrorKind::All, s("debian"), Some(1), None),
        (
            s("eu.port"),
            s("port.example.net"),
            2222,
            s("archvsync"),
            MirrorKind::Staged,
            s("debian"),
            Some(1),
            Some(900),
        ),
        (s("eu.proto"), s("plain2.example.net"), 22, s("archvsync"), MirrorKind::All, s("debian"), Some(1), None),
        (s("eu.user"), s("user.example.net"), 22, s("archvsync"), MirrorKind::Staged, s("debian"), Some(1), Some(900)),
        (s("url.one"), s("url.example.org"), 22, s("mirror"), MirrorKind::All, s("debian"), Some(1), None),
        (s("url.two"), s("two.example.org"), 2022, s("mirror"), MirrorKind::All, s("debian"), Some(1), None),
    ];
    assert_eq!(targets.len(), expected.len(), "{targets:?}");
    for e in &expected {
        assert!(targets.contains(e), "missing {e:?} in {targets:?}");
    }
    let header = std::fs::read_to_string(out_dir.join("eu.port.yaml")).unwrap();
    assert!(header.starts_with("# Imported by `pushmirror import-runmirrors` from:\n#   staged eu.port port.example.net archvsync -p 2222\n"), "{header}");

    // A second import refuses to overwrite, and says so.
    let before = std::fs::read_to_string(out_dir.join("eu.plain.yaml")).unwrap();
    let again = import(&[]);
    assert_eq!(again.status.code(), Some(1));
    let expected = format!("{src}:2: {} already exists: not overwritten", out_dir.join("eu.plain.yaml").display());
    assert!(stderr(&again).contains(&expected), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(out_dir.join("eu.plain.yaml")).unwrap(), before);
}

#[test]
fn import_runmirrors_exits_0_when_everything_converts_and_2_on_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("runmirrors-debian.mirror");
    std::fs::write(&source, "all a a.example.net archvsync\nstaged b ssh+ftpsync://archvsync@b.example.net\n").unwrap();
    let out_dir = dir.path().join("out");
    let config = dir.path().join("unused.yaml");
    let args = ["import-runmirrors", source.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--format", "json"];
    let out = run_bin(&config, &args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("2 mirror file(s) written") && stderr(&out).contains("everything converted"));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    let written: Vec<PathBuf> = serde_json::from_value(json["written"].clone()).unwrap();
    assert_eq!(written, [out_dir.join("a.yaml"), out_dir.join("b.yaml")]);
    assert_eq!((json["not_converted"].as_u64(), json["findings"].as_array().map(Vec::len)), (Some(0), Some(0)));
    assert!(json["identity"].as_str().is_some_and(|p| p.ends_with("/.ssh/pushmirror")), "{json}");

    let missing = dir.path().join("nope.mirror");
    let out = run_bin(&config, &["import-runmirrors", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(&format!("cannot read {}", missing.display())), "{}", stderr(&out));
}

/// runmirrors.mirror lines with keys and bind addresses of their own — `-i KEYFILE -b ADDRESS`,
/// the old `2 KEYFILE`, `-o IdentityFile= -o BindAddress=` — become mirror files that pass
/// `check` and push with exactly those keys from exactly those addresses; nothing is reported as
/// not carried over. The receiver accepts only the two line keys, not the installation's own.
#[tokio::test]
async fn per_line_keys_and_bind_addresses_are_imported_and_pushed_with() {
    let (f, _not_accepted) = installation();
    let key_a = f.path("keys/a");
    let key_b = f.path("keys/b");
    let a = keys::generate(&key_a, "a@test").unwrap().public;
    let b = keys::generate(&key_b, "b@test").unwrap().public;
    let rx = SshReceiver::builder().authorize(&a).authorize(&b).start().await.unwrap();
    std::fs::write(f.path("known_hosts"), format!("{}\n", rx.known_hosts_line())).unwrap();
    std::fs::remove_dir(f.path("mirrors.d")).unwrap();
    let source = f.path("runmirrors-debian.mirror");
    let conf = f.path("runmirrors-debian.conf");
    let (a_path, b_path) = (key_a.display(), key_b.display());
    std::fs::write(
        &source,
        format!(
            "all m1 127.0.0.1 archvsync -i {a_path} -b 127.0.0.2\n\
             all m2 127.0.0.1 archvsync 2 {b_path}\n\
             all m3 127.0.0.1 archvsync -o IdentityFile={b_path} -o BindAddress=127.0.0.3\n"
        ),
    )
    .unwrap();
    let main_key = f.path(IDENTITY);
    std::fs::write(&conf, format!("KEYFILE={}\nSSH_OPTS=\"-p {}\"\n", main_key.display(), rx.port())).unwrap();
    let out = f.cli(&[
        "import-runmirrors",
        source.to_str().unwrap(),
        "--conf",
        conf.to_str().unwrap(),
        "--out",
        f.path("mirrors.d").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "everything is carried over:\n{}", stderr(&out));
    let note = format!("{}:1: note: key file {a_path}: runmirrors' ssh offered its KEYFILE first", source.display());
    assert!(stderr(&out).lines().any(|l| l.starts_with(&note)), "{}", stderr(&out));

    let check = f.cli(&["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    let report = f.push(PushRequest::default()).await;
    assert_eq!(report.summary.ok, 3, "{}", report.to_table());
    let fp = keys::fingerprint;
    let mut seen: Vec<(String, String)> =
        rx.log().execs().into_iter().map(|e| (e.peer.unwrap().ip().to_string(), e.key_fingerprint)).collect();
    seen.sort();
    let mut expected =
        vec![("127.0.0.2".to_string(), fp(&a)), ("127.0.0.1".to_string(), fp(&b)), ("127.0.0.3".to_string(), fp(&b))];
    expected.sort();
    assert_eq!(seen, expected);
    let m1 = row(&report, "m1");
    assert_eq!((m1.key.as_deref(), m1.source_address), (Some(fp(&a).as_str()), Some("127.0.0.2".parse().unwrap())));
    assert_eq!(row(&report, "m2").source_address, None);
}

#[test]
fn push_staged_and_mhop_flags_are_runmirrors_stage2_and_mhop_from_ftpsync() {
    let (f, _client) = installation();
    for (name, kind) in [("hub", "mhop"), ("leaf", "all"), ("staged", "staged")] {
        f.mirror(name, &format!("ssh: {{ host: {name}.example.net, user: archvsync }}\ntype: {kind}\n"));
    }
    let plan = |flags: &[&str]| {
        let mut args = vec!["push", "--dry-run", "--format", "json"];
        args.extend_from_slice(flags);
        let out = f.cli(&args);
        assert_eq!(out.status.code(), Some(0), "{flags:?}: {}", stderr(&out));
        let report: pushmirror::push::report::Report = serde_json::from_slice(&out.stdout).unwrap();
        report
            .triggers
            .iter()
            .map(|t| {
                let sent = t.note.as_deref().unwrap_or_default();
                let what = sent.split_once(" \"").map_or(sent, |(_, cmd)| cmd.trim_end_matches('"'));
                format!("{} {} {}", t.mirror, t.outcome, what)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        plan(&[]),
        [
            format!("hub planned {MHOP1}"),
            format!("hub planned {MHOP2}"),
            format!("leaf planned {ALL}"),
            format!("staged planned {STAGE1}"),
            format!("staged planned {STAGE2}"),
        ]
    );
    assert_eq!(
        plan(&["--mhop"]),
        [
            format!("hub planned {MHOP1}"),
            "leaf skipped not in a multi-hop stage 1 (gets sync:all with stage 2)".to_string(),
            format!("staged planned {STAGE1}"),
        ]
    );
    assert_eq!(
        plan(&["--staged"]),
        [format!("hub planned {STAGE2}"), format!("leaf planned {ALL}"), format!("staged planned {STAGE2}"),]
    );
    assert_eq!(f.cli(&["push", "--staged", "--mhop"]).status.code(), Some(2));
}

/// A relative KEYFILE is resolved as runmirrors resolved it: in the home of the user who pushes
/// (`--home DIR`, by default the service user's) — never in the home of whoever imports (root's,
/// `/root/.ssh/pushmirror`, when an administrator ran it as root).
#[test]
fn a_relative_keyfile_is_resolved_in_the_pushing_users_home() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("runmirrors-debian.mirror");
    std::fs::write(&source, "all a a.example.net archvsync\n").unwrap();
    let conf = dir.path().join("runmirrors.conf");
    std::fs::write(&conf, "KEYFILE=.ssh/pushmirror\n").unwrap();
    let out_dir = dir.path().join("out");
    let (source, conf, out_dir) = (source.to_str().unwrap(), conf.to_str().unwrap(), out_dir.to_str().unwrap());
    let config = dir.path().join("unused.yaml");
    let args = ["import-runmirrors", source, "--conf", conf, "--out", out_dir, "--home", "/var/lib/pushmirror"];
    let out = run_bin(&config, &args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("identity: \"/var/lib/pushmirror/.ssh/pushmirror\""), "{}", stdout(&out));
    // Without --home and without the service user: this user's home, said so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushmirror"))
        .args(["-c", config.to_str().unwrap(), "import-runmirrors", source, "--conf", conf, "--out", out_dir])
        .env("HOME", "/home/importer")
        .output()
        .unwrap();
    if pushmirror::sys::owner::home_of("pushmirror").is_none() {
        assert!(stdout(&out).contains("identity: \"/home/importer/.ssh/pushmirror\""), "{}", stdout(&out));
        assert!(stderr(&out).contains("user pushmirror does not exist here"), "{}", stderr(&out));
    }
}
