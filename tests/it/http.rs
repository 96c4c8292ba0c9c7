//! The HTTP transport and the engine against real HTTP servers on 127.0.0.1:0.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pushmirror::demo::{HttpReceiver, Log, Reply};
use pushmirror::push::plan::PushRequest;
use pushmirror::vocab::model::{ErrorClass, Outcome};

use crate::common::{Fixture, dribbling_server, row};

#[tokio::test]
async fn two_hundred_is_ok_and_the_receiver_gets_one_request() {
    let rx = HttpReceiver::builder().reply(Reply::Status(204)).start().await.unwrap();
    let f = Fixture::new();
    f.mirror(
        "m",
        &format!(
            "http:\n  url: {}\n  headers: {{ X-Archive: \"{{archive}}\", X-Serial: \"{{serial}}\" }}\n",
            rx.url("/hook?token=abc")
        ),
    );
    let report = f.push(PushRequest::default()).await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.attempts, r.http_status), (Outcome::Ok, 1, Some(204)));
    let hits = rx.log().hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].method, "GET");
    assert_eq!(hits[0].uri, "/hook?token=abc");
    assert_eq!(hits[0].header("x-archive"), Some("debian"));
    assert_eq!(hits[0].header("x-serial"), Some("2026112501"));
}

#[tokio::test]
async fn placeholders_in_the_url_are_replaced_and_encoded_and_never_shown() {
    let rx = HttpReceiver::builder().reply(Reply::Status(204)).start().await.unwrap();
    let f = Fixture::new();
    f.set_serial("2026 11/29");
    let url = rx.url("/sync/{archive}/{stage}?serial={serial}&token=s3cret");
    f.mirror("m", &format!("http:\n  url: \"{url}\"\n"));
    let report = f.push(PushRequest::default()).await;
    assert_eq!(row(&report, "m").outcome, Outcome::Ok);
    let hits = rx.log().hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].uri, "/sync/debian/all?serial=2026%2011%2F29&token=s3cret");
    let shown = serde_json::to_string(&report).unwrap();
    assert!(!shown.contains("s3cret") && !shown.contains("/sync/"), "the report shows the URL: {shown}");
}

#[tokio::test(start_paused = true)]
async fn server_error_then_ok_is_ok_after_two_attempts() {
    let rx = HttpReceiver::builder().script([Reply::Status(500)]).start().await.unwrap();
    let f = Fixture::new();
    f.http_mirror("m", &rx.url("/"), "retries: 3\n");
    let report = f.push(PushRequest::default()).await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.attempts), (Outcome::Ok, 2));
    assert_eq!(rx.log().count(), 2);
}

#[tokio::test(start_paused = true)]
async fn too_many_requests_with_retry_after_waits_that_long() {
    let rx = HttpReceiver::builder().script([Reply::RetryAfter(429, 7)]).start().await.unwrap();
    let f = Fixture::new();
    // Backoff alone would retry within 100 ms; Retry-After must win (it is under the 5 m cap).
    f.mirror("m", &format!("http:\n  url: {}\nretries: 2\nbackoff: {{ initial: 100ms, max: 5m }}\n", rx.url("/")));
    let report = f.push(PushRequest::default()).await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.attempts), (Outcome::Ok, 2));
    let hits = rx.log().hits();
    let gap = hits[1].at - hits[0].at;
    assert!(gap >= Duration::from_secs(7), "second attempt after {gap:?}");
    assert!(gap < Duration::from_secs(8), "second attempt after {gap:?}");
}

#[tokio::test(start_paused = true)]
async fn not_found_is_a_permanent_failure_after_one_attempt() {
    let rx = HttpReceiver::builder().reply(Reply::Status(404)).start().await.unwrap();
    let f = Fixture::new();
    f.http_mirror("m", &rx.url("/"), "retries: 5\n");
    let report = f.push(PushRequest::default()).await;
    let r = row(&report, "m");
    assert_eq!(
        (r.outcome, r.attempts, r.error_class, r.http_status),
        (Outcome::Failed, 1, Some(ErrorClass::HttpStatus), Some(404))
    );
    assert_eq!(rx.log().count(), 1);
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_silent_receiver_times_out_while_the_others_finish_on_time() {
    let hang = HttpReceiver::builder().reply(Reply::Hang).start().await.unwrap();
    let log = Arc::new(Log::default());
    let mut quick = Vec::new();
    let f = Fixture::new();
    f.http_mirror("silent", &hang.url("/"), "timeout: 20s\nretries: 0\n");
    for i in 0..3 {
        let rx = HttpReceiver::builder()
            .log(Arc::clone(&log))
            .reply(Reply::Delay(Duration::from_millis(50), 200))
            .start()
            .await
            .unwrap();
        f.http_mirror(&format!("quick{i}"), &rx.url("/"), "timeout: 20s\n");
        quick.push(rx);
    }
    let report = f.push(PushRequest::default()).await;
    let silent = row(&report, "silent");
    assert_eq!((silent.outcome, silent.error_class), (Outcome::Failed, Some(ErrorClass::Timeout)));
    assert!(silent.duration_ms >= 20_000, "{}", silent.duration_ms);
    for i in 0..3 {
        let r = row(&report, &format!("quick{i}"));
        assert_eq!(r.outcome, Outcome::Ok);
        assert!(r.duration_ms < 1_000, "quick{i} took {} ms", r.duration_ms);
    }
    assert_eq!(log.count(), 3);
}

#[tokio::test]
async fn connection_refused_is_a_connect_failure() {
    // Bind, learn the port, close: nothing listens there now.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let f = Fixture::new();
    f.mirror(
        "gone",
        &format!("http:\n  url: http://127.0.0.1:{port}/\nretries: 1\nbackoff: {{ initial: 10ms, max: 10ms }}\n"),
    );
    let report = f.push(PushRequest::default()).await;
    let r = row(&report, "gone");
    assert_eq!((r.outcome, r.error_class, r.attempts), (Outcome::Failed, Some(ErrorClass::Connect), 2));
}

#[tokio::test]
async fn concurrency_four_over_twenty_slow_receivers_never_exceeds_four() {
    let log = Arc::new(Log::default());
    let f = Fixture::with_main("");
    std::fs::write(
        f.config_path(),
        "mirrors_dir: mirrors.d\nstate_dir: state\nconcurrency: 4\narchives:\n  debian:\n    root: archive\n",
    )
    .unwrap();
    let mut receivers = Vec::new();
    for i in 0..20 {
        let rx = HttpReceiver::builder()
            .log(Arc::clone(&log))
            .reply(Reply::Delay(Duration::from_millis(100), 200))
            .start()
            .await
            .unwrap();
        f.http_mirror(&format!("slow{i:02}"), &rx.url("/"), "");
        receivers.push(rx);
    }
    let report = f.push(PushRequest::default()).await;
    assert_eq!(report.summary.ok, 20);
    assert_eq!(log.count(), 20);
    assert_eq!(log.peak_in_flight(), 4, "the limit should be reached and never exceeded");
}

#[tokio::test(start_paused = true)]
async fn a_dribbled_200_is_ok_after_one_attempt() {
    let (url, requests) = dribbling_server().await;
    let f = Fixture::new();
    f.http_mirror("m", &url, "timeout: 10s\nretries: 2\n");
    let report = f.push(PushRequest::default()).await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.attempts, r.http_status), (Outcome::Ok, 1, Some(200)), "{r:?}");
    assert_eq!(r.note.as_deref(), Some("body not read to the end"), "{r:?}");
    assert_eq!(requests.load(Ordering::SeqCst), 1, "the trigger was delivered once");
}
