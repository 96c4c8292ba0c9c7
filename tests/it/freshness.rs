//! `pushmirror freshness` against mirrors that publish their trace files over HTTP (in-process
//! receivers on 127.0.0.1:0): up to date, syncing, behind, unreachable, a check-only mirror.

use std::process::Output;
use std::time::{Duration, SystemTime};

use pushmirror::demo::{HttpReceiver, Reply};
use pushmirror::push::plan::PushRequest;
use pushmirror::vocab::model::Standing;

use crate::common::{Fixture, run_bin, stderr, stdout};

async fn cli(f: &Fixture, args: &[&str]) -> Output {
    let (config, args): (_, Vec<String>) = (f.config_path(), args.iter().map(|s| s.to_string()).collect());
    tokio::task::spawn_blocking(move || run_bin(&config, &args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap()
}

fn date(ago: Duration) -> String {
    httpdate::fmt_http_date(SystemTime::now() - ago)
}

/// A mirror's `project/trace/` below `/debian/`: `master` at `serial`, written `age` ago, and,
/// when `tier` is given, `_hierarchy` (tier1 → tier) and the tier's own trace (a 4 s sync).
fn publish(rx: &HttpReceiver, serial: &str, age: Duration, tier: Option<&str>) {
    rx.publish(
        "/debian/project/trace/master",
        &format!("Sun Nov 29 08:52:03 UTC 2026\nArchive serial: {serial}\nDate: {}\n", date(age)),
    );
    if let Some(tier) = tier {
        rx.publish(
            "/debian/project/trace/_hierarchy",
            &format!(
                "tier1.example.net tier1.example.net t1 primary.example.net\n{tier} {tier} {tier} tier1.example.net\n"
            ),
        );
        rx.publish(
            &format!("/debian/project/trace/{tier}"),
            &format!(
                "x\nDate: {}\nDate-Started: {}\nArchive serial: {serial}\nUpstream-mirror: tier1.example.net\n",
                date(Duration::from_secs(100)),
                date(Duration::from_secs(104))
            ),
        );
    }
}

#[tokio::test]
async fn freshness_tells_up_to_date_syncing_behind_and_unreachable_and_never_triggers_check_only() {
    let fresh = HttpReceiver::start().await.unwrap();
    let syncing = HttpReceiver::start().await.unwrap();
    let stale = HttpReceiver::start().await.unwrap();
    let watched = HttpReceiver::start().await.unwrap();
    let gone = HttpReceiver::builder().reply(Reply::Status(404)).start().await.unwrap();
    let f = Fixture::new();
    // This archive's history: 2026112701 pushed two days ago, 2026112901 14 h ago, 2026112902
    // (the current one) an hour ago.
    let history = pushmirror::push::report::History::new(&f.path("state"), 200);
    for (serial, ago) in [("2026112701", 2 * 86400), ("2026112901", 14 * 3600), ("2026112902", 3600)] {
        let at = SystemTime::now() - Duration::from_secs(ago);
        history
            .save(&pushmirror::push::report::Report::new("debian", Some(serial.into()), "cli", false, at, vec![]))
            .unwrap();
    }
    std::fs::write(
        f.path("archive/project/trace/master"),
        format!("Archive serial: 2026112902\nDate: {}\n", date(Duration::from_secs(3600))),
    )
    .unwrap();
    publish(&fresh, "2026112902", Duration::from_secs(60), Some("tier2.example.net"));
    publish(&syncing, "2026112901", Duration::from_secs(3600), None);
    publish(&stale, "2026112701", Duration::from_secs(2 * 86400), None);
    publish(&watched, "2026112902", Duration::from_secs(60), None);
    for (name, rx) in [("a-fresh", &fresh), ("b-syncing", &syncing), ("c-stale", &stale), ("d-gone", &gone)] {
        f.http_mirror(name, &rx.url("/trigger"), &format!("check: {}\n", rx.url("/debian")));
    }
    f.mirror("e-watched", &format!("check: {}/debian/\n", watched.url("")));

    let out = cli(&f, &["freshness", "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(1), "some are behind: {}", stderr(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let standing = |r: &serde_json::Value| serde_json::from_value::<Standing>(r["standing"].clone()).unwrap();
    let seen: Vec<(&str, Standing, &str)> =
        rows.iter().map(|r| (r["mirror"].as_str().unwrap(), standing(r), r["kind"].as_str().unwrap())).collect();
    assert_eq!(
        seen,
        [
            ("a-fresh", Standing::UpToDate, "triggered"),
            ("b-syncing", Standing::Syncing, "triggered"),
            ("c-stale", Standing::Behind, "triggered"),
            ("d-gone", Standing::Unreachable, "triggered"),
            ("e-watched", Standing::UpToDate, "check-only"),
        ]
    );
    let fresh_row = &rows[0];
    assert_eq!(fresh_row["lag_ms"], 0);
    assert_eq!(fresh_row["last_sync_ms"], 4000);
    assert_eq!(fresh_row["upstream"], "tier1.example.net");
    assert_eq!(fresh_row["chain"], serde_json::json!(["tier1.example.net", "tier2.example.net"]));
    // Lag: since the first version after the one it serves was pushed (2026112902 an hour ago;
    // 2026112901 14 h ago), not the age of its own version.
    let lag = |i: usize| rows[i]["lag_ms"].as_u64().unwrap();
    assert!((3_600_000..3_700_000).contains(&lag(1)), "syncing lag {}", lag(1));
    assert!((14 * 3_600_000..14 * 3_600_000 + 100_000).contains(&lag(2)), "stale lag {}", lag(2));
    assert_eq!((rows[1]["behind_versions"].as_u64(), rows[2]["behind_versions"].as_u64()), (Some(1), Some(2)));
    assert!(rows[3]["error"].as_str().unwrap().contains("HTTP 404"), "{}", rows[3]);

    let table = cli(&f, &["freshness"]).await;
    let text = stdout(&table);
    eprintln!("{text}");
    for want in
        ["a-fresh", "up to date", "syncing", "behind", "unreachable", "check-only", "4.0s", " 1h00m ", " 14h00m "]
    {
        assert!(text.contains(want), "no `{want}` in:\n{text}");
    }

    // The check-only mirror is never triggered: a push reaches the four others only.
    let report = f.push(PushRequest::default()).await;
    let pushed: Vec<&str> = report.triggers.iter().map(|t| t.mirror.as_str()).collect();
    assert_eq!(pushed, ["a-fresh", "b-syncing", "c-stale", "d-gone"]);
    assert!(watched.log().hits().iter().all(|h| h.method == "GET" && h.uri.starts_with("/debian/")));

    // Once the stale one catches up and the gone one is dropped, all are within max_lag: exit 0.
    publish(&stale, "2026112902", Duration::from_secs(60), None);
    std::fs::remove_file(f.path("mirrors.d/d-gone.yaml")).unwrap();
    let out = cli(&f, &["freshness"]).await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), stderr(&out));
}

#[tokio::test]
async fn an_archive_max_lag_decides_behind_and_an_unknown_archive_is_a_usage_error() {
    let syncing = HttpReceiver::start().await.unwrap();
    publish(&syncing, "2026112901", Duration::from_secs(3600), None);
    let f = Fixture::new();
    f.set_main("mirrors_dir: mirrors.d\nstate_dir: state\narchives:\n  debian:\n    root: archive\n    max_lag: 30m\n");
    f.mirror("m", &format!("check: {}\n", syncing.url("/debian")));
    let out = cli(&f, &["freshness", "debian"]).await;
    assert_eq!(out.status.code(), Some(1), "an hour old is behind under max_lag 30m: {}", stdout(&out));
    assert!(stdout(&out).contains("behind"), "{}", stdout(&out));
    let out = cli(&f, &["freshness", "ubuntu"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown archive `ubuntu`"), "{}", stderr(&out));
}

#[test]
fn a_check_url_is_validated_and_a_check_only_mirror_takes_no_key() {
    let f = Fixture::with_main("identity: keys/none\n");
    f.mirror("a", "check: ftp://mirror.example/debian/\n");
    f.mirror("b", "check: https://mirror.example/debian/\nsource_address: 127.0.0.1\n");
    f.mirror("c", "timeout: 5s\n");
    f.mirror("d", "check: https://user:s3cret@mirror.example/debian/\n");
    f.mirror("e", "check: https://mirror.example/debian/\nrate_limit: 1/1h\n");
    let err = stderr(&f.cli(&["check"]));
    let dir = f.path("mirrors.d");
    for want in [
        format!("{}/a.yaml:1:1: check: the URL must be http:// or https:// with a host", dir.display()),
        format!("{}/b.yaml:2:1: source_address: a check-only mirror", dir.display()),
        format!("{}/c.yaml:1:1: a mirror needs `ssh:`, `http:` or `mqtt:` (or `check:` alone", dir.display()),
        format!("{}/d.yaml:1:1: check: the public base URL of the archive holds no user or password", dir.display()),
        format!(
            "{}/e.yaml:2:1: rate_limit: a check-only mirror (`check:` without `ssh:`, `http:` or `mqtt:`) is never triggered",
            dir.display()
        ),
    ] {
        assert!(err.contains(&want), "missing `{want}` in:\n{err}");
    }
    assert!(!err.contains("s3cret"), "{err}");
}

/// `push --follow`: a mirror whose receiver publishes the pushed version 30 s after the push is
/// seen live at the first check after that (checks at the start, then 5 s, 15 s, 35 s after its
/// delivery: backoff doubling from 5 s); one that never does is checked a last time at the
/// archive's propagation_timeout (60 s) and given up. Paused time.
#[tokio::test(start_paused = true)]
async fn a_push_followed_records_when_each_mirror_went_live() {
    let late = HttpReceiver::start().await.unwrap();
    let never = HttpReceiver::start().await.unwrap();
    let f = Fixture::new();
    f.set_main(
        "mirrors_dir: mirrors.d\nstate_dir: state\narchives:\n  debian:\n    root: archive\n    propagation_timeout: 1m\n",
    );
    f.set_serial("2026112902");
    for rx in [&late, &never] {
        publish(rx, "2026112901", Duration::from_secs(3600), None);
    }
    f.http_mirror("late", &late.url("/trigger"), &format!("check: {}\n", late.url("/debian")));
    f.http_mirror("never", &never.url("/trigger"), &format!("check: {}\n", never.url("/debian")));
    f.http_mirror("unchecked", &never.url("/trigger"), "");
    let published = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        publish(&late, "2026112902", Duration::from_secs(1), Some("tier2.example.net"));
        late
    });

    let config = f.config();
    let plan = pushmirror::push::plan_push(&config, &PushRequest::default()).unwrap();
    let options = pushmirror::push::engine::Options::default();
    let report = pushmirror::observe::propagation::push_and_follow(&config, &plan, &options, "cli").await.unwrap();
    let late = published.await.unwrap();

    let seen: Vec<(&str, Option<u64>, u32)> =
        report.propagation.iter().map(|p| (p.mirror.as_str(), p.live_after_ms, p.checks)).collect();
    // The last check of `never` is at the deadline, 60 s.
    assert_eq!(seen, [("late", Some(35_000), 4), ("never", None, 5)]);
    assert_eq!(report.propagation[0].delivered_after_ms, Some(0));
    assert_eq!(report.propagation[0].sync_ms, Some(4000));
    assert!(
        report.propagation[1].error.as_deref().unwrap().starts_with("not live within 1m"),
        "{:?}",
        report.propagation[1]
    );
    // The second check of the late mirror was conditional, and answered 304.
    let gets: Vec<_> = late.log().hits().into_iter().filter(|h| h.uri == "/debian/project/trace/master").collect();
    assert_eq!(gets.len(), 4);
    assert!(gets[0].header("if-none-match").is_none() && gets[1].header("if-none-match").is_some());
    // The stored report carries the propagation.
    let stored = pushmirror::push::report::History::new(&f.path("state"), 10).latest_per_archive().unwrap();
    assert_eq!(stored["debian"].propagation, report.propagation);
    assert!(report.to_table().contains("propagation: 1 of 2 followed mirror(s) live"), "{}", report.to_table());
}

/// Versions behind are counted in the report history: a mirror serving the serial pushed two
/// pushes ago is 2 behind; one serving a serial never pushed here, unknown.
#[tokio::test]
async fn versions_behind_come_from_the_pushes_in_the_history() {
    let trigger = HttpReceiver::start().await.unwrap();
    let lagging = HttpReceiver::start().await.unwrap();
    let unknown = HttpReceiver::start().await.unwrap();
    let f = Fixture::new();
    f.http_mirror("t", &trigger.url("/"), "");
    for serial in ["2026112901", "2026112902", "2026112903"] {
        f.set_serial(serial);
        f.push(PushRequest::default()).await;
    }
    publish(&lagging, "2026112901", Duration::from_secs(600), None);
    publish(&unknown, "2026110101", Duration::from_secs(600), None);
    f.mirror("lagging", &format!("check: {}\n", lagging.url("/debian")));
    f.mirror("unknown", &format!("check: {}\n", unknown.url("/debian")));
    let out = cli(&f, &["freshness", "--format", "json"]).await;
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let behind: Vec<(&str, Option<u64>)> =
        rows.iter().map(|r| (r["mirror"].as_str().unwrap(), r["behind_versions"].as_u64())).collect();
    assert_eq!(behind, [("lagging", Some(2)), ("unknown", None)]);
}

/// `check:` is one archive's URL: a mirror carrying two archives must name the one it checks; a
/// sweep more often than once a minute is refused.
#[test]
fn a_check_url_belongs_to_one_archive_and_sweeps_are_not_too_often() {
    let f = Fixture::new();
    f.set_main(
        "mirrors_dir: mirrors.d\nstate_dir: state\nfreshness: { interval: 10s }\narchives:\n  debian:\n    root: archive\n  \
         security:\n    root: archive\n",
    );
    f.mirror("both", "check: https://mirror.example/debian/\n");
    f.mirror("one", "check: https://mirror.example/debian/\narchives: [debian]\n");
    let err = stderr(&f.cli(&["check"]));
    let both = f.path("mirrors.d/both.yaml");
    assert!(
        err.contains(&format!(
            "{}:1:1: check: `check:` is the URL of one archive, and this mirror carries debian, security",
            both.display()
        )),
        "{err}"
    );
    assert!(!err.contains("one.yaml"), "{err}");
    assert!(err.contains("freshness.interval: must be at least 1m"), "{err}");
}

/// Only mirrors whose every trigger went out are followed: a staged mirror whose stage 1 was
/// delivered but whose stage 2 was refused has not been told to finish, and is not followed.
#[tokio::test(start_paused = true)]
async fn a_staged_mirror_whose_stage_two_failed_is_not_followed() {
    let half = HttpReceiver::builder().script([Reply::Status(200), Reply::Status(404)]).start().await.unwrap();
    let whole = HttpReceiver::start().await.unwrap();
    // Their copies of the archive, where the trace files are read.
    let (half_copy, whole_copy) = (HttpReceiver::start().await.unwrap(), HttpReceiver::start().await.unwrap());
    let f = Fixture::new();
    f.set_main("mirrors_dir: mirrors.d\nstate_dir: state\narchives:\n  debian:\n    root: archive\n    propagation_timeout: 10s\n");
    f.set_serial("2026112902");
    for rx in [&half_copy, &whole_copy] {
        publish(rx, "2026112901", Duration::from_secs(60), None);
    }
    f.http_mirror("half", &half.url("/t"), &format!("type: staged\ncheck: {}\n", half_copy.url("/debian")));
    f.http_mirror("whole", &whole.url("/t"), &format!("type: staged\ncheck: {}\n", whole_copy.url("/debian")));
    // Both copies serve the new version a second after the push: only one was told to.
    let synced = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for rx in [&half_copy, &whole_copy] {
            publish(rx, "2026112902", Duration::from_secs(1), None);
        }
        (half_copy, whole_copy)
    });
    let config = f.config();
    let plan = pushmirror::push::plan_push(&config, &PushRequest::default()).unwrap();
    let options = pushmirror::push::engine::Options::default();
    let report = pushmirror::observe::propagation::push_and_follow(&config, &plan, &options, "cli").await.unwrap();
    let _copies = synced.await.unwrap();
    let followed: Vec<&str> = report.propagation.iter().map(|p| p.mirror.as_str()).collect();
    assert_eq!(followed, ["whole"], "{:?}", report.triggers);
    assert_eq!(report.propagation[0].live_after_ms, Some(5000));
    // Yet both were to be reached: the shares of the propagation are of two, one live (50 %).
    assert_eq!((report.propagation_followed, report.followed()), (Some(2), 2));
}

