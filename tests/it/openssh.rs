//! Interop with a real OpenSSH sshd and forced commands in authorized_keys, as downstream mirrors
//! run it.

use std::sync::Arc;

use pushmirror::push::engine::Options;
use pushmirror::push::plan::PushRequest;
use pushmirror::push::report::Report;
use pushmirror::transport::Transports;
use pushmirror::vocab::clock::Clock;
use pushmirror::vocab::model::{ErrorClass, Outcome};
use pushmirror::wire::keys;

use crate::common::{Fixture, row, stderr, stdout};
use crate::sshd::{self, Sshd};

const OPTIONS: &str = "no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty";

/// An installation whose sender key will be `keys/id_ed25519`.
fn installation() -> Fixture {
    Fixture::with_main("identity: keys/id_ed25519\nknown_hosts: known_hosts\n")
}

/// Mirror `m` on `sshd`, whose host key goes into pushmirror's known_hosts.
fn mirror_on(f: &Fixture, sshd: &Sshd, extra: &str) {
    std::fs::write(f.path("known_hosts"), sshd.known_hosts_line()).unwrap();
    f.mirror(
        "m",
        &format!(
            "ssh: {{ host: 127.0.0.1, port: {}, user: {} }}\nretries: 0\n{extra}",
            sshd.port,
            sshd::current_user()
        ),
    );
}

/// A sender key for `f` and the authorized_keys line binding it to `command`.
fn key_line(f: &Fixture, command: &str) -> String {
    let key = keys::generate(&f.path("keys/id_ed25519"), "pushmirror@test").unwrap();
    keys::authorized_keys_line(&key.public, command, None).unwrap()
}

async fn push(f: &Fixture) -> Report {
    let config = f.config();
    let plan = pushmirror::push::plan_push(&config, &PushRequest::default()).unwrap();
    let engine = pushmirror::push::engine(
        &config,
        Arc::new(Transports::new(&config, pushmirror::transport::mqtt::connect::BrokerSession::Once).unwrap()),
        Clock::system(),
    );
    pushmirror::push::execute(&config, &engine, &plan, &Options::default(), "test").await
}

/// A forced command that appends `$SSH_ORIGINAL_COMMAND` to `file`, then runs `then`.
fn recorder(file: &std::path::Path, then: &str) -> String {
    format!("echo \"$SSH_ORIGINAL_COMMAND\" >> {}; {then}", file.display())
}

