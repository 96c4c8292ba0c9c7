//! archvsync compatibility: the staged barrier against in-process SSH receivers, and push
//! kinds as runmirrors' `-k` defines them.

use std::time::Duration;

use pushmirror::demo::{Behaviour, SshReceiver};
use pushmirror::keys;
use pushmirror::plan::PushRequest;
use pushmirror::report::Outcome;
use pushmirror::transport::Stage;
use russh::keys::PublicKey;

use crate::common::{Fixture, row, stderr};

const IDENTITY: &str = "keys/id_ed25519";
const STAGE1: &str = "sync:archive:debian sync:stage1";
const STAGE2: &str = "sync:archive:debian sync:stage2";
const ALL: &str = "sync:archive:debian sync:all";
const MHOP1: &str = "sync:archive:debian sync:mhop sync:stage1";
const MHOP2: &str = "sync:archive:debian sync:mhop sync:stage2";

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
        let report: pushmirror::report::Report = serde_json::from_slice(&out.stdout).unwrap();
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
