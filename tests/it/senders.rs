//! One key and one source address per archive (or per mirror): which key each trigger signs
//! with and which local address it leaves from, against in-process receivers that record both,
//! and where `check` reports what cannot work. The loopback addresses 127.0.0.2 and 127.0.0.3
//! are addresses of every Linux host (all of 127.0.0.0/8 is local).

use std::net::IpAddr;
use std::path::Path;

use pushmirror::demo::{HttpReceiver, SshReceiver};
use pushmirror::push::plan::PushRequest;
use pushmirror::wire::keys;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
use russh::keys::{PrivateKey, PublicKey};

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
    forced_command: ~/archive-sync &
  ubuntu-releases:
    root: archive
    identity: keys/releases
    source_address: 127.0.0.3
    forced_command: ~/releases-sync &
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

async fn push(f: &Fixture, archive: &str) -> pushmirror::push::report::Report {
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
    let releases = shared["states"].as_array().unwrap().iter().find(|s| s["archive"] == "ubuntu-releases").unwrap();
    assert_eq!(releases["last"]["source_address"], "127.0.0.3", "the last trigger names its address too");
    assert_eq!(releases["key"], fp(&releases_key).as_str(), "and the key it was accepted with");
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
    let c = f.path("mirrors.d/c.yaml").display().to_string();
    let expected = format!("{c}:3:1: identity: an HTTP mirror is triggered without an SSH key");
    assert!(err.lines().any(|l| l.starts_with(&expected)), "missing `{expected}` in:\n{err}");
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

/// An ed25519 key derived from `seed`, written as `path` (0600) and `path.pub`. The README shows
/// `keys` output of this test's configuration, so the keys must be the same on every run: keys
/// anyone can derive, for this test only.
fn seeded_key(path: &Path, seed: u8, comment: &str) -> PublicKey {
    let key = PrivateKey::new(KeypairData::from(Ed25519Keypair::from_seed(&[seed; 32])), comment).unwrap();
    pushmirror::demo::write_secret(path, &key.to_openssh(LineEnding::LF).unwrap()).unwrap();
    std::fs::write(keys::pub_path(path), format!("{}\n", key.public_key().to_openssh().unwrap())).unwrap();
    key.public_key().clone()
}

const BEGIN: &str = "<!-- keys output: generated by tests/it/senders.rs -->\n";
const END: &str = "<!-- end of keys output -->\n";

/// Fails unless the README shows `page` between its markers (`PUSHMIRROR_WRITE_README=1`
/// rewrites it).
fn check_readme(page: &str) {
    let block = format!("```text\n$ pushmirror keys\n{page}```\n");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (Some(a), Some(b)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md has no keys output between {BEGIN:?} and {END:?}");
    };
    if readme[a + BEGIN.len()..b] == block {
        return;
    }
    if std::env::var_os("PUSHMIRROR_WRITE_README").is_some() {
        std::fs::write(&path, format!("{}{BEGIN}{block}{}", &readme[..a], &readme[b..])).unwrap();
        return;
    }
    panic!("README.md's keys output differs from `pushmirror keys`; rerun with PUSHMIRROR_WRITE_README=1\n{block}");
}

/// `ssh-keygen -l -E HASH -f FILE`'s fingerprint (its second word).
fn ssh_keygen_fingerprint(hash: &str, file: &Path) -> String {
    let out = std::process::Command::new("ssh-keygen").args(["-l", "-E", hash, "-f"]).arg(file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().split_whitespace().nth(1).unwrap().to_string()
}

/// `pushmirror keys` for Ubuntu's setup plus one mirror with a key of its own: the page the README
/// shows, signable as it is, and fingerprints equal to what OpenSSH's `ssh-keygen` computes.
#[test]
fn keys_prints_the_readme_page_and_the_fingerprints_ssh_keygen_computes() {
    if !Path::new("/usr/bin/ssh-keygen").exists() {
        assert!(std::env::var_os("CI").is_none(), "ssh-keygen is required in CI: apt-get install openssh-client");
        return;
    }
    let f = Fixture::new();
    f.set_main(UBUNTU);
    seeded_key(&f.path("keys/ubuntu"), 1, "archive@primary");
    seeded_key(&f.path("keys/releases"), 2, "releases@primary");
    seeded_key(&f.path("keys/mirror-b"), 3, "mirror-b@primary");
    f.mirror("mirror-a", "ssh: { host: mirror-a.example.net, user: mirror }\n");
    f.mirror(
        "mirror-b",
        "ssh: { host: mirror-b.example.net, user: mirror }\narchives: [ubuntu]\n\
         identity: ../keys/mirror-b\nsource_address: 127.0.0.3\n",
    );

    let out = f.cli(&["keys"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = stdout(&out);
    // gpg --clearsign would dash-escape a line starting with `-` and drop trailing spaces.
    for line in page.lines() {
        assert!(!line.starts_with('-') && line.trim_end() == line, "not signable as it is: {line:?}");
    }
    check_readme(&page);

    let out = f.cli(&["keys", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let published: Vec<&serde_json::Value> =
        json.as_array().unwrap().iter().flat_map(|a| a["keys"].as_array().unwrap()).collect();
    assert_eq!(published.len(), 3, "{json}");
    for key in published {
        let public = keys::pub_path(Path::new(key["identity"].as_str().unwrap()));
        let md5 = ssh_keygen_fingerprint("md5", &public);
        assert_eq!(md5, format!("MD5:{}", key["fingerprint_md5"].as_str().unwrap()), "{key}");
        assert_eq!(ssh_keygen_fingerprint("sha256", &public), key["fingerprint_sha256"].as_str().unwrap(), "{key}");
    }

    let out = f.cli(&["keys", "ubuntu-releases", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["keys"][0]["from"], serde_json::json!(["127.0.0.3"]));
    let out = f.cli(&["keys", "debian"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown archive `debian`"), "{}", stderr(&out));
}

/// `keygen --archive` creates the archive's key where the configuration names it and prints its
/// line with the archive's forced command and `from=` its source address; ftpsync's command when
/// the archive names none.
#[test]
fn keygen_for_an_archive_writes_its_key_and_prints_its_line() {
    let f = Fixture::new();
    f.set_main(&format!("{UBUNTU}  plain:\n    root: archive\n"));
    let out = f.cli(&["keygen", "--archive", "ubuntu-releases"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let public = std::fs::read_to_string(f.path("keys/releases.pub")).unwrap();
    let key: Vec<&str> = public.split_whitespace().take(2).collect();
    assert_eq!(
        stdout(&out),
        format!(
            "no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty,command=\"~/releases-sync &\",\
             from=\"127.0.0.3\" {}\n",
            public.trim_end()
        )
    );
    assert!(keys::load_identity(&f.path("keys/releases")).is_ok() && key[0] == "ssh-ed25519");

    // `plain` has the main file's key and no address or command of its own.
    let out = f.cli(&["keygen", "--archive", "plain", "--from", "192.0.2.7"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(
            "no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty,command=\"~/bin/ftpsync\",from=\"192.0.2.7\" "
        ),
        "{}",
        stdout(&out)
    );
    assert!(f.path("keys/ubuntu").exists(), "the main file's identity: is plain's key");
    let out = f.cli(&["keygen", "--archive", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("archive `nope` is not in"), "{}", stderr(&out));
}

/// A key whose triggers do not all leave from a configured address gets no `from=`: a partial
/// list would lock the other mirrors out.
#[test]
fn keys_leaves_out_from_when_some_triggers_of_a_key_have_no_source_address() {
    let f = Fixture::with_main("identity: keys/id\n");
    keys::generate(&f.path("keys/id"), "id@test").unwrap();
    f.mirror("bound", "ssh: { host: a.example.net, user: u }\nsource_address: 127.0.0.2\n");
    f.mirror("unbound", "ssh: { host: b.example.net, user: u }\n");
    let out = f.cli(&["keys", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = &json[0]["keys"][0];
    assert_eq!((key["from"].clone(), json[0]["unbound"].clone()), (serde_json::json!([]), serde_json::json!(true)));
    assert!(!key["authorized_keys"].as_str().unwrap().contains("from="), "{key}");
    assert!(key["authorized_keys"].as_str().unwrap().contains("command=\"~/bin/ftpsync\""), "{key}");
    let text = stdout(&f.cli(&["keys"]));
    assert!(text.contains("127.0.0.2, and whatever routing picks for mirrors without a source_address"), "{text}");
}

/// `identity:` and `next_identity:` are one pair, resolved level by level: mirrors of an archive
/// (or a mirror file) that names its own `identity:` do not inherit the main file's rotation;
/// a `next_identity:` without an `identity:` beside it is a located error.
#[test]
fn a_rotation_goes_with_the_identity_it_replaces() {
    let (f, _, _) = ubuntu();
    f.set_main(&UBUNTU.replace("identity: keys/ubuntu\n", "identity: keys/ubuntu\nnext_identity: keys/ubuntu-next\n"));
    let next = keys::generate(&f.path("keys/ubuntu-next"), "next@test").unwrap().public;
    keys::generate(&f.path("keys/own"), "own@test").unwrap();
    f.mirror("plain", "ssh: { host: 127.0.0.1, user: m }\n");
    f.mirror("own", "ssh: { host: 127.0.0.1, user: m }\nidentity: ../keys/own\n");
    let config = f.config();
    let mirror = |name: &str| config.mirrors.iter().find(|m| m.name == name).unwrap();
    let next_fp = next.fingerprint(Default::default()).to_string();
    assert_eq!(mirror("plain").sender("ubuntu").next_fingerprint.as_deref(), Some(next_fp.as_str()));
    assert_eq!(mirror("plain").sender("ubuntu").next_identity, Some(f.path("keys/ubuntu-next")));
    // ubuntu-releases names its own identity: no rotation there, for any mirror.
    assert_eq!(mirror("plain").sender("ubuntu-releases").next_identity, None);
    // A mirror file with its own identity: neither.
    assert_eq!(mirror("own").sender("ubuntu").next_identity, None);

    // next_identity alone, at the archive: an error where it is written, nothing loaded.
    f.set_main(&UBUNTU.replace("    identity: keys/releases\n", "    next_identity: keys/ubuntu-next\n"));
    let out = f.cli(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:", f.config_path().display())), "{err}");
    assert!(err.contains("next_identity: replaces the `identity:` written at the same place"), "{err}");
}
