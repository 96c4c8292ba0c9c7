//! Freshness: which version each mirror serves, read from the trace files it publishes under its
//! `check:` URL, compared with this archive's own. A survey reads, per mirror, `project/trace/master`
//! (the version it serves, and that version's `Date:`), `_hierarchy` (its chain of upstreams) and
//! its own trace (its last sync's duration): GETs bounded in size (64 KiB) and time, HTTPS
//! verified, a global cap on requests in flight.
//!
//! A mirror's **lag** is how old the version it serves is: zero when it serves this archive's
//! version, else the time since that version's `Date:`. It is **behind** when its lag exceeds the
//! archive's `max_lag`, or when that age cannot be told; **unreachable** when its `master` cannot
//! be read.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::Url;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::config::{Archive, Config};
use crate::observe::trace::{Hop, Trace, parse_hierarchy};
use crate::push::report::Report;
use crate::vocab::model::{Standing, Timestamp};
use crate::vocab::units::format_ms;

/// The most of a trace file that is read.
pub const MAX_TRACE: usize = 64 * 1024;
/// The longest one GET may take, connection included.
pub const GET_TIMEOUT: Duration = Duration::from_secs(10);
/// GETs in flight at once, all mirrors together.
pub const CONCURRENCY: usize = 64;

/// One mirror of one archive, surveyed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FreshnessRow {
    /// Archive.
    pub archive: String,
    /// Mirror name.
    pub mirror: String,
    /// Whether pushmirror triggers it or only checks it.
    pub kind: MirrorKind,
    /// How it stands.
    pub standing: Standing,
    /// The version it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Since when it has served that version, as this host's sweeps saw it change (the daemon's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// How many versions this archive has pushed after the one it serves, as far as the report
    /// history goes back (absent when its version is not in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind_versions: Option<u32>,
    /// The `Date:` of that version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_date: Option<Timestamp>,
    /// How old the version it serves is, milliseconds (0 when up to date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    /// Its last sync's duration, from its own trace, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_ms: Option<u64>,
    /// The host it syncs from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Its chain from the primary, `_hierarchy`'s mirror names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// When it was read.
    pub checked_at: Timestamp,
    /// What went wrong reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FreshnessRow {
    /// What the row says of the mirror, for the ledger.
    pub fn live(&self) -> crate::push::ledger::Live {
        crate::push::ledger::Live {
            standing: self.standing,
            version: self.version.clone(),
            lag_ms: self.lag_ms,
            since: self.since,
            checked_at: self.checked_at,
            error: self.error.clone(),
        }
    }
}

/// Whether a surveyed mirror is one pushmirror triggers or one it only checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MirrorKind {
    /// A mirror with a transport (`ssh:`, `http:`, `mqtt:`) and a `check:` URL.
    Triggered,
    /// A mirror under `watch:`, only checked.
    CheckOnly,
}

impl std::fmt::Display for MirrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MirrorKind::Triggered => "triggered",
            MirrorKind::CheckOnly => "check-only",
        })
    }
}

/// What a survey needs to know of one mirror.
struct Target {
    name: String,
    kind: MirrorKind,
    check: Url,
}

/// Surveys every mirror with a `check:` URL (triggered and check-only, enabled ones) of each
/// archive, or only of `only`, judging each against this archive's version and the pushes in the
/// report `history`. Rows are sorted by archive, then mirror.
pub async fn survey(config: &Config, only: Option<&str>, prober: &Prober, history: &[Report]) -> Vec<FreshnessRow> {
    let mut tasks = tokio::task::JoinSet::new();
    for archive in config.archives.values().filter(|a| only.is_none_or(|o| o == a.name)) {
        let ours = Arc::new(Ours::of(archive, history));
        for target in targets(config, &archive.name) {
            let (prober, ours) = (prober.clone(), Arc::clone(&ours));
            let (name, max_lag) = (archive.name.clone(), archive.max_lag);
            tasks.spawn(async move {
                let read = read_mirror(&prober, &target.check).await;
                judge(&name, &target, &ours, max_lag, read, SystemTime::now())
            });
        }
    }
    let mut rows = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        // A survey task that panicked is a bug: it is not a mirror's state, so it is not hidden.
        rows.push(joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())));
    }
    rows.sort_by(|a, b| (&a.archive, &a.mirror).cmp(&(&b.archive, &b.mirror)));
    rows
}

