//! The fan-out engine: every trigger of a plan runs concurrently under one semaphore, each behind
//! its mirror's rate limit, with retries and backoff, and each ends in exactly one outcome.
//!
//! Staged mirrors get stage 1 concurrently; stage 2 starts only when every staged mirror's stage 1
//! has ended, and only for those whose stage 1 was delivered. `all` mirrors run alongside.

mod attempt;
mod rows;
pub(crate) mod slots;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use attempt::backoff_delay;
use attempt::{TriggerOutcome, attempt_until_done};
use rows::{attempted_row, blank_row, interrupted_row, lost, notify, sent_row, skipped};
use slots::{Slots, unless_cancelled};

use crate::config::Mirror;
use crate::push::plan::Plan;
use crate::push::ratelimit::{Admission, RateLimits};
use crate::push::report::TriggerReport;
use crate::transport::{Downstream, Trigger, TriggerRequest};
use crate::vocab::clock::Clock;
use crate::vocab::model::{ErrorClass, Outcome, STATE_RETRY, SkipReason, Stage, Timestamp};

/// Called with each trigger's report as soon as it is known (progress bars, live status).
pub type OnDone = Arc<dyn Fn(&TriggerReport) + Send + Sync>;

/// `first` (if any), then `then`, as one [`OnDone`].
pub fn also(first: Option<OnDone>, then: impl Fn(&TriggerReport) + Send + Sync + 'static) -> OnDone {
    Arc::new(move |row: &TriggerReport| {
        if let Some(f) = &first {
            f(row);
        }
        then(row);
    })
}

/// A failed attempt that will be retried.
#[derive(Debug, Clone)]
pub struct Retry {
    /// The mirror.
    pub mirror: String,
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    /// Its error class.
    pub class: ErrorClass,
    /// Its error in words.
    pub error: String,
    /// How long until the next attempt.
    pub delay: Duration,
}

/// Called when a failed attempt is about to be retried (progress on a terminal).
pub type OnRetry = Arc<dyn Fn(&Retry) + Send + Sync>;

/// Called after every attempt with how long it took (metrics).
pub type OnAttempt = Arc<dyn Fn(Duration) + Send + Sync>;

/// How to carry out a plan.
#[derive(Clone, Default)]
pub struct Options {
    /// Rate-limited triggers wait for their slot instead of being reported deferred.
    pub wait: bool,
    /// Plan only: nothing is sent, nothing is recorded.
    pub dry_run: bool,
    /// Progress callback.
    pub on_done: Option<OnDone>,
    /// Attempt-duration callback.
    pub on_attempt: Option<OnAttempt>,
    /// Retry callback.
    pub on_retry: Option<OnRetry>,
    /// Cancelled: triggers not yet delivered end as failed ("interrupted") at once.
    pub cancel: Option<CancellationToken>,
    /// Cancelled: no new attempt starts — a trigger waiting for a slot, sleeping in backoff or
    /// waiting for its rate limit ends as interrupted at once; running attempts go on (until
    /// [`Options::cancel`]).
    pub stop: Option<CancellationToken>,
}

impl Options {
    /// What ends a wait between attempts: [`Options::stop`], else [`Options::cancel`].
    fn waits_end(&self) -> &Option<CancellationToken> {
        if self.stop.is_some() { &self.stop } else { &self.cancel }
    }
}

/// The error message of a trigger cut short by [`Options::cancel`]; its class is
/// [`ErrorClass::Interrupted`], which is what callers decide on.
pub const INTERRUPTED: &str = "interrupted: pushmirror is shutting down";

/// Numbers the pushes of this process ([`TriggerRequest::push`]).
static NEXT_PUSH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The engine: a transport, the bounds on what is in flight ([`slots`]), the rate limits and the
/// clock.
pub struct Engine<T> {
    transport: Arc<T>,
    slots: Slots,
    limits: RateLimits,
    clock: Clock,
}

impl<T> Clone for Engine<T> {
    fn clone(&self) -> Self {
        Engine {
            transport: Arc::clone(&self.transport),
            slots: self.slots.clone(),
            limits: self.limits.clone(),
            clock: self.clock.clone(),
        }
    }
}

struct Job {
    index: usize,
    push: u64,
    mirror: Arc<Mirror>,
    archive: Arc<str>,
    serial: Option<Arc<str>>,
    mhop: bool,
}

