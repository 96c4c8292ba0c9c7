//! One key and one source address per archive (or per mirror): which key each trigger signs
//! with and which local address it leaves from, against in-process receivers that record both,
//! and where `check` reports what cannot work. The loopback addresses 127.0.0.2 and 127.0.0.3
//! are addresses of every Linux host (all of 127.0.0.0/8 is local).

use std::net::IpAddr;

use pushmirror::demo::{HttpReceiver, SshReceiver};
use pushmirror::keys;
use pushmirror::plan::PushRequest;
use russh::keys::PublicKey;

use crate::common::{Fixture, row, stderr, stdout};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A main file with archives `ubuntu` (the main key, from 127.0.0.2) and `ubuntu-releases` (its
/// own key, from 127.0.0.3), as Ubuntu pushes them.
const UBUNTU: &str = "\
mirrors_dir: mirrors.d
state_dir: state
known_hosts: known_hosts
identity: keys/ubuntu
archives:
  ubuntu:
    root: archive
    source_address: 127.0.0.2
  ubuntu-releases:
    root: archive
    identity: keys/releases
    source_address: 127.0.0.3
";

/// The fixture with [`UBUNTU`] and both archive keys; returns their public keys.
fn ubuntu() -> (Fixture, PublicKey, PublicKey) {
    let f = Fixture::new();
    f.set_main(UBUNTU);
    let archive = keys::generate(&f.path("keys/ubuntu"), "archive@test").unwrap().public;
    let releases = keys::generate(&f.path("keys/releases"), "releases@test").unwrap().public;
    (f, archive, releases)
}

fn ssh_mirror(f: &Fixture, name: &str, rx: &SshReceiver, extra: &str) {
    f.mirror(
        name,
        &format!(
            "ssh: {{ host: 127.0.0.1, port: {}, user: mirror }}\nhost_key: \"{}\"\nretries: 0\n{extra}",
            rx.port(),
            rx.host_key_line()
        ),
    );
}

async fn push(f: &Fixture, archive: &str) -> pushmirror::report::Report {
    f.push(PushRequest { archive: Some(archive.into()), ..PushRequest::default() }).await
}

/// Each archive reaches the same downstream with its own key from its own address; a mirror
/// file's own `identity:` and `source_address:` win over the archive's; the report and `list`
/// name what each trigger was sent with.
#[tokio::test]
async fn each_archive_is_sent_with_its_own_key_from_its_own_address_and_a_mirror_may_override_both() {
    let (f, archive_key, releases_key) = ubuntu();
    let own_key = keys::generate(&f.path("keys/own"), "own@test").unwrap().public;
    let rx = SshReceiver::builder()
        .authorize(&archive_key)
        .authorize(&releases_key)
        .authorize(&own_key)
        .start()
        .await
        .unwrap();
    ssh_mirror(&f, "shared", &rx, "");
    ssh_mirror(&f, "special", &rx, "identity: ../keys/own\nsource_address: 127.0.0.3\narchives: [ubuntu]\n");

    let report = push(&f, "ubuntu").await;
    assert_eq!(report.summary.ok, 2, "{}", report.to_table());
    let report = push(&f, "ubuntu-releases").await;
    assert_eq!(report.summary.ok, 1, "{}", report.to_table());

    let seen: Vec<(String, IpAddr, String)> = rx
        .log()
        .execs()
        .into_iter()
        .map(|e| (e.command, e.peer.expect("peer address").ip(), e.key_fingerprint))
        .collect();
    let fp = keys::fingerprint;
    let mut expected = vec![
        (" sync:archive:ubuntu sync:all".to_string(), ip("127.0.0.2"), fp(&archive_key)),
        (" sync:archive:ubuntu sync:all".to_string(), ip("127.0.0.3"), fp(&own_key)),
        (" sync:archive:ubuntu-releases sync:all".to_string(), ip("127.0.0.3"), fp(&releases_key)),
    ];
    let mut seen_sorted = seen.clone();
    seen_sorted.sort();
    expected.sort();
    assert_eq!(seen_sorted, expected);

    let r = row(&report, "shared");
    assert_eq!((r.key.as_deref(), r.source_address), (Some(fp(&releases_key).as_str()), Some(ip("127.0.0.3"))));
    assert!(report.to_table().contains(&format!("from 127.0.0.3; key {}", fp(&releases_key))), "{}", report.to_table());

    let out = f.cli(&["list", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shared = listed.as_array().unwrap().iter().find(|m| m["name"] == "shared").unwrap();
    let sent_as: Vec<(String, String, String)> = shared["sent_as"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["archive"].as_str().unwrap().into(),
                s["key"].as_str().unwrap().into(),
                s["source_address"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        sent_as,
        [
            ("ubuntu".to_string(), fp(&archive_key), "127.0.0.2".to_string()),
            ("ubuntu-releases".to_string(), fp(&releases_key), "127.0.0.3".to_string()),
        ]
    );
    assert_eq!(shared["last"]["source_address"], "127.0.0.3", "the last trigger names its address too");
    let table = stdout(&f.cli(&["list"]));
    assert!(
        table.contains(&format!(
            "ubuntu: {} from 127.0.0.2; ubuntu-releases: {} from 127.0.0.3",
            fp(&archive_key),
            fp(&releases_key)
        )),
        "{table}"
    );
}

/// An HTTP mirror with a source address is seen by its receiver from that address; one without
/// leaves from the address the routing table picks (127.0.0.1 for 127.0.0.1).
#[tokio::test]
async fn an_http_mirror_with_a_source_address_is_seen_from_that_address() {
    let rx = HttpReceiver::start().await.unwrap();
    let f = Fixture::new();
    f.http_mirror("bound", &rx.url("/bound"), "source_address: 127.0.0.2\n");
    f.http_mirror("also-bound", &rx.url("/also-bound"), "source_address: 127.0.0.2\n");
    f.http_mirror("other", &rx.url("/other"), "source_address: 127.0.0.3\n");
    f.http_mirror("unbound", &rx.url("/unbound"), "");
    let report = f.push(PushRequest::default()).await;
    assert_eq!(report.summary.ok, 4, "{}", report.to_table());
    let mut peers: Vec<(String, IpAddr)> = rx.log().hits().into_iter().map(|h| (h.uri, h.peer.ip())).collect();
    peers.sort();
    assert_eq!(
        peers,
        [
            ("/also-bound".to_string(), ip("127.0.0.2")),
            ("/bound".to_string(), ip("127.0.0.2")),
            ("/other".to_string(), ip("127.0.0.3")),
            ("/unbound".to_string(), ip("127.0.0.1")),
        ]
    );
    let r = row(&report, "bound");
    assert_eq!((r.source_address, r.key.as_deref()), (Some(ip("127.0.0.2")), None), "HTTP uses no key");
    assert_eq!(row(&report, "unbound").source_address, None);
}

/// `check` judges every `source_address:` where it is written (an IP literal of this host) and
/// each key SSH mirrors use once, at the first place naming it; `defaults:` holds neither.
#[test]
fn check_reports_foreign_addresses_host_names_and_unusable_keys_where_they_are_written() {
    let (f, _, _) = ubuntu();
    // TEST-NET-3 (RFC 5737) is assigned to no host.
    f.set_main(
        "mirrors_dir: mirrors.d\nstate_dir: state\nidentity: keys/ubuntu\nsource_address: 203.0.113.9\n\
         defaults:\n  identity: keys/ubuntu\narchives:\n  ubuntu:\n    root: archive\n    source_address: mirror.example.net\n\
         \x20 ubuntu-releases:\n    root: archive\n    identity: keys/missing\n",
    );
    f.mirror("a", "ssh: { host: a.example.net, user: u }\nsource_address: 203.0.113.9\n");
    f.mirror("b", "ssh: { host: b.example.net, user: u }\n");
    f.mirror("c", "http:\n  url: http://c.example.net/\nidentity: ../keys/also-missing\n");
    let out = f.cli(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let main = f.config_path().display().to_string();
    let a = f.path("mirrors.d/a.yaml").display().to_string();
    for expected in [
        format!("{main}:4:1: source_address: 203.0.113.9 is not an address of this host"),
        format!("{main}:6:3: defaults.identity: the main file's own `identity:` is the default"),
        format!("{main}:10:5: archives.ubuntu.source_address: `mirror.example.net` is not an IP address"),
        format!("{main}:13:5: archives.ubuntu-releases.identity: cannot read private key"),
        format!("{a}:2:1: source_address: 203.0.113.9 is not an address of this host"),
    ] {
        assert!(err.lines().any(|l| l.starts_with(&expected)), "missing `{expected}` in:\n{err}");
    }
    assert!(!err.contains("defaults.identity: unknown field"), "reported once, not again as unknown:\n{err}");
    assert_eq!(err.matches("keys/missing").count(), 1, "a key named for two mirrors is reported once:\n{err}");
    assert!(!err.contains("also-missing"), "an HTTP mirror's key is never loaded:\n{err}");
}

/// An SSH mirror of an archive no `identity:` applies to is a config error naming the archive.
#[test]
fn an_ssh_mirror_without_a_key_for_one_of_its_archives_is_a_config_error() {
    let f = Fixture::new();
    f.set_main("mirrors_dir: mirrors.d\nstate_dir: state\narchives:\n  a:\n    root: archive\n    identity: keys/a\n  b:\n    root: archive\n");
    keys::generate(&f.path("keys/a"), "a@test").unwrap();
    f.mirror("m", "ssh: { host: m.example.net, user: u }\n");
    let out = f.cli(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let expected = format!(
        "{}:1:1: ssh: mirror m uses SSH but no `identity:` key applies to archive b:",
        f.path("mirrors.d/m.yaml").display()
    );
    assert!(err.lines().any(|l| l.starts_with(&expected)), "{err}");
    f.mirror("m", "ssh: { host: m.example.net, user: u }\narchives: [a]\n");
    let out = f.cli(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