/// Propagation is followed per trigger: each mirror from the delivery of its own trigger, not
/// from the end of the whole push (one mirror answering after 25 s used to make every mirror
/// "live after 25 s" or more); a mirror that served the version before the push began is recorded
/// live before the push. Paused time.
#[tokio::test(start_paused = true)]
async fn each_mirror_is_followed_from_its_own_delivery() {
    let slow = HttpReceiver::builder().reply(Reply::Delay(Duration::from_secs(25), 200)).start().await.unwrap();
    let fast = HttpReceiver::start().await.unwrap();
    let already = HttpReceiver::start().await.unwrap();
    let copies = [HttpReceiver::start().await.unwrap(), HttpReceiver::start().await.unwrap()];
    let f = Fixture::new();
    f.set_main("mirrors_dir: mirrors.d\nstate_dir: state\narchives:\n  debian:\n    root: archive\n    propagation_timeout: 10m\n");
    f.set_serial("2026112902");
    for copy in &copies {
        publish(copy, "2026112901", Duration::from_secs(3600), None);
    }
    publish(&already, "2026112902", Duration::from_secs(60), None);
    f.http_mirror("slow", &slow.url("/t"), &format!("timeout: 1m\ncheck: {}\n", copies[0].url("/debian")));
    f.http_mirror("fast", &fast.url("/t"), &format!("check: {}\n", copies[1].url("/debian")));
    f.http_mirror("already", &already.url("/t"), &format!("check: {}\n", already.url("/debian")));
    // Both copies sync a second after the push started.
    let synced = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for copy in &copies {
            publish(copy, "2026112902", Duration::from_secs(1), None);
        }
        copies
    });
    let config = f.config();
    let plan = pushmirror::push::plan_push(&config, &PushRequest::default()).unwrap();
    let options = pushmirror::push::engine::Options::default();
    let report = pushmirror::observe::propagation::push_and_follow(&config, &plan, &options, "cli").await.unwrap();
    let _copies = synced.await.unwrap();
    let seen = |m: &str| {
        let p = report.propagation.iter().find(|p| p.mirror == m).unwrap();
        (p.live_before_push, p.delivered_after_ms, p.live_after_ms)
    };
    assert_eq!(seen("already"), (true, None, Some(0)));
    assert_eq!(seen("fast"), (false, Some(0), Some(5_000)), "followed from its own delivery");
    assert_eq!(seen("slow"), (false, Some(25_000), Some(30_000)));
}
