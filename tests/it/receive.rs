//! `pushmirror receive`: coalescing, authentication (bearer, basic, signatures and replays), the
//! push to the next tier, config errors, shutdown. Tests wait on the status channel, never sleep.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pushmirror::demo::{HttpReceiver, base64_basic, write_secret};
use pushmirror::push::plan::PushRequest;
use pushmirror::push::report::History;
use pushmirror::receive::{ArchiveSync, ReceiveStatus, Receiving};
use pushmirror::vocab::model::Outcome;
use pushmirror::wire::signed_http;
use tokio_util::sync::CancellationToken;

use crate::common::{Fixture, row, stderr};
use crate::process::DaemonProcess;

const TOKEN: &str = "bearer-0123456789abcdef";
const PASSWORD: &str = "basic-fedcba9876543210";
const HMAC_KEY: &str = "hmac-00112233445566778899";

/// A downstream host: `receive.yaml`, its secrets, and the files its sync command writes.
struct Downstream {
    dir: tempfile::TempDir,
}

impl Downstream {
    fn new() -> Self {
        let d = Downstream { dir: tempfile::tempdir().unwrap() };
        write_secret(&d.path("secrets/token"), TOKEN).unwrap();
        write_secret(&d.path("secrets/pw"), PASSWORD).unwrap();
        write_secret(&d.path("secrets/hmac"), HMAC_KEY).unwrap();
        d
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config_path(&self) -> PathBuf {
        self.path("receive.yaml")
    }

    /// Writes receive.yaml listening on a free port with `archives` (YAML, indented by two).
    fn config(&self, archives: &str) -> &Self {
        self.config_with("", archives)
    }

    /// Like [`Downstream::config`], with more top-level fields (`top`, YAML lines). The state
    /// directory is always `state/` in the temporary directory.
    fn config_with(&self, top: &str, archives: &str) -> &Self {
        let text = format!("listen: 127.0.0.1:0\nstate_dir: state\n{top}archives:\n{archives}");
        std::fs::write(self.config_path(), text).unwrap();
        self
    }

    /// The lines the sync command has logged (`ARCHIVE STAGE SERIAL` per run).
    fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("runs.log")).unwrap_or_default().lines().map(String::from).collect()
    }

    /// A sync command that logs its run, then waits until the file `release` exists.
    fn slow_sync(&self) -> String {
        argv(&[
            "/bin/sh",
            "-c",
            r#"echo "$PUSHMIRROR_ARCHIVE $PUSHMIRROR_STAGE ${PUSHMIRROR_SERIAL-unset}" >> "$1"; while [ ! -e "$2" ]; do sleep 0.02; done"#,
            "sync",
            self.path("runs.log").to_str().unwrap(),
            self.path("release").to_str().unwrap(),
        ])
    }

    /// A sync command that logs its run and exits with `code`.
    fn quick_sync(&self, code: i32) -> String {
        argv(&[
            "/bin/sh",
            "-c",
            &format!(
                r#"echo "$PUSHMIRROR_ARCHIVE $PUSHMIRROR_STAGE ${{PUSHMIRROR_SERIAL-unset}}" >> "$1"; exit {code}"#
            ),
            "sync",
            self.path("runs.log").to_str().unwrap(),
        ])
    }
}

/// A YAML flow list of single-quoted strings.
fn argv(args: &[&str]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{}'", a.replace('\'', "''"))).collect();
    format!("[{}]", quoted.join(", "))
}

/// How a test request authenticates.
enum Auth<'a> {
    None,
    Bearer(&'a str),
    Basic(&'a str, &'a str),
}

struct Running {
    receiving: Receiving,
    shutdown: CancellationToken,
    client: reqwest::Client,
}