/// An installation whose key a real sshd binds to a forced command that records what it was
/// asked to run (in `received`) and then runs `then`; mirror `m` points at it.
struct Downstream {
    f: Fixture,
    sshd: Sshd,
    received: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// `None` outside CI when sshd is not installed.
fn downstream(then: &str, extra: &str) -> Option<Downstream> {
    if !sshd::available() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let received = dir.path().join("received");
    let f = installation();
    // `{dir}` in `then` is a directory of the test's, for what the command leaves behind.
    let then = then.replace("{dir}", dir.path().to_str().unwrap());
    let sshd = Sshd::start(&key_line(&f, &recorder(&received, &then)));
    mirror_on(&f, &sshd, extra);
    Some(Downstream { f, sshd, received, _dir: dir })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_delivers_exactly_the_ftpsync_string_to_the_forced_command() {
    let Some(d) = downstream("exit 0", "") else { return };
    let report = push(&d.f).await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.attempts, r.exit_code), (Outcome::Ok, 1, Some(0)), "{r:?}\n{}", d.sshd.log());
    assert_eq!(std::fs::read_to_string(&d.received).unwrap(), " sync:archive:debian sync:all\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_printed_by_keygen_works_when_pasted_verbatim() {
    if !sshd::available() {
        return;
    }
    let received = tempfile::tempdir().unwrap();
    let log = received.path().join("received");
    let f = installation();
    let command = format!("echo \"$SSH_ORIGINAL_COMMAND\" >> {}", log.display());
    let out = f.cli(&[
        "keygen",
        "--out",
        f.path("keys/id_ed25519").to_str().unwrap(),
        "--command",
        &command,
        "--from",
        "127.0.0.1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let line = stdout(&out).lines().find(|l| l.contains("ssh-ed25519")).expect("an authorized_keys line").to_string();
    assert!(line.starts_with(&format!("{OPTIONS},command=")) && line.contains("from=\"127.0.0.1\""), "{line}");
    let sshd = Sshd::start(&format!("{line}\n"));
    mirror_on(&f, &sshd, "");
    let out = f.cli(&["push", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), sshd.log());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), " sync:archive:debian sync:all\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_command_with_a_backslash_runs_as_written() {
    if !sshd::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let f = installation();
    // A single-quoted backslash reaches printf as is; the double quotes need sshd's `\"`.
    let sshd = Sshd::start(&key_line(&f, &format!("printf '%s' 'a\\b' > \"{}\"", out.display())));
    mirror_on(&f, &sshd, "");
    let report = push(&f).await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.exit_code), (Outcome::Ok, Some(0)), "{r:?}\n{}", sshd.log());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "a\\b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_command_still_running_at_timeout_is_ok_still_running() {
    let Some(d) = downstream("sleep 30; touch {dir}/finished", "timeout: 2s\n") else { return };
    let report = push(&d.f).await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.note.as_deref()), (Outcome::Ok, Some("still running")), "{r:?}\n{}", d.sshd.log());
    // The push ended while the command ran: it had started, and has not finished.
    assert_eq!(std::fs::read_to_string(&d.received).unwrap(), " sync:archive:debian sync:all\n");
    assert!(!d._dir.path().join("finished").exists(), "the push waited for the command to end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_zero_exit_is_remote_exit_with_its_code() {
    let Some(d) = downstream("echo 'no such archive' >&2; exit 3", "") else { return };
    let report = push(&d.f).await;
    let r = row(&report, "m");
    assert_eq!(
        (r.outcome, r.error_class, r.exit_code),
        (Outcome::Failed, Some(ErrorClass::RemoteExit), Some(3)),
        "{r:?}"
    );
    assert!(r.error.as_deref().unwrap().contains("no such archive"), "{r:?}");
    assert!(report.to_table().contains("failed (remote-exit 3)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_is_refused_and_nothing_runs() {
    let Some(d) = downstream("exit 0", "") else { return };
    // known_hosts holds another key for this host:port.
    let other = pushmirror::demo::ssh::random_host_key().unwrap();
    let other_line = format!("[127.0.0.1]:{} {}\n", d.sshd.port, other.public_key().to_openssh().unwrap());
    std::fs::write(d.f.path("known_hosts"), other_line).unwrap();
    let report = push(&d.f).await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.error_class), (Outcome::Failed, Some(ErrorClass::HostKey)), "{r:?}");
    let error = r.error.as_deref().unwrap();
    assert!(error.contains(&keys::fingerprint(other.public_key())) && error.matches("SHA256:").count() == 2, "{error}");
    assert!(!d.received.exists(), "a command ran on a host whose key did not match");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sshd_does_not_know_is_an_auth_failure() {
    let Some(d) = downstream("exit 0", "") else { return };
    // Replace the authorized sender key with one sshd does not know.
    let key = d.f.path("keys/id_ed25519");
    std::fs::remove_file(&key).unwrap();
    std::fs::remove_file(keys::pub_path(&key)).unwrap();
    keys::generate(&key, "stranger").unwrap();
    let report = push(&d.f).await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.error_class, r.attempts), (Outcome::Failed, Some(ErrorClass::Auth), 1), "{r:?}");
    assert!(!d.received.exists());
}