impl Job {
    fn request(&self, stage: Stage) -> TriggerRequest<'_> {
        TriggerRequest {
            mirror: Downstream::of(&self.mirror, &self.archive),
            archive: &self.archive,
            stage,
            serial: self.serial.as_deref(),
            mhop: self.mhop,
            push: self.push,
        }
    }
}

impl<T: Trigger> Engine<T> {
    /// An engine with `concurrency` triggers in flight at most.
    pub fn new(transport: Arc<T>, concurrency: usize, limits: RateLimits, clock: Clock) -> Self {
        Engine { transport, slots: Slots::new(concurrency), limits, clock }
    }

    /// The same engine with at most `sockets` connections open at once.
    pub fn with_sockets(self, sockets: usize) -> Self {
        Engine { slots: self.slots.with_sockets(sockets), ..self }
    }

    /// The same engine with at most `per_host` triggers in flight to one host and port.
    pub fn with_per_host(self, per_host: usize) -> Self {
        Engine { slots: self.slots.with_per_host(per_host), ..self }
    }

    /// Carries out `plan`; returns one report row per trigger, in plan order.
    pub async fn run(&self, plan: &Plan, options: &Options) -> Vec<TriggerReport> {
        let mut rows: Vec<Vec<TriggerReport>> = vec![Vec::new(); plan.entries.len()];
        let archive: Arc<str> = Arc::from(plan.archive.as_str());
        let serial: Option<Arc<str>> = plan.serial.as_deref().map(Arc::from);
        let push = NEXT_PUSH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut single = JoinSet::new();
        let mut staged = JoinSet::new();
        // Which trigger each task carries, so that one that panics still ends in a row.
        let mut tasks: HashMap<tokio::task::Id, (usize, Stage)> = HashMap::new();
        for (index, entry) in plan.entries.iter().enumerate() {
            if let Some(reason) = entry.skip {
                rows[index] = vec![skipped(entry, entry.stages[0], reason)];
                continue;
            }
            let job = Job {
                index,
                push,
                mirror: Arc::clone(&entry.mirror),
                archive: archive.clone(),
                serial: serial.clone(),
                mhop: entry.mhop,
            };
            if options.dry_run {
                rows[index] = self.dry_run(&job, &entry.stages).await;
                continue;
            }
            let (engine, options) = (self.clone(), options.clone());
            let first = entry.stages[0];
            let set = if entry.stages.len() > 1 { &mut staged } else { &mut single };
            let task = set.spawn(async move {
                let row = engine.admit_and_deliver(&job, first, &options).await;
                (job, row)
            });
            tasks.insert(task.id(), (index, first));
        }
        // Stage 2 waits for every staged mirror's stage 1 to end.
        let mut stage_two = Vec::new();
        while let Some(joined) = staged.join_next().await {
            let (job, row) = match joined {
                Ok(done) => done,
                Err(e) => {
                    let (index, stage) = tasks[&e.id()];
                    rows[index].push(lost(&plan.entries[index], stage, &e, options));
                    continue;
                }
            };
            // A pending MQTT mirror has its stage 1 at the broker (retained): stage 2 follows.
            let delivered = matches!(row.outcome, Outcome::Ok | Outcome::Pending);
            let index = job.index;
            rows[index].push(row);
            if delivered {
                stage_two.push(job);
            } else {
                let entry = &plan.entries[index];
                let row = skipped(entry, Stage::Stage2, SkipReason::Stage1NotDelivered);
                notify(options, &row);
                rows[index].push(row);
            }
        }
        for job in stage_two {
            let (engine, options) = (self.clone(), options.clone());
            let index = job.index;
            let task = single.spawn(async move {
                let row = engine.deliver(&job, Stage::Stage2, &options).await;
                (job, row)
            });
            tasks.insert(task.id(), (index, Stage::Stage2));
        }
        while let Some(joined) = single.join_next().await {
            match joined {
                Ok((job, row)) => rows[job.index].push(row),
                Err(e) => {
                    let (index, stage) = tasks[&e.id()];
                    rows[index].push(lost(&plan.entries[index], stage, &e, options));
                }
            }
        }
        rows.into_iter().flatten().collect()
    }