/// What a mirror of one archive is judged against.
struct Ours {
    /// This archive's version now (as the daemon reads it: [`crate::archive::watch::version_of`]).
    version: Option<String>,
    /// The `Date:` of this archive's trace: when its version appeared.
    date: Option<SystemTime>,
    /// The serials pushed, oldest first, each with when it was first pushed.
    pushed: Vec<(String, SystemTime)>,
}

impl Ours {
    fn of(archive: &Archive, history: &[Report]) -> Ours {
        let path = archive.root.join(&archive.trace);
        let text = crate::sys::fsutil::read_bounded(&path, crate::sys::fsutil::limit::TRACE).ok();
        Ours {
            version: text.as_deref().map(crate::archive::watch::version_of),
            date: text.as_deref().and_then(|t| Trace::parse(&String::from_utf8_lossy(t)).date()),
            pushed: pushed_serials(history, &archive.name),
        }
    }

    /// Since when a mirror serving `version` has been stale: when the first version after it was
    /// pushed, else (its version is older than the history) when ours appeared, else unknown.
    fn stale_since(&self, version: &str) -> Option<SystemTime> {
        match self.pushed.iter().position(|(s, _)| s == version) {
            Some(i) => self.pushed.get(i + 1).map(|(_, at)| *at).or(self.date),
            None => self.date,
        }
    }
}

fn targets(config: &Config, archive: &str) -> Vec<Target> {
    let triggered = config.mirrors_of(archive).filter(|m| m.enabled).filter_map(|m| {
        m.check.clone().map(|check| Target { name: m.name.clone(), kind: MirrorKind::Triggered, check })
    });
    let watched = config.watched.iter().filter(|w| w.enabled && w.serves(archive)).map(|w| Target {
        name: w.name.clone(),
        kind: MirrorKind::CheckOnly,
        check: w.check.clone(),
    });
    triggered.chain(watched).collect()
}

/// What was read of one mirror.
struct Read {
    master: Result<String, String>,
    hierarchy: Vec<Hop>,
    own: Option<Trace>,
}

async fn read_mirror(prober: &Prober, base: &Url) -> Read {
    let master = prober.get(base, "project/trace/master").await;
    if master.is_err() {
        return Read { master, hierarchy: Vec::new(), own: None };
    }
    let (hierarchy, own) = prober.own_trace(base).await;
    Read { master, hierarchy, own }
}

/// A request's error with its causes (`error sending request: … connection refused`), never its
/// URL.
fn explain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// A trace file name from `_hierarchy` that may be joined below `project/trace/`.
fn is_file_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Reads trace files over HTTP: one client (HTTPS verified, [`GET_TIMEOUT`] per GET) and a cap
/// of [`CONCURRENCY`] GETs in flight, shared by everything that probes mirrors.
#[derive(Clone)]
pub struct Prober {
    client: reqwest::Client,
    permits: Arc<Semaphore>,
}

/// What a conditional GET was told last time (`ETag`, `Last-Modified`), to send back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

/// The answer to a conditional GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// 200: the content and its validators.
    Body(String, Validators),
    /// 304: unchanged since the validators sent.
    NotModified,
}