/// A waiting trigger hands its concurrency permit back once the remote command runs: with
/// `concurrency: 4`, a fifth sync starts while the first four still run. Each forced command
/// records that it started and ends only once five have started, so the push can succeed only if
/// more than four ran at once; nothing here depends on how fast the machine is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_syncs_return_their_permits_so_more_than_concurrency_run_at_once() {
    if !sshd::available() {
        return;
    }
    let f = Fixture::with_main("identity: keys/id_ed25519\nknown_hosts: known_hosts\nconcurrency: 4\n");
    let started = f.path("started");
    let command = format!(
        "echo $$ >> {log}; i=0; while [ $(wc -l < {log}) -lt 5 ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; [ $(wc -l < {log}) -ge 5 ]",
        log = started.display()
    );
    let line = key_line(&f, &command);
    let sshd = Sshd::start(&line);
    std::fs::write(f.path("known_hosts"), sshd.known_hosts_line()).unwrap();
    for i in 0..12 {
        f.mirror(
            &format!("m{i:02}"),
            &format!(
                "ssh: {{ host: 127.0.0.1, port: {}, user: {} }}\nwait_for_sync: true\nretries: 0\ntimeout: 60s\nsync_timeout: 10m\n",
                sshd.port,
                sshd::current_user()
            ),
        );
    }
    let report = push(&f).await;
    assert_eq!(report.summary.ok, 12, "{}\n{}", report.to_table(), sshd.log());
    for r in &report.triggers {
        // Exit 0: this command saw five started while it ran.
        assert_eq!(r.exit_code, Some(0), "{}", r.mirror);
        assert!(r.sync_duration_ms.is_some(), "{}: the sync duration is reported", r.mirror);
    }
    let lines = std::fs::read_to_string(&started).unwrap().lines().count();
    assert_eq!(lines, 12, "every mirror's command ran once");
}

/// Three tiers on loopback, each hop a real sshd with a forced command, chained the way ftpsync's
/// HUB mode does it: tier 1's forced command "syncs" (copies the trace file), then runs
/// `runmirrors -a debian -f -k all` — a symlink to pushmirror — which pushes tier 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tiers_chain_through_runmirrors() {
    if !sshd::available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tier2_log = work.path().join("tier2-received");

    // Tier 1's own pushmirror installation, pushing to tier 2.
    let tier1 = installation();
    let tier2 = Sshd::start(&key_line(&tier1, &recorder(&tier2_log, "exit 0")));
    mirror_on(&tier1, &tier2, "");
    std::fs::create_dir_all(work.path().join("bin")).unwrap();
    let runmirrors = work.path().join("bin/runmirrors");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_pushmirror"), &runmirrors).unwrap();
    let hub_script = work.path().join("ftpsync-hub.sh");
    std::fs::write(
        &hub_script,
        format!(
            "#!/bin/sh\n# What ftpsync does on a hub: sync, drop the lock, then call runmirrors.\n\
             cp {upstream_trace} {tier1_trace}\n\
             PUSHMIRROR_CONFIG={config} {runmirrors} -a debian -f -k all > {log} 2>&1\n",
            upstream_trace = work.path().join("tier0-trace").display(),
            tier1_trace = tier1.path("archive/project/trace/master").display(),
            config = tier1.config_path().display(),
            runmirrors = runmirrors.display(),
            log = work.path().join("runmirrors.log").display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hub_script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(work.path().join("tier0-trace"), "Archive serial: 2026112599\n").unwrap();

    // Tier 0 pushes tier 1, whose forced command is the hub script.
    let tier0 = installation();
    let tier1_sshd = Sshd::start(&key_line(&tier0, &hub_script.display().to_string()));
    mirror_on(&tier0, &tier1_sshd, "wait_for_sync: true\n");
    let report = push(&tier0).await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.exit_code), (Outcome::Ok, Some(0)), "{r:?}\n{}", tier1_sshd.log());

    let runmirrors_log = std::fs::read_to_string(work.path().join("runmirrors.log")).unwrap_or_default();
    assert_eq!(
        std::fs::read_to_string(&tier2_log).unwrap_or_default(),
        " sync:archive:debian sync:all\n",
        "tier 2 did not get the chained trigger; runmirrors said:\n{runmirrors_log}"
    );
    let tier1_trace = std::fs::read_to_string(tier1.path("archive/project/trace/master")).unwrap();
    assert!(tier1_trace.contains("2026112599"), "tier 1 synced before pushing");
    assert!(runmirrors_log.contains("2026112599"), "tier 1's report names the serial it synced:\n{runmirrors_log}");
}