    /// Waits for the mirror's rate limit (or reports it deferred), then delivers `stage`.
    async fn admit_and_deliver(&self, job: &Job, stage: Stage, options: &Options) -> TriggerReport {
        if let Some(limit) = job.mirror.rate_limit {
            loop {
                match self.limits.admit(&job.mirror.name, limit).await {
                    Ok(Admission::Allowed) => break,
                    Ok(Admission::DeferredUntil(until)) if options.wait => {
                        tracing::info!(mirror = %job.mirror.name, until = %Timestamp(until), "rate limit: waiting");
                        if unless_cancelled(options.waits_end(), tokio::time::sleep(self.clock.until(until)))
                            .await
                            .is_none()
                        {
                            let row = interrupted_row(&job.mirror, stage);
                            notify(options, &row);
                            return row;
                        }
                    }
                    Ok(Admission::DeferredUntil(until)) => {
                        let mut row = blank_row(&job.mirror, stage, Outcome::Deferred);
                        row.deferred_until = Some(Timestamp(until));
                        notify(options, &row);
                        return row;
                    }
                    Err(e) => {
                        // Not sent: without its state the limit cannot be kept. Still due from
                        // a little later (the daemon tries again then; a disk fills and frees).
                        let mut row = blank_row(&job.mirror, stage, Outcome::Failed);
                        row.error_class = Some(ErrorClass::State);
                        row.error = Some(format!("rate limit: {e}"));
                        row.deferred_until = Some(Timestamp(self.clock.now() + STATE_RETRY));
                        notify(options, &row);
                        return row;
                    }
                }
            }
        }
        self.deliver(job, stage, options).await
    }

    /// Attempts until delivered, a permanent failure, or retries are spent; logs and reports the
    /// row.
    async fn deliver(&self, job: &Job, stage: Stage, options: &Options) -> TriggerReport {
        let slots = self.slots.of(job.mirror.endpoint().as_ref());
        let tried: TriggerOutcome =
            attempt_until_done(&*self.transport, &slots, &self.clock, &job.mirror, job.request(stage), options).await;
        let row = attempted_row(&job.mirror, &job.archive, stage, tried);
        notify(options, &row);
        row
    }