async fn start(d: &Downstream) -> Running {
    let config = pushmirror::receive::load(&d.config_path()).unwrap_or_else(|e| panic!("invalid receive.yaml:\n{e}"));
    let shutdown = CancellationToken::new();
    let receiving = pushmirror::receive::start(config, shutdown.clone()).await.unwrap();
    Running { receiving, shutdown, client: reqwest::Client::new() }
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.receiving.addr)
    }

    /// Waits for the status of `archive` to satisfy `cond` (a minute at most, then fails).
    async fn until(&self, archive: &str, what: &str, cond: impl Fn(&ArchiveSync) -> bool) -> ArchiveSync {
        let mut status = self.receiving.status.clone();
        let holds = |s: &ReceiveStatus| s.archive(archive).is_some_and(&cond);
        let waited = tokio::time::timeout(Duration::from_secs(60), status.wait_for(holds)).await.is_ok();
        let now = self.receiving.status.borrow().clone();
        assert!(waited, "status never showed: {what}\n{now:#?}");
        now.archive(archive).unwrap().clone()
    }

    /// `GET /trigger/PATH_AND_QUERY`; the status code and body.
    async fn trigger(&self, path_and_query: &str, auth: Auth<'_>) -> (u16, String) {
        let mut request = self.client.get(self.url(&format!("/trigger/{path_and_query}")));
        request = match auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Basic(user, password) => request.header("authorization", base64_basic(user, password)),
        };
        answer(request).await
    }

    /// `POST /trigger/debian` with exactly these headers and body.
    async fn post_signed(&self, timestamp: &str, signature: &str, body: &[u8]) -> (u16, String) {
        let request = self
            .client
            .post(self.url("/trigger/debian"))
            .header("content-type", "application/json")
            .header(signed_http::TIMESTAMP_HEADER, timestamp)
            .header(signed_http::SIGNATURE_HEADER, signature)
            .body(body.to_vec());
        answer(request).await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.receiving.wait(Duration::ZERO).await.expect("the receiver stopped cleanly");
    }
}