/// The forced commands of Ubuntu's push setup: a script per archive that records each run as a
/// file `ran/NAME.PID` (written under another name, then renamed, so a file that exists is whole).
fn sync_script(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let script = dir.join(name);
    let ran = dir.join("ran");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$SSH_ORIGINAL_COMMAND\" > {ran}/.{name}.$$ && mv {ran}/.{name}.$$ {ran}/{name}.$$\n",
            ran = ran.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

/// How many times `name` has recorded a run in `ran`.
fn runs(ran: &std::path::Path, name: &str) -> usize {
    let prefix = format!("{name}.");
    std::fs::read_dir(ran)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(&prefix))
        .count()
}

/// Waits (up to a minute) until `name` has recorded `n` runs in `ran`, woken by inotify rather
/// than by polling: `command="… &"` backgrounds the script, which may still be starting when the
/// trigger has returned.
async fn wait_for_runs(ran: &std::path::Path, name: &str, n: usize) {
    use notify::Watcher as _;
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })
    .unwrap();
    watcher.watch(ran, notify::RecursiveMode::NonRecursive).unwrap();
    let done = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while runs(ran, name) < n {
            if events.recv().await.is_none() {
                return;
            }
        }
    })
    .await;
    assert!(done.is_ok() && runs(ran, name) >= n, "{name} did not record {n} run(s)");
}

/// The main file of Ubuntu's setup against one downstream: archive `ubuntu` with key A from
/// `archive_from`, `ubuntu-releases` with key B from `releases_from`.
fn ubuntu_main(archive_from: &str, releases_from: &str) -> String {
    format!(
        "mirrors_dir: mirrors.d\nstate_dir: state\nknown_hosts: known_hosts\narchives:\n  \
         ubuntu:\n    root: archive\n    identity: keys/archive\n    source_address: {archive_from}\n  \
         ubuntu-releases:\n    root: archive\n    identity: keys/releases\n    source_address: {releases_from}\n"
    )
}

async fn push_archive(f: &Fixture, archive: &str) -> Report {
    f.push(PushRequest { archive: Some(archive.into()), ..PushRequest::default() }).await
}