    async fn dry_run(&self, job: &Job, stages: &[Stage]) -> Vec<TriggerReport> {
        let probe = self.limits.probe();
        let until = match job.mirror.rate_limit {
            Some(limit) => match probe.admit(&job.mirror.name, limit).await {
                Ok(Admission::DeferredUntil(t)) => Some(Timestamp(t)),
                _ => None,
            },
            None => None,
        };
        stages
            .iter()
            .map(|&stage| {
                let mut row = sent_row(&job.mirror, &job.archive, stage, Outcome::Planned);
                row.note = Some(crate::transport::describe(&job.request(stage)));
                row.deferred_until = until;
                row
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;

    use tokio::time::Instant;

    use super::*;
    use crate::config::{Backoff, MirrorKind};
    use crate::push::plan::PlanEntry;
    use crate::transport::{Attempt, AttemptError, AttemptResult, Delivered};

    /// Answers each mirror's attempts from a script, after an optional delay, and records when.
    #[derive(Default)]
    struct Scripted {
        replies: Mutex<HashMap<String, VecDeque<AttemptResult>>>,
        delay: HashMap<String, Duration>,
        attempts: Mutex<Vec<(String, Instant)>>,
    }

    impl Scripted {
        fn script(&self, mirror: &str, replies: impl IntoIterator<Item = AttemptResult>) {
            self.replies.lock().unwrap().entry(mirror.into()).or_default().extend(replies);
        }

        fn times(&self, mirror: &str) -> Vec<Instant> {
            self.attempts.lock().unwrap().iter().filter(|(m, _)| m == mirror).map(|(_, t)| *t).collect()
        }
    }

    impl Trigger for Scripted {
        async fn fire(&self, req: TriggerRequest<'_>, _attempt: &Attempt) -> AttemptResult {
            let name = req.mirror.name.to_string();
            self.attempts.lock().unwrap().push((name.clone(), Instant::now()));
            if let Some(d) = self.delay.get(&name) {
                tokio::time::sleep(*d).await;
            }
            let next = self.replies.lock().unwrap().get_mut(&name).and_then(VecDeque::pop_front);
            next.unwrap_or_else(|| Ok(Delivered::default()))
        }
    }

    /// An enabled `all` HTTP mirror with quick backoff (also used by other modules' tests).
    fn mirror(name: &str) -> Mirror {
        Mirror::example(name)
    }

    fn plan(mirrors: Vec<Mirror>) -> Plan {
        let entries = mirrors
            .into_iter()
            .map(|m| PlanEntry {
                stages: crate::push::plan::stages_of(&m),
                mirror: Arc::new(m),
                mhop: false,
                skip: None,
            })
            .collect();
        Plan { archive: "debian".into(), serial: None, entries }
    }

    fn engine(fake: Scripted, concurrency: usize, state: &std::path::Path) -> (Engine<Scripted>, Arc<Scripted>) {
        let fake = Arc::new(fake);
        let clock = Clock::following_tokio();
        let limits = RateLimits::persistent(state, clock.clone());
        (Engine::new(Arc::clone(&fake), concurrency, limits, clock), fake)
    }

    fn transient() -> AttemptResult {
        Err(AttemptError::transient(ErrorClass::Connect, "refused"))
    }

    /// Hands its concurrency slot back at once, then "waits for the sync" 10 ms; counts how many
    /// are open at the same time.
    #[derive(Default)]
    struct Waiting {
        open: std::sync::atomic::AtomicUsize,
        peak: std::sync::atomic::AtomicUsize,
    }

    impl Trigger for Waiting {
        async fn fire(&self, _req: TriggerRequest<'_>, attempt: &Attempt) -> AttemptResult {
            use std::sync::atomic::Ordering::SeqCst;
            attempt.release_permit();
            let open = self.open.fetch_add(1, SeqCst) + 1;
            self.peak.fetch_max(open, SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.open.fetch_sub(1, SeqCst);
            Ok(Delivered::default())
        }
    }

    /// A trigger waiting for its sync gives back its concurrency slot, not its socket: the
    /// socket bound holds, so a low open-file limit is never overrun by waiting sessions.
    #[tokio::test(start_paused = true)]
    async fn waiting_triggers_keep_their_socket_slot() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(Waiting::default());
        let clock = Clock::following_tokio();
        let limits = RateLimits::persistent(dir.path(), clock.clone());
        let engine = Engine::new(Arc::clone(&fake), 10, limits, clock).with_sockets(3);
        let mirrors = (0..9).map(|i| mirror(&format!("m{i}"))).collect();
        let rows = engine.run(&plan(mirrors), &Options::default()).await;
        assert!(rows.iter().all(|r| r.outcome == Outcome::Ok));
        assert_eq!(fake.peak.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_retry_with_capped_full_jitter_then_fail() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, fake) = engine(Scripted::default(), 4, dir.path());
        fake.script("m", [transient(), transient(), transient(), transient()]);
        let rows = engine.run(&plan(vec![mirror("m")]), &Options::default()).await;
        assert_eq!((rows[0].outcome, rows[0].attempts), (Outcome::Failed, 4));
        assert_eq!(rows[0].error_class, Some(ErrorClass::Connect));
        let times = fake.times("m");
        // Caps: 1 s, 2 s, then 4 s (the max).
        for (gap, cap) in times.windows(2).map(|w| w[1] - w[0]).zip([1, 2, 4]) {
            assert!(gap <= Duration::from_secs(cap), "gap {gap:?} over cap {cap}s");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_beyond_the_cap_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, fake) = engine(Scripted::default(), 4, dir.path());
        let mut busy = AttemptError::transient(ErrorClass::HttpStatus, "HTTP 429");
        busy.retry_after = Some(Duration::from_secs(3600));
        fake.script("m", [Err(busy)]);
        let rows = engine.run(&plan(vec![mirror("m")]), &Options::default()).await;
        assert_eq!((rows[0].outcome, rows[0].attempts), (Outcome::Ok, 2));
        let times = fake.times("m");
        assert_eq!(times[1] - times[0], Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_is_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, fake) = engine(Scripted::default(), 4, dir.path());
        fake.script("m", [Err(AttemptError::permanent(ErrorClass::Auth, "denied"))]);
        let rows = engine.run(&plan(vec![mirror("m")]), &Options::default()).await;
        assert_eq!(
            (rows[0].outcome, rows[0].attempts, rows[0].error_class),
            (Outcome::Failed, 1, Some(ErrorClass::Auth))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backing_off_does_not_hold_a_permit() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, fake) = engine(Scripted::default(), 1, dir.path());
        let mut later = AttemptError::transient(ErrorClass::HttpStatus, "HTTP 503");
        later.retry_after = Some(Duration::from_secs(100));
        fake.script("a-flaky", [Err(later)]);
        let mut flaky = mirror("a-flaky");
        flaky.backoff = Backoff { initial: Duration::from_secs(100), max: Duration::from_secs(100) };
        let start = Instant::now();
        let rows = engine.run(&plan(vec![flaky, mirror("b"), mirror("c")]), &Options::default()).await;
        assert!(rows.iter().all(|r| r.outcome == Outcome::Ok));
        // With one permit, b and c still ran while a-flaky waited out its 100 s.
        assert_eq!(fake.times("b")[0] - start, Duration::ZERO);
        assert_eq!(fake.times("c")[0] - start, Duration::ZERO);
        assert_eq!(fake.times("a-flaky")[1] - start, Duration::from_secs(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_mirror_does_not_delay_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Scripted { delay: [("slow".to_string(), Duration::from_secs(50))].into(), ..Default::default() };
        let (engine, _fake) = engine(fake, 2, dir.path());
        let start = Instant::now();
        let done = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&done);
        let options = Options {
            on_done: Some(Arc::new(move |r: &TriggerReport| {
                seen.lock().unwrap().push((r.mirror.clone(), start.elapsed()))
            })),
            ..Options::default()
        };
        let names = ["f1", "f2", "f3", "f4", "slow"];
        engine.run(&plan(names.iter().map(|n| mirror(n)).collect()), &options).await;
        let done = done.lock().unwrap();
        for (name, at) in done.iter() {
            if name == "slow" {
                assert_eq!(*at, Duration::from_secs(50));
            } else {
                assert_eq!(*at, Duration::ZERO, "{name} waited for the slow mirror");
            }
        }
        assert_eq!(done.len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_mirror_is_deferred_and_sent_once_allowed_with_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, fake) = engine(Scripted::default(), 4, dir.path());
        let mut m = mirror("m");
        m.rate_limit = Some("1/1h".parse().unwrap());
        let plan = plan(vec![m]);
        let first = engine.run(&plan, &Options::default()).await;
        assert_eq!(first[0].outcome, Outcome::Ok);
        let second = engine.run(&plan, &Options::default()).await;
        assert_eq!((second[0].outcome, second[0].attempts), (Outcome::Deferred, 0));
        let until = second[0].deferred_until.unwrap().0;
        let ahead = until.duration_since(engine.clock.now()).unwrap();
        assert!(ahead > Duration::from_secs(3590) && ahead <= Duration::from_secs(3600), "{ahead:?}");
        let dry = engine.run(&plan, &Options { dry_run: true, ..Options::default() }).await;
        assert_eq!((dry[0].outcome, dry[0].deferred_until.map(|t| t.0)), (Outcome::Planned, Some(until)));
        let start = Instant::now();
        let third = engine.run(&plan, &Options { wait: true, ..Options::default() }).await;
        assert_eq!(third[0].outcome, Outcome::Ok);
        assert!(start.elapsed() >= ahead, "sent after {:?}, before the limit allowed", start.elapsed());
        assert_eq!(fake.times("m").len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_interrupts_running_waiting_and_backing_off_triggers_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let hang = Duration::from_secs(1000);
        let fake = Scripted {
            delay: [("a-hung".to_string(), hang), ("d-hung".to_string(), hang)].into(),
            ..Default::default()
        };
        let (engine, fake) = engine(fake, 2, dir.path());
        fake.script("c-flaky", [transient()]);
        let mut flaky = mirror("c-flaky");
        flaky.backoff = Backoff { initial: Duration::from_secs(500), max: Duration::from_secs(500) };
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            stop.cancel();
        });
        let start = Instant::now();
        let options = Options { cancel: Some(cancel), ..Options::default() };
        // Two permits: a-hung and d-hung hold them, c-flaky backs off, b-waiting waits.
        let mirrors = vec![mirror("a-hung"), flaky, mirror("d-hung"), mirror("b-waiting")];
        let rows = engine.run(&plan(mirrors), &options).await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        for r in &rows {
            assert_eq!((r.outcome, r.error.as_deref()), (Outcome::Failed, Some(INTERRUPTED)), "{}", r.mirror);
        }
        assert_eq!(fake.times("c-flaky").len(), 1, "c-flaky was backing off, not retried");
        assert!(fake.times("b-waiting").is_empty(), "b-waiting never got a permit");
    }

    #[tokio::test(start_paused = true)]
    async fn unreadable_rate_limit_state_fails_the_trigger_instead_of_sending_it() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, fake) = engine(Scripted::default(), 4, dir.path());
        let mut m = mirror("m");
        m.rate_limit = Some("1/1h".parse().unwrap());
        let plan = plan(vec![m]);
        assert_eq!(engine.run(&plan, &Options::default()).await[0].outcome, Outcome::Ok);
        let state = dir.path().join("ratelimit/m.json");
        std::fs::write(&state, "").unwrap();
        let rows = engine.run(&plan, &Options::default()).await;
        assert_eq!((rows[0].outcome, rows[0].error_class), (Outcome::Failed, Some(ErrorClass::State)));
        let error = rows[0].error.as_deref().unwrap();
        assert!(error.contains(&state.display().to_string()), "{error}");
        assert_eq!(fake.times("m").len(), 1, "sent although the limit could not be checked");
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_that_cannot_be_recorded_fails_saying_it_could_not_be_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(Scripted::default());
        let clock = Clock::system();
        let disk_full: fn(&std::path::Path, &[u8]) -> std::io::Result<()> =
            |_, _| Err(std::io::Error::from_raw_os_error(28));
        let limits = RateLimits::persistent(dir.path(), clock.clone()).recording_with(disk_full);
        let engine = Engine::new(Arc::clone(&fake), 4, limits, clock);
        let mut m = mirror("m");
        m.rate_limit = Some("1/1h".parse().unwrap());
        let rows = engine.run(&plan(vec![m]), &Options::default()).await;
        assert_eq!((rows[0].outcome, rows[0].error_class), (Outcome::Failed, Some(ErrorClass::State)));
        let state = dir.path().join("ratelimit/m.json");
        let expected = format!("cannot record the send in {}: No space left on device", state.display());
        let error = rows[0].error.as_deref().unwrap();
        assert!(error.contains(&expected) && !error.contains("unreadable"), "{error}");
        assert!(fake.times("m").is_empty(), "sent although the send could not be recorded");
        assert!(rows[0].deferred_until.is_some(), "still due: the daemon tries it again");
    }

    /// A transport that panics for one mirror.
    struct Panicky;

    impl Trigger for Panicky {
        async fn fire(&self, req: TriggerRequest<'_>, _attempt: &Attempt) -> AttemptResult {
            assert_ne!(req.mirror.name, "boom", "transport bug");
            Ok(Delivered::default())
        }
    }

    #[tokio::test]
    async fn a_trigger_whose_task_panics_still_ends_in_a_failed_row() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::following_tokio();
        let engine = Engine::new(Arc::new(Panicky), 4, RateLimits::persistent(dir.path(), clock.clone()), clock);
        let mut staged = mirror("boom");
        staged.kind = MirrorKind::Staged;
        let rows = engine.run(&plan(vec![mirror("boom"), mirror("fine"), staged]), &Options::default()).await;
        let outcomes: Vec<_> = rows.iter().map(|r| (r.mirror.as_str(), r.stage, r.outcome)).collect();
        assert_eq!(
            outcomes,
            [
                ("boom", Stage::All, Outcome::Failed),
                ("fine", Stage::All, Outcome::Ok),
                ("boom", Stage::Stage1, Outcome::Failed)
            ]
        );
        assert!(rows[0].error.as_deref().unwrap().starts_with("internal error"));
        assert_eq!(rows[0].error_class, Some(ErrorClass::Internal));
    }