impl Prober {
    /// A prober with its own client.
    pub fn new() -> anyhow::Result<Prober> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("pushmirror/", env!("CARGO_PKG_VERSION"), " (freshness)"))
            .tls_backend_rustls()
            .timeout(GET_TIMEOUT)
            // A trace is read where `check:` says: a redirect (to another host, or from https to
            // http) is an error, not followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Prober { client, permits: Arc::new(Semaphore::new(CONCURRENCY)) })
    }

    /// GETs `path` below `base`: 200 with at most [`MAX_TRACE`] bytes of UTF-8, else why not.
    pub async fn get(&self, base: &Url, path: &str) -> Result<String, String> {
        match self.get_if_changed(base, path, &Validators::default()).await? {
            Fetched::Body(text, _) => Ok(text),
            Fetched::NotModified => Err(format!("{path}: HTTP 304 to an unconditional GET")),
        }
    }

    /// Like [`Prober::get`], sending `since` as `If-None-Match` / `If-Modified-Since`. Errors
    /// never hold the URL (a base URL is public, but errors stay uniform with the triggers').
    pub async fn get_if_changed(&self, base: &Url, path: &str, since: &Validators) -> Result<Fetched, String> {
        use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
        let url = base.join(path).map_err(|e| format!("invalid URL: {e}"))?;
        let _permit = self.permits.acquire().await.map_err(|_| "prober closed".to_string())?;
        let mut request = self.client.get(url);
        if let Some(etag) = &since.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        if let Some(date) = &since.last_modified {
            request = request.header(IF_MODIFIED_SINCE, date);
        }
        let mut response = request.send().await.map_err(explain)?;
        if response.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !response.status().is_success() {
            return Err(format!("{path}: HTTP {}", response.status()));
        }
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let validators = Validators { etag: header(ETAG), last_modified: header(LAST_MODIFIED) };
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(explain)? {
            if body.len() + chunk.len() > MAX_TRACE {
                return Err(format!("{path}: larger than {MAX_TRACE} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body).map_err(|_| format!("{path}: not UTF-8 text"))?;
        if let Some(markup) = crate::observe::trace::markup(&text) {
            // A web server's index or error page served with 200 (a wrong `check:` URL, a
            // portal): its first line would be taken for a version. Named with its (public) URL,
            // without any credentials it might hold.
            let mut shown = base.join(path).map_err(|e| format!("invalid URL: {e}"))?;
            let _ = shown.set_username("");
            let _ = shown.set_password(None);
            return Err(format!("{shown}: not a trace file: it begins with `{markup}` (a web page?)"));
        }
        Ok(Fetched::Body(text, validators))
    }

    /// The trace of the mirror itself, named by the last line of its `_hierarchy`.
    pub async fn own_trace(&self, base: &Url) -> (Vec<Hop>, Option<Trace>) {
        let hierarchy =
            self.get(base, "project/trace/_hierarchy").await.map(|t| parse_hierarchy(&t)).unwrap_or_default();
        let own = match hierarchy.last() {
            Some(hop) if is_file_name(&hop.tracefile) => {
                self.get(base, &format!("project/trace/{}", hop.tracefile)).await.ok().map(|t| Trace::parse(&t))
            }
            _ => None,
        };
        (hierarchy, own)
    }
}

fn judge(archive: &str, target: &Target, ours: &Ours, max_lag: Duration, read: Read, now: SystemTime) -> FreshnessRow {
    let mut row = FreshnessRow {
        archive: archive.to_string(),
        mirror: target.name.clone(),
        kind: target.kind,
        standing: Standing::Unreachable,
        version: None,
        version_date: None,
        lag_ms: None,
        last_sync_ms: None,
        upstream: None,
        chain: read.hierarchy.iter().map(|h| h.mirror.clone()).collect(),
        checked_at: Timestamp(now),
        since: None,
        behind_versions: None,
        error: None,
    };
    let text = match read.master {
        Ok(text) => text,
        Err(e) => {
            row.error = Some(e);
            return row;
        }
    };
    let version = crate::archive::watch::version_of(text.as_bytes());
    let master = Trace::parse(&text);
    row.version_date = master.date().map(Timestamp);
    // Its own trace describes its last sync; only the one that brought this version counts.
    let own = read.own.filter(|t| t.serial() == Some(version.as_str()));
    row.last_sync_ms = own.as_ref().and_then(Trace::sync_duration).map(crate::vocab::units::millis);
    row.upstream = own.as_ref().and_then(|t| t.upstream().map(str::to_string));
    let lag = if ours.version.as_deref() == Some(version.as_str()) {
        Some(Duration::ZERO)
    } else {
        // A `since` in the future (clocks apart) counts as stale since now.
        ours.stale_since(&version).map(|since| now.duration_since(since).unwrap_or_default())
    };
    row.lag_ms = lag.map(crate::vocab::units::millis);
    row.standing = match lag {
        _ if ours.version.as_deref() == Some(version.as_str()) => Standing::UpToDate,
        Some(age) if age <= max_lag => Standing::Syncing,
        _ => Standing::Behind,
    };
    if lag.is_none() {
        row.error = Some("how long it has been stale is unknown: its version was never pushed from here".into());
    }
    row.version = Some(crate::observe::trace::clean(&version));
    row
}

/// The last sweep's rows, kept in `state_dir/freshness.json` by the daemon (written atomically):
/// what `status --check` judges lag by, and what tells the next sweep since when each mirror has
/// served its version.
pub fn memory_file(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("freshness.json")
}

/// The rows of the last sweep (none when there was none), or why they cannot be read.
pub fn recall(state_dir: &std::path::Path) -> Result<Vec<FreshnessRow>, String> {
    let path = memory_file(state_dir);
    match crate::sys::fsutil::read_bounded(&path, crate::sys::fsutil::limit::STATE) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|e| format!("{} is not a freshness memory: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("cannot read {}: {}", path.display(), crate::sys::owner::unreadable_reason(&path, &e))),
    }
}

/// Removes the memory of the last sweep: nothing is surveyed any more.
pub fn forget(state_dir: &std::path::Path) -> std::io::Result<()> {
    crate::sys::fsutil::remove_if_present(&memory_file(state_dir))
}

/// Stores `rows` as the last sweep.
pub fn remember(state_dir: &std::path::Path, rows: &[FreshnessRow]) -> std::io::Result<()> {
    crate::sys::fsutil::write_atomic(&memory_file(state_dir), &serde_json::to_vec(rows)?)
}

/// Fills in what one survey cannot know alone: `since` (carried from `previous` while a mirror
/// serves the same version; now, when it changed) and `behind_versions` (from the report
/// `history`: the distinct serials pushed after the one it serves).
pub fn annotate(rows: &mut [FreshnessRow], previous: &[FreshnessRow], history: &[Report]) {
    // Each archive's pushed serials once, not once per row.
    let mut pushed_of: std::collections::BTreeMap<String, Vec<(String, SystemTime)>> = Default::default();
    for row in rows.iter_mut() {
        let before = previous.iter().find(|p| p.archive == row.archive && p.mirror == row.mirror);
        if row.version.is_none() {
            // Unreachable: the last version seen stays, with since when.
            row.version = before.and_then(|p| p.version.clone());
            row.since = before.and_then(|p| p.since);
        } else {
            row.since = match before {
                Some(p) if p.version == row.version => p.since.or(Some(p.checked_at)),
                // Changed since the last sweep; on first sight, since when is unknown.
                Some(_) => Some(row.checked_at),
                None => None,
            };
        }
        let pushed = pushed_of.entry(row.archive.clone()).or_insert_with(|| pushed_serials(history, &row.archive));
        row.behind_versions = match (&row.version, row.standing) {
            (_, Standing::UpToDate) => Some(0),
            (Some(v), _) => {
                pushed.iter().position(|(s, _)| s == v).map(|i| u32::try_from(pushed.len() - 1 - i).unwrap_or(u32::MAX))
            }
            (None, _) => None,
        };
    }
}

/// The serials pushed of `archive`, oldest first, each once with when it was first pushed.
fn pushed_serials(history: &[Report], archive: &str) -> Vec<(String, SystemTime)> {
    let mut reports: Vec<&Report> =
        history.iter().filter(|r| r.archive == archive && !r.dry_run && r.serial.is_some()).collect();
    reports.sort_by_key(|r| r.started_at);
    let mut serials: Vec<(String, SystemTime)> = Vec::new();
    for r in reports {
        if let Some(serial) = &r.serial
            && !serials.iter().any(|(s, _)| s == serial)
        {
            serials.push((serial.clone(), r.started_at.0));
        }
    }
    serials
}

/// Whether every row is up to date or within its archive's `max_lag`.
pub fn all_fresh(rows: &[FreshnessRow]) -> bool {
    rows.iter().all(|r| matches!(r.standing, Standing::UpToDate | Standing::Syncing))
}

/// An age as an operator reads it: `0`, `42s`, `17m`, `5h03m`, `2d04h`.
pub fn format_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => "0".into(),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..172_800 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The survey as a table.
pub fn to_table(rows: &[FreshnessRow]) -> String {
    let mut lines = vec![
        ["ARCHIVE", "MIRROR", "STANDING", "VERSION", "BEHIND", "LAG", "LAST SYNC", "UPSTREAM", "KIND", "ERROR"]
            .map(String::from),
    ];
    for r in rows {
        let ms = |v: Option<u64>| v.map(format_ms).unwrap_or_else(|| "-".into());
        let age = |v: Option<u64>| v.map(format_age).unwrap_or_else(|| "-".into());
        lines.push([
            r.archive.clone(),
            r.mirror.clone(),
            r.standing.to_string(),
            r.version.clone().unwrap_or_else(|| "-".into()),
            r.behind_versions.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            age(r.lag_ms),
            ms(r.last_sync_ms),
            r.upstream.clone().unwrap_or_else(|| "-".into()),
            r.kind.to_string(),
            r.error.clone().unwrap_or_default(),
        ]);
    }
    crate::vocab::output::align(&lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_an_operator_says_them() {
        let said: Vec<String> = [0, 999, 42_000, 17 * 60_000, 5 * 3_600_000 + 3 * 60_000, 52 * 3_600_000]
            .into_iter()
            .map(format_age)
            .collect();
        assert_eq!(said, ["0", "0", "42s", "17m", "5h03m", "2d04h"]);
    }
}