/// Ubuntu's push mirroring against a real sshd: the downstream's authorized_keys holds one key per
/// archive, each bound to the archive's script and to the address that archive is pushed from.
/// The downstream picks the script by the key that logged in, so each push must use its archive's
/// key from its archive's address; with the addresses swapped sshd refuses both keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ubuntu_one_key_per_archive_each_from_its_own_address() {
    if !sshd::available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ran = work.path().join("ran");
    std::fs::create_dir(&ran).unwrap();
    let f = Fixture::new();
    f.set_main(&ubuntu_main("127.0.0.2", "127.0.0.3"));
    let archive_key = keys::generate(&f.path("keys/archive"), "archive@upstream").unwrap().public;
    let releases_key = keys::generate(&f.path("keys/releases"), "releases@upstream").unwrap().public;
    // Exactly the lines of Ubuntu's page, with this test's paths.
    let line = |script: &std::path::Path, from: &str, key: &russh::keys::PublicKey| {
        format!("{OPTIONS},command=\"{} &\",from=\"{from}\" {}\n", script.display(), key.to_openssh().unwrap())
    };
    let authorized_keys = line(&sync_script(work.path(), "archive-sync"), "127.0.0.2", &archive_key)
        + &line(&sync_script(work.path(), "releases-sync"), "127.0.0.3", &releases_key);
    let sshd = Sshd::start(&authorized_keys);
    mirror_on(&f, &sshd, "");

    let report = push_archive(&f, "ubuntu").await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.exit_code), (Outcome::Ok, Some(0)), "{r:?}\n{}", sshd.log());
    wait_for_runs(&ran, "archive-sync", 1).await;
    assert_eq!(runs(&ran, "releases-sync"), 0, "the releases script ran for an archive push");

    let report = push_archive(&f, "ubuntu-releases").await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.exit_code), (Outcome::Ok, Some(0)), "{r:?}\n{}", sshd.log());
    wait_for_runs(&ran, "releases-sync", 1).await;
    assert_eq!(runs(&ran, "archive-sync"), 1, "the archive script ran for a releases push");

    // sshd logs the accepted key and where the connection came from before it lets the client in.
    let log = sshd.log();
    let accepted: Vec<&str> = log.lines().filter(|l| l.contains("Accepted publickey")).collect();
    assert_eq!(accepted.len(), 2, "{log}");
    assert!(
        accepted[0].contains(" from 127.0.0.2 port ") && accepted[0].contains(&keys::fingerprint(&archive_key)),
        "{log}"
    );
    assert!(
        accepted[1].contains(" from 127.0.0.3 port ") && accepted[1].contains(&keys::fingerprint(&releases_key)),
        "{log}"
    );

    // Each key from the other archive's address: sshd's from= refuses both, nothing runs.
    f.set_main(&ubuntu_main("127.0.0.3", "127.0.0.2"));
    for archive in ["ubuntu", "ubuntu-releases"] {
        let report = push_archive(&f, archive).await;
        let r = row(&report, "m");
        assert_eq!((r.outcome, r.error_class, r.attempts), (Outcome::Failed, Some(ErrorClass::Auth), 1), "{r:?}");
    }
    let log = sshd.log();
    assert_eq!(log.matches("Accepted publickey").count(), 2, "no further login was accepted:\n{log}");
    let refused: Vec<&str> =
        log.lines().filter(|l| l.contains("with correct key but not from a permitted host")).collect();
    assert!(refused.iter().any(|l| l.contains("ip=127.0.0.3, required=127.0.0.2")), "{log}");
    assert!(refused.iter().any(|l| l.contains("ip=127.0.0.2, required=127.0.0.3")), "{log}");
    assert_eq!((runs(&ran, "archive-sync"), runs(&ran, "releases-sync")), (1, 1), "nothing ran");
}

/// 40 mirrors on one host behind an sshd with OpenSSH's stock `MaxStartups 10:30:100`, pushed
/// with concurrency 64 and no retries: `max_per_host` (default 8) keeps the unauthenticated
/// connections under 10, so sshd drops none and every trigger is delivered the first time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_mirrors_on_one_host_stay_under_sshds_stock_max_startups() {
    if !sshd::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let received = dir.path().join("received");
    let f = Fixture::with_main("identity: keys/id_ed25519\nknown_hosts: known_hosts\nconcurrency: 64\n");
    let sshd = Sshd::start_with(&key_line(&f, &recorder(&received, "true")), "10:30:100");
    std::fs::write(f.path("known_hosts"), sshd.known_hosts_line()).unwrap();
    for i in 0..40 {
        let ssh =
            format!("ssh: {{ host: 127.0.0.1, port: {}, user: {} }}\nretries: 0\n", sshd.port, sshd::current_user());
        f.mirror(&format!("m{i:02}"), &ssh);
    }
    let report = push(&f).await;
    assert_eq!(report.summary.ok, 40, "{}\n{}", report.to_table(), sshd.log());
    assert!(report.triggers.iter().all(|t| t.error_class.is_none() && t.attempts == 1), "{}", report.to_table());
    assert_eq!(std::fs::read_to_string(&received).unwrap().lines().count(), 40);
}
