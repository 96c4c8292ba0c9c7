//! The daemon's HTML status page: archives, the running push, each mirror's last outcome, the
//! last push's propagation (an SVG chart drawn here, no scripts) and tiers, the freshness table.
//! Self-contained: no scripts, no external resources; it refreshes itself every 10 s.

use std::fmt::Write as _;

use crate::daemon::status::{ArchiveStatus, DaemonStatus};
use crate::observe::freshness::{FreshnessRow, MirrorKind};
use crate::push::ledger::MirrorView;
use crate::push::report::{Propagated, Report};
use crate::vocab::model::Standing;
use crate::vocab::model::Timestamp;
use crate::vocab::units::format_ms;

/// The HTML status page: archives, current push progress, the mirror table. No scripts, no
/// external resources; it refreshes itself every 10 s.
pub fn render(status: &DaemonStatus) -> String {
    let mut html = String::from(concat!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta http-equiv=refresh content=10><title>pushmirror</title><style>",
        "body{font:14px system-ui,sans-serif;margin:2em;color:#222}",
        "table{border-collapse:collapse;margin:.5em 0 2em}td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left}",
        "th{background:#f4f4f4}.ok{color:#1a7f37}.failed{color:#cf222e;font-weight:bold}.deferred{color:#9a6700}",
        ".skipped,.planned,.unknown,.disabled{color:#777}small{color:#666}progress{width:20em}",
        ".failing{color:#cf222e;font-weight:bold}.pending{color:#9a6700}",
        ".up-to-date{color:#1a7f37}.syncing{color:#9a6700}.behind,.unreachable{color:#cf222e;font-weight:bold}",
        "svg text{font:11px system-ui,sans-serif;fill:#555}",
        "</style></head><body><h1>pushmirror</h1>"
    ));
    if let Some(t) = status.started_at {
        let _ = write!(html, "<p><small>daemon started {}</small></p>", esc(&t.to_string()));
    }
    for a in &status.archives {
        let _ = write!(
            html,
            "<h2>{}</h2><p>trace version <b>{}</b>{} · last pushed <b>{}</b></p>",
            esc(&a.name),
            esc(a.observed_version.as_deref().unwrap_or("none")),
            if a.locked { " (update in progress)" } else { "" },
            esc(a.pushed_version.as_deref().unwrap_or("none")),
        );
        if let Some(p) = &a.push {
            let _ = write!(
                html,
                "<p>pushing {} since {}: <progress max={} value={}></progress> {}/{}</p>",
                esc(p.version.as_deref().unwrap_or("?")),
                esc(&p.started_at.to_string()),
                p.total,
                p.done.len(),
                p.done.len(),
                p.total
            );
        }
        if let Some(r) = &a.last_report {
            let _ = write!(
                html,
                "<p><small>last push: {} at {} — {} ok, {} failed, {} deferred, {} skipped in {}</small></p>",
                esc(r.serial.as_deref().unwrap_or("?")),
                esc(&r.finished_at.to_string()),
                r.summary.ok,
                r.summary.failed,
                r.summary.deferred,
                r.summary.skipped,
                format_ms(r.duration_ms)
            );
        }
        if let Some(why) = &status.mirrors_error {
            let _ = write!(html, "<p class=failing>the mirrors' state cannot be read: {}</p>", esc(why));
        }
        html.push_str(&mirror_table(&a.mirrors));
        if let Some(r) = &a.rotation {
            let _ = write!(html, "<p class=rotation>key rotation — {}</p>", esc(&r.summary(50)));
        }
        html.push_str(&propagation(a, &status.freshness));
    }
    if !status.kept_aside.is_empty() {
        let files: Vec<String> = status.kept_aside.iter().map(|f| esc(f)).collect();
        let _ = write!(
            html,
            "<p class=failing>corrupt state kept aside (rebuilt or lost; look, then delete to clear): {}</p>",
            files.join(", ")
        );
    }
    if !status.freshness.is_empty() {
        html.push_str(&freshness_table(&status.freshness, &status.archives));
    }
    if !status.deferred.is_empty() {
        html.push_str(
            "<h2>Deferred by rate limits</h2><table><tr><th>archive</th><th>mirror</th><th>allowed from</th></tr>",
        );
        for d in &status.deferred {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.archive),
                esc(&d.mirror),
                esc(&d.until.to_string())
            );
        }
        html.push_str("</table>");
    }
    html.push_str("</body></html>\n");
    html
}

