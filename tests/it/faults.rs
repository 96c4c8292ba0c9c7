//! One HTTP mirror per network fault, pushed through the real engine and transport under paused
//! time: each fault's outcome, attempt count and time bound are asserted here, and the README's
//! "fault → outcome → attempts → time bound" table is rendered from these same rows — the test
//! fails when the README differs (`PUSHMIRROR_WRITE_README=1 cargo test faults` rewrites it).

use std::time::Duration;

use pushmirror::demo::{HttpReceiver, Reply};
use pushmirror::push::plan::PushRequest;
use pushmirror::vocab::model::{ErrorClass, Outcome};
use tokio::time::Instant;

use crate::common::{Fixture, dribbling_server, row};

/// Every mirror below: `timeout: 10s`, `retries: 2`, `backoff: { initial: 1s, max: 4s }`.
const MIRROR: &str = "timeout: 10s\nretries: 2\nbackoff: { initial: 1s, max: 4s }\n";

struct Fault {
    /// What the mirror does, for the README.
    fault: &'static str,
    /// The mirror's URL (a receiver started for this fault) and any extra mirror lines.
    url: String,
    extra: &'static str,
    outcome: Outcome,
    class: Option<ErrorClass>,
    attempts: u32,
    /// The trigger's virtual time from push start to outcome is at most this, and what it is.
    bound: Duration,
    bound_text: &'static str,
}

#[tokio::test(start_paused = true)]
async fn every_fault_ends_in_its_documented_outcome_within_its_bound() {
    let faults = faults().await;
    let mut table = String::from(
        "| fault | outcome | attempts | time bound (`timeout: 10s`, `retries: 2`, `backoff: 1s…4s`) |\n|---|---|---|---|\n",
    );
    for fault in &faults {
        let f = Fixture::new();
        f.mirror("m", &format!("http:\n  url: {}\n{MIRROR}{}", fault.url, fault.extra));
        if fault.outcome == Outcome::Deferred {
            // The first push uses the mirror's only slot of the hour.
            assert_eq!(row(&f.push(PushRequest::default()).await, "m").outcome, Outcome::Ok);
        }
        let started = Instant::now();
        let report = f.push(PushRequest::default()).await;
        let took = started.elapsed();
        let r = row(&report, "m");
        assert_eq!(
            (r.outcome, r.error_class, r.attempts),
            (fault.outcome, fault.class, fault.attempts),
            "{}: {r:?}",
            fault.fault
        );
        assert!(took <= fault.bound, "{}: took {took:?}, bound {:?}", fault.fault, fault.bound);
        let outcome = match r.error_class {
            Some(class) => format!("`{}` ({class})", r.outcome),
            None => format!("`{}`", r.outcome),
        };
        table.push_str(&format!("| {} | {outcome} | {} | {} |\n", fault.fault, r.attempts, fault.bound_text));
    }
    check_readme(&table);
}

async fn faults() -> Vec<Fault> {
    let status = |s| async move { HttpReceiver::builder().reply(Reply::Status(s)).start().await.unwrap() };
    let ok = status(200).await;
    let not_found = status(404).await;
    let flaky = HttpReceiver::builder().script([Reply::Status(503)]).start().await.unwrap();
    let busy = HttpReceiver::builder().script([Reply::RetryAfter(429, 3)]).start().await.unwrap();
    let down = status(500).await;
    let hang = HttpReceiver::builder().reply(Reply::Hang).start().await.unwrap();
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", l.local_addr().unwrap())
    };
    let limited = status(200).await;
    // Keep the receivers alive for the whole test.
    let urls = [&ok, &not_found, &flaky, &busy, &down, &hang, &limited].map(|r| r.url("/"));
    std::mem::forget((ok, not_found, flaky, busy, down, hang, limited));
    let s = Duration::from_secs;
    vec![
        Fault {
            fault: "answers 2xx",
            url: urls[0].clone(),
            extra: "",
            outcome: Outcome::Ok,
            class: None,
            attempts: 1,
            bound: s(10),
            bound_text: "`timeout`",
        },
        Fault {
            fault: "answers 200, then sends its body at 1 byte/s",
            url: dribbling_server().await.0,
            extra: "",
            outcome: Outcome::Ok,
            class: None,
            attempts: 1,
            bound: s(12),
            bound_text: "`timeout` for the head + min(2 s, `timeout`) for the body",
        },
        Fault {
            fault: "answers 404 (any 4xx but 408/429)",
            url: urls[1].clone(),
            extra: "",
            outcome: Outcome::Failed,
            class: Some(ErrorClass::HttpStatus),
            attempts: 1,
            bound: s(10),
            bound_text: "`timeout`: never retried",
        },
        Fault {
            fault: "answers 503 once, then 200",
            url: urls[2].clone(),
            extra: "",
            outcome: Outcome::Ok,
            class: None,
            attempts: 2,
            bound: s(10 + 1 + 10),
            bound_text: "2 × `timeout` + first backoff (≤ 1 s)",
        },
        Fault {
            fault: "answers 429 `Retry-After: 3`, then 200",
            url: urls[3].clone(),
            extra: "",
            outcome: Outcome::Ok,
            class: None,
            attempts: 2,
            bound: s(10 + 3 + 10),
            bound_text: "2 × `timeout` + `Retry-After` (capped at `backoff.max`)",
        },
        Fault {
            fault: "answers 500 every time",
            url: urls[4].clone(),
            extra: "",
            outcome: Outcome::Failed,
            class: Some(ErrorClass::HttpStatus),
            attempts: 3,
            bound: s(3 * 10 + 1 + 2),
            bound_text: "(`retries`+1) × `timeout` + backoffs (≤ 1 s, ≤ 2 s)",
        },
        Fault {
            fault: "accepts the connection, never answers",
            url: urls[5].clone(),
            extra: "",
            outcome: Outcome::Failed,
            class: Some(ErrorClass::Timeout),
            attempts: 3,
            bound: s(3 * 10 + 1 + 2),
            bound_text: "(`retries`+1) × `timeout` + backoffs",
        },
        Fault {
            fault: "refuses the connection",
            url: refused,
            extra: "",
            outcome: Outcome::Failed,
            class: Some(ErrorClass::Connect),
            attempts: 3,
            bound: s(3 * 10 + 1 + 2),
            bound_text: "(`retries`+1) × `timeout` + backoffs",
        },
        Fault {
            fault: "its `rate_limit` is used up",
            url: urls[6].clone(),
            extra: "rate_limit: 1/1h\n",
            outcome: Outcome::Deferred,
            class: None,
            attempts: 0,
            bound: s(10),
            bound_text: "none sent; `deferred_until` says when (the daemon sends it then)",
        },
    ]
}

const BEGIN: &str = "<!-- fault table: generated by tests/it/faults.rs -->\n";
const END: &str = "<!-- end of fault table -->\n";

fn check_readme(table: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (Some(a), Some(b)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md has no fault table between {BEGIN:?} and {END:?}");
    };
    let current = &readme[a + BEGIN.len()..b];
    if current == table {
        return;
    }
    if std::env::var_os("PUSHMIRROR_WRITE_README").is_some() {
        let updated = format!("{}{BEGIN}{table}{}", &readme[..a], &readme[b..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!("README.md's fault table differs from what the tests assert; rerun with PUSHMIRROR_WRITE_README=1\n{table}");
}