    #[tokio::test]
    async fn a_dead_task_is_logged_as_a_bug_and_a_deferral_once() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::following_tokio();
        let engine = Engine::new(Arc::new(Panicky), 4, RateLimits::persistent(dir.path(), clock.clone()), clock);
        let mut limited = mirror("limited");
        limited.rate_limit = Some("1/1h".parse().unwrap());
        let plan = plan(vec![mirror("boom"), limited]);
        engine.run(&plan, &Options::default()).await;
        let (rows, log) = crate::sys::logging::capture::logged(engine.run(&plan, &Options::default())).await;
        assert_eq!(rows.iter().map(|r| r.outcome).collect::<Vec<_>>(), [Outcome::Failed, Outcome::Deferred]);
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("trigger")).collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert!(
            lines.iter().any(|l| l.contains("ERROR")
                && l.contains("a bug in pushmirror")
                && l.contains("mirror=boom")
                && l.contains("class=internal")),
            "{log}"
        );
        assert!(
            lines.iter().any(|l| l.contains("INFO")
                && l.contains("trigger deferred by the rate limit mirror=limited")
                && l.contains("until=")),
            "{log}"
        );
    }

    #[test]
    fn backoff_without_retry_after_stays_under_its_cap() {
        let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
        for attempt in 1..40 {
            let cap = Duration::from_millis(100 * 2u64.pow((attempt - 1).min(10))).min(b.max);
            assert!(backoff_delay(&b, attempt, None) <= cap);
        }
        assert_eq!(backoff_delay(&b, 1, Some(Duration::from_millis(700))), Duration::from_millis(700));
    }
}