/// Every mirror of an archive as the ledger shows it: the same views as `/status` and
/// `status --check`.
fn mirror_table(rows: &[MirrorView]) -> String {
    let mut html = String::from(
        "<table class=mirrors><tr><th>mirror</th><th>kind</th><th>state</th><th>since</th><th>delivered</th>\
         <th>last trigger</th><th>detail</th></tr>",
    );
    for m in rows {
        let last = m.state.last.as_ref().map(|t| format!("{} {}", t.outcome, t.at)).unwrap_or_default();
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td class={}>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&m.state.mirror),
            m.kind,
            m.health,
            m.health,
            m.since.map(|t| t.to_string()).unwrap_or_default(),
            esc(m.state.delivered.as_deref().unwrap_or("")),
            esc(&last),
            esc(&m.detail()),
        );
    }
    html.push_str("</table>");
    html
}

/// The propagation being followed (live), else the last push's: chart and tiers.
fn propagation(a: &ArchiveStatus, freshness: &[FreshnessRow]) -> String {
    let mut html = String::new();
    if let Some(p) = &a.propagation {
        let elapsed = crate::vocab::units::millis(p.started_at.0.elapsed().unwrap_or_default());
        let deadline = crate::vocab::units::millis(p.deadline.0.duration_since(p.started_at.0).unwrap_or_default());
        let title = format!("Propagation of {} (following, until {})", p.version, p.deadline);
        html.push_str(&propagation_chart(&title, &p.rows, p.followed, Some(deadline), Some(elapsed)));
    } else if let Some(r) = a.last_report.as_ref().filter(|r| !r.propagation.is_empty()) {
        let title = format!("Propagation of {}", r.serial.as_deref().unwrap_or("?"));
        html.push_str(&propagation_chart(&title, &r.propagation, r.propagation.len(), r.propagation_deadline_ms, None));
        html.push_str(&tier_table(r, freshness));
    }
    html
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The share of followed mirrors live over time since the push started: a step line, drawn as
/// inline SVG, held at its final level to the end of the chart, with that level written out.
/// The x axis ends at the last mirror seen live, or now while following; the deadline is
/// drawn where it falls on the chart, else named.
fn propagation_chart(
    title: &str,
    rows: &[Propagated],
    followed: usize,
    deadline: Option<u64>,
    now: Option<u64>,
) -> String {
    const W: f64 = 480.0;
    const H: f64 = 160.0;
    const PAD: f64 = 36.0;
    let total = followed.max(rows.len());
    let mut live: Vec<u64> = rows.iter().filter_map(|p| p.live_after_ms).collect();
    live.sort_unstable();
    let end = live.last().copied().unwrap_or(0).max(now.unwrap_or(0)).max(1);
    let x = |ms: u64| PAD + (W - 2.0 * PAD) * ms.min(end) as f64 / end as f64;
    let y = |n: usize| H - PAD + (2.0 * PAD - H) * n as f64 / total.max(1) as f64;
    let mut points = format!("{:.1},{:.1}", x(0), y(0));
    for (i, ms) in live.iter().enumerate() {
        let _ = write!(points, " {:.1},{:.1} {:.1},{:.1}", x(*ms), y(i), x(*ms), y(i + 1));
    }
    // Held at its final level to the right edge.
    let _ = write!(points, " {:.1},{:.1}", x(end), y(live.len()));
    let share = 100 * live.len() / total.max(1);
    let deadline_mark = match deadline {
        Some(d) if d <= end => format!(
            "<line class=deadline x1={dx:.1} y1={PAD} x2={dx:.1} y2={b} stroke=#cf222e stroke-dasharray=4 /><text x={tx:.1} y={ty}>deadline</text>",
            dx = x(d),
            b = H - PAD,
            tx = x(d) - 46.0,
            ty = PAD - 4.0,
        ),
        Some(d) => format!(
            "<text x={tx} y={ty}>deadline at {}</text>",
            esc(&crate::observe::freshness::format_age(d)),
            tx = W - PAD - 130.0,
            ty = PAD - 4.0
        ),
        None => String::new(),
    };
    format!(
        "<h3>{} <small>({} of {total} followed mirrors live)</small></h3>\
         <svg class=propagation role=img aria-label=\"share of mirrors live over time: {share}% live\" width={W} height={H} viewBox=\"0 0 {W} {H}\">\
         <line x1={PAD} y1={b} x2={r} y2={b} stroke=#999 /><line x1={PAD} y1={PAD} x2={PAD} y2={b} stroke=#999 />\
         <polyline fill=none stroke=#1a7f37 stroke-width=2 points=\"{points}\" />\
         <text class=final x={fx:.1} y={fy:.1}>{share}%</text>{deadline_mark}\
         <text x=4 y={t}>100%</text><text x=14 y={b}>0%</text>\
         <text x={PAD} y={l}>0</text><text x={rl} y={l}>{}</text></svg>",
        esc(title),
        live.len(),
        esc(&format_ms(end)),
        b = H - PAD,
        r = W - PAD,
        t = PAD + 4.0,
        l = H - PAD + 16.0,
        rl = W - PAD - 30.0,
        fx = W - PAD + 4.0,
        fy = y(live.len()) + 4.0,
    )
}

/// The median of sorted `values`: the middle one, or the mean of the two middle ones.
fn median(values: &[u64]) -> Option<u64> {
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[n / 2]),
        n => Some((values[n / 2 - 1] + values[n / 2]) / 2),
    }
}