async fn answer(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn ten_triggers_during_a_slow_sync_run_the_command_exactly_twice() {
    let d = Downstream::new();
    d.config(&format!("  debian:\n    command: {}\n    bearer_token_file: secrets/token\n", d.slow_sync()));
    let r = start(&d).await;

    let (code, body) = r.trigger("debian?serial=1", Auth::Bearer(TOKEN)).await;
    assert_eq!(code, 202, "{body}");
    r.until("debian", "the first run going", |a| a.runs_started == 1 && a.running.is_some()).await;
    for serial in 2..=10 {
        let (code, body) = r.trigger(&format!("debian?serial={serial}"), Auth::Bearer(TOKEN)).await;
        assert_eq!((code, body.contains("\"queued\"")), (202, true), "{body}");
    }
    // Every one was answered while the first run still ran (it runs until `release` exists).
    let during = r.until("debian", "ten triggers in", |a| a.triggers == 10).await;
    assert_eq!((during.runs_started, during.running.is_some()), (1, true), "{during:?}");
    assert!(!d.path("release").exists());
    let queued = r.until("debian", "one run queued", |a| a.queued.is_some()).await;
    assert_eq!(queued.queued.unwrap().serial.as_deref(), Some("10"), "the newest trigger's serial is queued");

    std::fs::write(d.path("release"), "").unwrap();
    let done = r.until("debian", "two runs, idle", |a| a.runs_started == 2 && a.idle()).await;
    assert_eq!(d.runs(), ["debian all 1", "debian all 10"]);
    assert_eq!((done.triggers, done.last_exit_code), (10, Some(0)));
    let served: ReceiveStatus =
        r.client.get(r.url("/status")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    let served = served.archive("debian").unwrap();
    assert_eq!((served.triggers, served.runs_started, served.idle()), (10, 2, true), "{served:?}");
    assert_eq!(answer(r.client.get(r.url("/healthz"))).await, (200, "ok\n".to_string()));
    r.stop().await;
}

#[tokio::test]
async fn wrong_or_missing_credentials_get_an_empty_401_and_run_nothing() {
    let d = Downstream::new();
    d.config(&format!(
        "  debian:\n    command: {}\n    bearer_token_file: secrets/token\n    basic_auth: {{ user: ubuntu, password_file: secrets/pw }}\n",
        d.quick_sync(0)
    ));
    let r = start(&d).await;
    let refused = [
        r.trigger("debian", Auth::Bearer("bearer-0123456789abcdeX")).await,
        r.trigger("debian", Auth::Bearer(PASSWORD)).await,
        r.trigger("debian", Auth::Basic("ubuntu", "basic-fedcba987654321")).await,
        r.trigger("debian", Auth::Basic("debian", PASSWORD)).await,
        r.trigger("debian", Auth::None).await,
        r.post_signed("1800000000", &signed_http::sign(HMAC_KEY.as_bytes(), "1800000000", b"{}"), b"{}").await,
    ];
    for (i, (code, body)) in refused.iter().enumerate() {
        assert_eq!((*code, body.as_str()), (401, ""), "request {i}");
    }
    assert_eq!(r.trigger("ubuntu", Auth::Bearer(TOKEN)).await.0, 404);
    assert_eq!(r.receiving.status.borrow().archive("debian").unwrap().triggers, 0);

    // One good trigger afterwards runs once: nothing refused was queued behind it.
    assert_eq!(r.trigger("debian?stage=stage2", Auth::Basic("ubuntu", PASSWORD)).await.0, 202);
    let a = r.until("debian", "one run done", |a| a.runs_started == 1 && a.idle()).await;
    assert_eq!(a.triggers, 1);
    assert_eq!(d.runs(), ["debian stage2 unset"]);
    r.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_refused_and_never_reach_the_command() {
    let d = Downstream::new();
    d.config(&format!("  debian:\n    command: {}\n    bearer_token_file: secrets/token\n", d.quick_sync(0)));
    let r = start(&d).await;
    for query in ["debian?stage=mhop", "debian?serial=%24%28reboot%29", "debian?serial=a%20b"] {
        let (code, body) = r.trigger(query, Auth::Bearer(TOKEN)).await;
        assert_eq!(code, 400, "{query}: {body}");
    }
    let long = "1".repeat(65);
    assert_eq!(r.trigger(&format!("debian?serial={long}"), Auth::Bearer(TOKEN)).await.0, 400);
    let big = r
        .client
        .post(r.url("/trigger/debian"))
        .bearer_auth(TOKEN)
        .body(vec![b' '; pushmirror::receive::MAX_BODY + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status().as_u16(), 413);
    // Every allowed character (`+` percent-encoded: in a query it means a space).
    assert_eq!(r.trigger("debian?serial=2026.11.25%2B1:a_b-c", Auth::Bearer(TOKEN)).await.0, 202);
    r.until("debian", "one run done", |a| a.runs_started == 1 && a.idle()).await;
    assert_eq!(d.runs(), ["debian all 2026.11.25+1:a_b-c"]);
    r.stop().await;
}

#[tokio::test]
async fn a_signed_trigger_from_pushmirror_is_accepted_once_and_a_stale_one_never() {
    let d = Downstream::new();
    d.config(&format!("  debian:\n    command: {}\n    hmac_secret_file: secrets/hmac\n", d.quick_sync(0)));
    let r = start(&d).await;

    // The real sender: pushmirror's HTTP transport, signing with the same key.
    let upstream = Fixture::new();
    let key = upstream.secret("secrets/hmac", HMAC_KEY);
    let mirror = |url: &str| format!("http:\n  url: {url}\n  hmac_secret_file: {}\nretries: 0\n", key.display());
    upstream.mirror("downstream", &mirror(&r.url("/trigger/debian")));
    let report = upstream.push(PushRequest::default()).await;
    let sent = row(&report, "downstream");
    assert_eq!((sent.outcome, sent.http_status), (Outcome::Ok, Some(202)), "{sent:?}");
    r.until("debian", "the signed run done", |a| a.runs_started == 1 && a.idle()).await;
    assert_eq!(d.runs(), ["debian all 2026112501"]);

    // Capture one signed request exactly as the transport sends it, then replay it twice.
    let capture = HttpReceiver::start().await.unwrap();
    upstream.mirror("downstream", &mirror(&capture.url("/trigger/debian")));
    assert_eq!(upstream.push(PushRequest::default()).await.summary.ok, 1);
    let hit = capture.log().hits().pop().unwrap();
    let (timestamp, sig) =
        (hit.header("x-pushmirror-timestamp").unwrap(), hit.header("x-pushmirror-signature").unwrap());
    assert_eq!(r.post_signed(timestamp, sig, &hit.body).await.0, 202);
    assert_eq!(r.post_signed(timestamp, sig, &hit.body).await, (401, String::new()), "a replay was accepted");

    // Signed by hand with the right key: now is fine, six minutes either way is not.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let body = br#"{"archive":"debian","stage":"all","serial":"2026112502","sent_at":"2026-11-25T10:00:00Z"}"#;
    for (t, expected) in [(now - 360, 401), (now + 360, 401), (now, 202)] {
        let t = t.to_string();
        let code = r.post_signed(&t, &signed_http::sign(HMAC_KEY.as_bytes(), &t, body), body).await.0;
        assert_eq!(code, expected, "timestamp {t}, now {now}");
    }
    let a = r.until("debian", "three accepted, idle", |a| a.triggers == 3 && a.idle()).await;
    assert!(a.runs_started >= 2, "{a:?}");
    assert!(d.runs().iter().all(|l| l == "debian all 2026112501" || l == "debian all 2026112502"), "{:?}", d.runs());
    r.stop().await;
}

/// The replay set outlives the process: a captured trigger sent again after a restart (within
/// the five minutes it is fresh) is still a replay.
#[tokio::test]
async fn a_replayed_signed_trigger_is_refused_after_a_restart() {
    let d = Downstream::new();
    d.config(&format!("  debian:\n    command: {}\n    hmac_secret_file: secrets/hmac\n", d.quick_sync(0)));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let body = br#"{"archive":"debian","stage":"all","serial":"2026112501"}"#;
    let signed = |t: u64| (t.to_string(), signed_http::sign(HMAC_KEY.as_bytes(), &t.to_string(), body));
    let (t, sig) = signed(now);

    let r = start(&d).await;
    assert_eq!(r.post_signed(&t, &sig, body).await.0, 202);
    r.until("debian", "the run done", |a| a.runs_started == 1 && a.idle()).await;
    r.stop().await;

    let r = start(&d).await;
    assert_eq!(r.post_signed(&t, &sig, body).await, (401, String::new()), "the replay was accepted after a restart");
    let (t, sig) = signed(now + 1);
    assert_eq!(r.post_signed(&t, &sig, body).await.0, 202, "a new signature was refused");
    r.until("debian", "the second run done", |a| a.runs_started == 1 && a.idle()).await;
    r.stop().await;
    assert_eq!(d.runs(), ["debian all 2026112501", "debian all 2026112501"]);
}

#[tokio::test]
async fn status_needs_the_credentials_of_a_trigger_unless_it_is_public() {
    let d = Downstream::new();
    let archives = format!(
        "  debian:\n    command: {sync}\n    bearer_token_file: secrets/token\n    hmac_secret_file: secrets/hmac\n  \
         ubuntu:\n    command: {sync}\n    basic_auth: {{ user: ubuntu, password_file: secrets/pw }}\n",
        sync = d.quick_sync(0)
    );
    d.config(&archives);
    let r = start(&d).await;
    let status = || r.client.get(r.url("/status"));
    assert_eq!(answer(status()).await, (401, String::new()), "status without credentials");
    assert_eq!(answer(status().bearer_auth(PASSWORD)).await, (401, String::new()), "status with a wrong token");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
    let signed = status()
        .header(signed_http::TIMESTAMP_HEADER, &now)
        .header(signed_http::SIGNATURE_HEADER, signed_http::sign(HMAC_KEY.as_bytes(), &now, b""));
    // Any archive's credentials will do, in any of the three ways.
    for (i, request) in [
        status().bearer_auth(TOKEN),
        status().header("authorization", base64_basic("ubuntu", PASSWORD)),
        signed.try_clone().unwrap(),
    ]
    .into_iter()
    .enumerate()
    {
        let (code, body) = answer(request).await;
        assert_eq!(code, 200, "request {i}: {body}");
        let served: ReceiveStatus = serde_json::from_str(&body).unwrap();
        assert_eq!(served.archives.len(), 2, "{served:?}");
    }
    assert_eq!(answer(signed).await.0, 401, "a replayed signature read the status");
    assert_eq!(answer(r.client.get(r.url("/healthz"))).await, (200, "ok\n".to_string()));
    r.stop().await;

    d.config_with("status: public\n", &archives);
    let r = start(&d).await;
    assert_eq!(answer(r.client.get(r.url("/status"))).await.0, 200, "a public status needs no credentials");
    r.stop().await;
}

/// An upstream config with archives debian and ubuntu and one HTTP mirror, `next`.
fn next_tier(next: &HttpReceiver) -> Fixture {
    let f = Fixture::new();
    f.set_main("mirrors_dir: mirrors.d\nstate_dir: state\narchives:\n  debian:\n    root: archive\n  ubuntu:\n    root: archive\n");
    f.mirror(
        "next",
        &format!(
            "http:\n  url: {}\n  headers: {{ X-Archive: \"{{archive}}\", X-Serial: \"{{serial}}\" }}\n",
            next.url("/trigger")
        ),
    );
    f
}

#[tokio::test]
async fn the_next_tier_is_pushed_after_a_successful_sync_and_not_after_a_failed_one() {
    let next = HttpReceiver::start().await.unwrap();
    let tier = next_tier(&next);
    let d = Downstream::new();
    let push = tier.config_path();
    d.config(&format!(
        "  debian:\n    command: {}\n    bearer_token_file: secrets/token\n    push: {}\n  ubuntu:\n    command: {}\n    bearer_token_file: secrets/token\n    push: {}\n",
        d.quick_sync(0),
        push.display(),
        d.quick_sync(1),
        push.display()
    ));
    let r = start(&d).await;

    assert_eq!(r.trigger("ubuntu?serial=2026120101", Auth::Bearer(TOKEN)).await.0, 202);
    let failed = r.until("ubuntu", "the failed run done", |a| a.runs_started == 1 && a.idle()).await;
    assert_eq!((failed.last_exit_code, failed.chained_pushes, failed.last_push), (Some(1), 0, None));
    assert_eq!(next.log().count(), 0, "pushed after a failed sync");

    assert_eq!(r.trigger("debian?serial=2026120102", Auth::Bearer(TOKEN)).await.0, 202);
    let ok = r.until("debian", "the push after the sync done", |a| a.chained_pushes == 1 && a.idle()).await;
    let pushed = ok.last_push.unwrap();
    assert_eq!((pushed.serial.as_deref(), pushed.summary.map(|s| s.ok)), (Some("2026120102"), Some(1)));
    let hits = next.log().hits();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!((hits[0].header("x-archive"), hits[0].header("x-serial")), (Some("debian"), Some("2026120102")));

    // After stage 1 this copy is not complete yet: no push.
    assert_eq!(r.trigger("debian?stage=stage1&serial=2026120103", Auth::Bearer(TOKEN)).await.0, 202);
    r.until("debian", "the stage-1 run done", |a| a.runs_started == 2 && a.idle()).await;
    assert_eq!(next.log().count(), 1, "pushed after stage 1");

    let reports = History::new(&tier.path("state"), 10).all().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!((reports[0].origin.as_str(), reports[0].serial.as_deref()), ("receive", Some("2026120102")));
    r.stop().await;
}

#[tokio::test]
async fn a_sync_past_its_timeout_is_killed() {
    let d = Downstream::new();
    let pid = d.path("pid");
    let command = argv(&["/bin/sh", "-c", r#"echo $$ > "$1"; exec sleep 600"#, "sync", pid.to_str().unwrap()]);
    d.config(&format!("  debian:\n    command: {command}\n    timeout: 200ms\n    bearer_token_file: secrets/token\n"));
    let r = start(&d).await;
    assert_eq!(r.trigger("debian", Auth::Bearer(TOKEN)).await.0, 202);
    let a = r.until("debian", "the run ended", |a| a.runs_started == 1 && a.idle()).await;
    // Ended because it was killed: the process is gone (reaped), not sleeping on.
    let pid = std::fs::read_to_string(&pid).unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{}", pid.trim())).exists(), "the sync command still runs");
    assert_eq!(a.last_exit_code, None);
    assert_eq!(a.last_error.as_deref(), Some("killed after its timeout of 200ms"));
    r.stop().await;
}

#[test]
fn config_errors_are_reported_at_once_with_positions_and_exit_2() {
    let d = Downstream::new();
    let open = d.path("secrets/open");
    std::fs::write(&open, "sup3r-secret-value\n").unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(
        d.config_path(),
        "listen: 127.0.0.1:0\narchives:\n  noauth:\n    command: [/bin/true]\n  typo:\n    comand: [/bin/true]\n    bearer_token_file: secrets/token\n  open:\n    command: [/bin/true]\n    hmac_secret_file: secrets/open\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushmirror"))
        .args(["receive", d.config_path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let file = d.config_path().display().to_string();
    for expected in [
        format!("{file}:3:3: archives.noauth: no way to authenticate triggers"),
        format!("{file}:5:3: archives.typo.command: missing"),
        format!("{file}:6:5: archives.typo.comand: unknown field"),
        format!("{file}:10:5: archives.open.hmac_secret_file: permissions 0644 of {}", open.display()),
    ] {
        assert!(err.contains(&expected), "missing `{expected}` in:\n{err}");
    }
    assert!(err.contains("4 error(s)"), "{err}");
    assert!(!err.contains("sup3r"), "a secret was printed:\n{err}");
}

/// `pushmirror receive` as a process, and the address it logged.
async fn spawn_receive(d: &Downstream, extra: &[&str]) -> (DaemonProcess, String) {
    let config = d.config_path();
    let mut args = vec!["receive", config.to_str().unwrap()];
    args.extend(extra);
    listening(DaemonProcess::spawn_args(&args)).await
}

/// A started `pushmirror receive` and the address it logged.
async fn listening(p: DaemonProcess) -> (DaemonProcess, String) {
    let listening = p.line("receiving triggers").await;
    let addr = listening.split("addr=").nth(1).and_then(|s| s.split_whitespace().next());
    let addr = addr.unwrap_or_else(|| panic!("no address in: {listening}")).to_string();
    (p, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_receive_and_kills_a_sync_past_the_grace_period() {
    let d = Downstream::new();
    d.config(&format!("  debian:\n    command: {}\n    bearer_token_file: secrets/token\n", d.slow_sync()));
    let (p, addr) = spawn_receive(&d, &["--grace", "100ms"]).await;
    let response =
        reqwest::Client::new().post(format!("http://{addr}/trigger/debian")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 202);
    p.line("sync started").await;
    p.signal("TERM");
    let (status, log) = p.exit().await;
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("grace period over: killing running syncs"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.contains(TOKEN), "the token was logged:\n{log}");
    assert_eq!(d.runs().len(), 1);
}

/// A flood of refused triggers costs a bounded number of log lines: the first refusal in detail
/// at once, then at most one summary per minute with the counts by reason (and the last counts
/// at shutdown). Read from the process's log, as an operator would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_triggers_is_logged_once_then_summarised() {
    let d = Downstream::new();
    d.config(&format!("  debian:\n    command: {}\n    bearer_token_file: secrets/token\n", d.quick_sync(0)));
    let (p, addr) = spawn_receive(&d, &[]).await;
    let client = reqwest::Client::new();
    let flood = std::time::Instant::now();
    for i in 0..1000 {
        let request = client.get(format!("http://{addr}/trigger/debian"));
        let request = if i % 4 == 3 { request } else { request.bearer_auth("not-the-token") };
        assert_eq!(request.send().await.unwrap().status().as_u16(), 401);
    }
    let minutes = flood.elapsed().as_secs() / 60 + 1;
    p.signal("TERM");
    let (status, log) = p.exit().await;
    assert_eq!(status.code(), Some(0), "{log}");

    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && (l.contains("trigger for debian") || l.contains(" more refused ")))
        .collect();
    let bound = 2 * minutes as usize;
    assert!(refusals.len() <= bound, "{} lines for 1000 refusals in {minutes} minute(s)", refusals.len());
    assert!(refusals[0].contains("trigger for debian from 127.0.0.1 refused: wrong credentials"), "{log}");
    let summaries: Vec<&str> = refusals.iter().copied().filter(|l| l.contains(" more refused in the last ")).collect();
    let summarised: usize = summaries
        .iter()
        .map(|l| l.split(" more refused").next().unwrap().rsplit(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(summarised + refusals.len() - summaries.len(), 1000, "{log}");
    let last = summaries.last().unwrap();
    assert!(last.contains("wrong credentials") && last.contains("no credentials"), "{last}");
    assert!(!log.contains(TOKEN), "the token was logged");
}

/// The unauthorised attempt is logged with archive and address, never with what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthorised_trigger_is_logged_without_its_secret() {
    let d = Downstream::new();
    d.config(&format!("  debian:\n    command: {}\n    bearer_token_file: secrets/token\n", d.quick_sync(0)));
    let (p, addr) = spawn_receive(&d, &[]).await;
    let wrong = format!("{TOKEN}-wrong");
    let response =
        reqwest::Client::new().get(format!("http://{addr}/trigger/debian")).bearer_auth(&wrong).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let line = p.line("trigger for debian").await;
    assert!(
        line.contains("WARN") && line.contains("trigger for debian from 127.0.0.1 refused: wrong credentials"),
        "{line}"
    );
    p.signal("TERM");
    let (status, log) = p.exit().await;
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!log.contains(TOKEN), "a token was logged:\n{log}");
}

/// On a host with a small open-file limit, more idle connections than receive could hold must
/// not keep a valid trigger out: receive holds fewer connections than it has descriptors (here
/// at most 32 of 64) and closes the quietest one to make room for a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_starve_valid_triggers() {
    let d = Downstream::new();
    d.config(&format!("  debian:\n    command: {}\n    bearer_token_file: secrets/token\n", d.quick_sync(0)));
    let config = d.config_path();
    let (p, addr) = listening(DaemonProcess::spawn_with_open_files(64, &["receive", config.to_str().unwrap()])).await;
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Not a bound on speed: without it, a starved trigger would wait forever.
    let sent = reqwest::Client::new()
        .post(format!("http://{addr}/trigger/debian"))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(60))
        .send()
        .await;
    let code = sent.map(|r| r.status().as_u16()).map_err(|e| format!("{e:?}"));
    assert_eq!(code, Ok(202), "a valid trigger behind 100 idle connections\n{}", p.log());
    let mut oldest = idle.swap_remove(0);
    assert_eq!(read_to_end(&mut oldest).await.0, Vec::<u8>::new(), "the quietest connection was kept");
    p.line("sync finished").await;
    p.signal("TERM");
    let (status, log) = p.exit().await;
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("closed to make room"), "{log}");
}

/// Everything the peer sends until it closes (or resets) the connection, and whether it reset it.
async fn read_to_end(stream: &mut tokio::net::TcpStream) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt as _;
    let mut bytes = Vec::new();
    let reset = stream.read_to_end(&mut bytes).await.is_err();
    (bytes, reset)
}

/// Reads until the receiver closes `stream`; fails if it is still open after an hour (of paused
/// time: the clock jumps to the next timer when nothing else can happen).
async fn until_closed(what: &str, stream: &mut tokio::net::TcpStream) -> String {
    let read = tokio::time::timeout(Duration::from_secs(3600), read_to_end(stream)).await;
    let (bytes, _) = read.unwrap_or_else(|_| panic!("the {what} connection was still open after an hour"));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Connections that send nothing, or only part of a request head, or nothing more after an
/// answer, are closed once the header timeout (default 10 s) has passed.
#[tokio::test(start_paused = true)]
async fn silent_half_sent_and_spent_connections_are_closed_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt as _;
    let d = Downstream::new();
    d.config(&format!("  debian:\n    command: {}\n    bearer_token_file: secrets/token\n", d.quick_sync(0)));
    let r = start(&d).await;
    let opened = tokio::time::Instant::now();
    let connect = || tokio::net::TcpStream::connect(r.receiving.addr);
    let mut silent = connect().await.unwrap();
    let mut half_sent = connect().await.unwrap();
    half_sent.write_all(b"GET /healthz HTTP/1.1\r\nHost: receive\r\n").await.unwrap();
    let mut spent = connect().await.unwrap();
    spent.write_all(b"GET /healthz HTTP/1.1\r\nHost: receive\r\n\r\n").await.unwrap();

    assert_eq!(until_closed("silent", &mut silent).await, "");
    assert_eq!(until_closed("half-sent", &mut half_sent).await, "");
    let answered = until_closed("spent", &mut spent).await;
    assert!(answered.starts_with("HTTP/1.1 200") && answered.ends_with("ok\n"), "{answered}");
    assert!(opened.elapsed() >= Duration::from_secs(10), "closed after {:?}", opened.elapsed());
    r.stop().await;
}

/// A body that stops arriving is answered with 408 once the body timeout (default 10 s) has
/// passed, not waited for as long as the client keeps the connection open.
#[tokio::test(start_paused = true)]
async fn a_body_that_stops_arriving_is_answered_408_after_the_body_timeout() {
    use tokio::io::AsyncWriteExt as _;
    let d = Downstream::new();
    d.config(&format!("  debian:\n    command: {}\n    bearer_token_file: secrets/token\n", d.quick_sync(0)));
    let r = start(&d).await;
    let sent = tokio::time::Instant::now();
    let mut stream = tokio::net::TcpStream::connect(r.receiving.addr).await.unwrap();
    let head = format!(
        "POST /trigger/debian HTTP/1.1\r\nHost: receive\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{\"stage\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = until_closed("stalled", &mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(sent.elapsed() >= Duration::from_secs(10), "answered after {:?}", sent.elapsed());
    assert_eq!(r.receiving.status.borrow().archive("debian").unwrap().triggers, 0);
    r.stop().await;
}

/// At the connection limit a connection in the middle of a request is never closed for a new
/// one: when every connection is mid-request, the new one is closed at once.
#[tokio::test]
async fn at_the_connection_limit_requests_in_progress_are_kept_and_a_new_connection_is_closed() {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let d = Downstream::new();
    d.config_with(
        "limits: { connections: 2 }\n",
        &format!("  debian:\n    command: {}\n    bearer_token_file: secrets/token\n", d.quick_sync(0)),
    );
    let r = start(&d).await;
    let connect = || tokio::net::TcpStream::connect(r.receiving.addr);
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = BufReader::new(connect().await.unwrap());
        let head = format!(
            "POST /trigger/debian HTTP/1.1\r\nHost: receive\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
        );
        stream.get_mut().write_all(head.as_bytes()).await.unwrap();
        // The 100 comes once the handler reads the body: the request is in progress.
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("HTTP/1.1 100"), "{line}");
        stream.read_line(&mut line).await.unwrap();
        busy.push(stream);
    }
    let mut third = connect().await.unwrap();
    // Not a bound on speed: without it, a connection kept open would be waited for forever.
    let (bytes, _) = tokio::time::timeout(Duration::from_secs(60), read_to_end(&mut third))
        .await
        .expect("the new connection was neither answered nor closed");
    assert_eq!(bytes, Vec::<u8>::new(), "the new connection got an answer");
    for mut stream in busy {
        stream.get_mut().write_all(b"{}").await.unwrap();
        let (answer, _) = read_to_end(stream.get_mut()).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    }
    r.stop().await;
}

/// The README's recipe to sign a trigger with stock tools (openssl, curl), run as written,
/// is accepted by `pushmirror receive`: the documented format is the one implemented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_recipe_signs_a_trigger_receive_accepts() {
    let d = Downstream::new();
    d.config(&format!("  debian:\n    command: {}\n    hmac_secret_file: secrets/hmac\n", d.quick_sync(0)));
    let r = start(&d).await;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = readme.split("To sign a trigger yourself with stock tools").nth(1).expect("the recipe");
    let recipe = after.split("```sh\n").nth(1).and_then(|r| r.split("```").next()).unwrap().to_string();
    let (secret, url) = (d.path("secrets/hmac"), r.url("/trigger/debian"));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .args(["-eu", "-c", &recipe])
            .env("SECRET_FILE", secret)
            .env("URL", url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    r.until("debian", "the run done", |a| a.runs_started == 1 && a.idle()).await;
    assert_eq!(d.runs(), ["debian all 2026120601"]);
    r.stop().await;
}