/// Tiers from the mirrors' `_hierarchy` chains: tier N is N hops from the primary; per tier its
/// mirrors, the hubs that feed them, and the median time to live of the last push.
fn tier_table(report: &Report, freshness: &[FreshnessRow]) -> String {
    /// One tier: its mirrors, the hubs feeding them, their times to live.
    #[derive(Default)]
    struct Tier {
        mirrors: Vec<String>,
        hubs: Vec<String>,
        live: Vec<u64>,
    }
    let mut tiers: std::collections::BTreeMap<usize, Tier> = Default::default();
    // Tiers are of the mirrors pushed to: a check-only mirror is in none.
    let pushed = |r: &&FreshnessRow| r.kind == MirrorKind::Triggered;
    for row in freshness.iter().filter(|r| r.archive == report.archive && !r.chain.is_empty()).filter(pushed) {
        let tier = tiers.entry(row.chain.len()).or_default();
        tier.mirrors.push(row.mirror.clone());
        if let Some(hub) = row.chain.iter().rev().nth(1).cloned().or_else(|| row.upstream.clone())
            && !tier.hubs.contains(&hub)
        {
            tier.hubs.push(hub);
        }
        let live = report.propagation.iter().find(|p| p.mirror == row.mirror).and_then(|p| p.live_after_ms);
        tier.live.extend(live);
    }
    if tiers.is_empty() {
        return String::new();
    }
    let mut html = String::from(
        "<table class=tiers><tr><th>tier</th><th>mirrors</th><th>fed by</th><th>median live after</th></tr>",
    );
    for (n, Tier { mirrors, hubs, mut live }) in tiers {
        live.sort_unstable();
        let median = median(&live).map(format_ms).unwrap_or_else(|| "-".into());
        let _ = write!(
            html,
            "<tr><td>{n}</td><td>{}</td><td>{}</td><td>{median}</td></tr>",
            esc(&mirrors.join(", ")),
            esc(&hubs.join(", "))
        );
    }
    html.push_str("</table>");
    html
}

/// The last freshness sweep: every mirror with a `check:` URL. A mirror the sweep saw up to
/// date with a version its archive has pushed past since is shown syncing: it serves an older
/// version now.
fn freshness_table(rows: &[FreshnessRow], archives: &[ArchiveStatus]) -> String {
    let mut html = String::from(
        "<h2>Freshness</h2><table class=freshness><tr><th>archive</th><th>mirror</th><th>standing</th>\
         <th>version</th><th>behind</th><th>age</th><th>since</th><th>upstream</th><th>checked</th></tr>",
    );
    let time = |t: Option<Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
    for r in rows {
        let pushed = archives.iter().find(|a| a.name == r.archive).and_then(|a| a.pushed_version.as_deref());
        let passed = |v: &str| pushed.is_some_and(|p| !crate::observe::propagation::serves(v, p));
        let standing = match (r.standing, r.version.as_deref()) {
            (Standing::UpToDate, Some(v)) if passed(v) => Standing::Syncing,
            (standing, _) => standing,
        };
        let class = standing.to_string().replace(' ', "-");
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td class={class}>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.archive),
            esc(&r.mirror),
            standing,
            esc(r.version.as_deref().unwrap_or("-")),
            r.behind_versions.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            r.lag_ms.map(crate::observe::freshness::format_age).unwrap_or_else(|| "-".into()),
            time(r.since),
            esc(r.upstream.as_deref().unwrap_or("-")),
            time(Some(r.checked_at)),
        );
    }
    html.push_str("</table>");
    html
}
