//! The overview (`/`): per archive its versions, the push under way, the counts of mirrors by
//! standing, the propagation trend and the last push's propagation, and the grid — every mirror's
//! standing now (from the ledger, as every view) beside its last pushes; then freshness, deferred
//! triggers and state kept aside.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::grid::{Column, Grid};
use super::{Filters, Query, Sort, StateFilter, charts, esc, rank, shell, symbol, url_part};
use crate::config::Config;
use crate::daemon::status::{ArchiveStatus, DaemonStatus};
use crate::observe::freshness::{FreshnessRow, MirrorKind, format_age};
use crate::push::ledger::{Health, MirrorView};
use crate::push::report::Report;
use crate::vocab::model::{Standing, Timestamp};
use crate::vocab::units::format_ms;

/// What the overview shows.
pub struct Overview<'a> {
    /// The daemon's status, every mirror's view filled in.
    pub status: &'a DaemonStatus,
    /// The recent pushes.
    pub grid: &'a Grid,
    /// The running configuration (mirrors' tags), when known.
    pub config: Option<&'a Config>,
    /// The query.
    pub filters: &'a Filters,
    /// When it is rendered.
    pub now: Timestamp,
}

/// The overview of `status` alone: no push history, no configuration, no filters.
pub fn render(status: &DaemonStatus) -> String {
    let now = Timestamp(std::time::SystemTime::now());
    overview(&Overview { status, grid: &Grid::default(), config: None, filters: &Filters::default(), now })
}

/// The overview page.
pub fn overview(o: &Overview<'_>) -> String {
    let status = o.status;
    let mut query = Query::of(o.filters);
    if let Some(a) = query.archive.take_if(|a| !status.archives.iter().any(|x| x.name == *a)) {
        query.ignored.push(format!("archive `{}`", super::shorten(&a)));
    }
    let tagged = |t: &str| match o.config {
        Some(c) => {
            c.mirrors.iter().any(|m| m.tags.iter().any(|x| x == t))
                || c.watched.iter().any(|w| w.tags.iter().any(|x| x == t))
        }
        None => true,
    };
    if let Some(t) = query.tag.take_if(|t| !tagged(t)) {
        query.ignored.push(format!("tag `{}` (no mirror has it)", super::shorten(&t)));
    }
    let tiers = tiers(&status.freshness);
    let mut html = String::from("<h1>pushmirror</h1>");
    let started = status.started_at.map(|t| format!("daemon started {} · ", esc(&t.to_string()))).unwrap_or_default();
    let _ = write!(html, "<p><small>{started}shown at {}</small></p>", esc(&o.now.to_string()));
    html.push_str(&filter_form(o, &query, &tiers));
    if !query.ignored.is_empty() {
        let _ = write!(html, "<p class=failing>ignored, not understood: {}</p>", esc(&query.ignored.join(", ")));
    }
    if !status.kept_aside.is_empty() {
        let files: Vec<String> = status.kept_aside.iter().map(|f| esc(f)).collect();
        let _ = write!(
            html,
            "<p class=failing>corrupt state kept aside (rebuilt or lost; look, then delete to clear): {}</p>",
            files.join(", ")
        );
    }
    html.push_str(&super::history_errors(o.grid));
    if let Some(why) = &status.mirrors_error {
        let _ = write!(html, "<p class=failing>the mirrors' state cannot be read: {}</p>", esc(why));
    }
    let shown = status.archives.iter().filter(|a| query.archive.as_ref().is_none_or(|want| *want == a.name));
    for a in shown {
        html.push_str(&archive(o, &query, &tiers, a));
    }
    if !status.freshness.is_empty() {
        html.push_str(&freshness_table(&status.freshness, &status.archives));
    }
    if !status.deferred.is_empty() {
        html.push_str(
            "<h2>Deferred by rate limits</h2><table><tr><th scope=col>archive</th><th scope=col>mirror</th><th scope=col>allowed from</th></tr>",
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
    shell("pushmirror", &html, o.filters)
}

/// Each mirror's tier (hops from the primary) by (archive, mirror), from its `_hierarchy`.
fn tiers(freshness: &[FreshnessRow]) -> BTreeMap<(&str, &str), usize> {
    freshness
        .iter()
        .filter(|r| !r.chain.is_empty())
        .map(|r| ((r.archive.as_str(), r.mirror.as_str()), r.chain.len()))
        .collect()
}

/// The filters as a form whose submission is the URL of the view (a link to share).
fn filter_form(o: &Overview<'_>, query: &Query, tiers: &BTreeMap<(&str, &str), usize>) -> String {
    let option = |value: &str, label: &str, selected: bool| {
        format!("<option value=\"{}\"{}>{}</option>", esc(value), if selected { " selected" } else { "" }, esc(label))
    };
    let mut states = option("", "any", query.state.is_none());
    states.push_str(&option("problems", "any problem", query.state == Some(StateFilter::Problems)));
    for h in Health::ALL {
        states.push_str(&option(&h.to_string(), &h.to_string(), query.state == Some(StateFilter::Is(h))));
    }
    let mut tags: Vec<&str> = match o.config {
        Some(c) => c
            .mirrors
            .iter()
            .flat_map(|m| &m.tags)
            .chain(c.watched.iter().flat_map(|w| &w.tags))
            .map(String::as_str)
            .collect(),
        None => Vec::new(),
    };
    tags.sort_unstable();
    tags.dedup();
    let mut tag_options = option("", "any", query.tag.is_none());
    for t in tags {
        tag_options.push_str(&option(t, t, query.tag.as_deref() == Some(t)));
    }
    let mut tier_values: Vec<usize> = tiers.values().copied().collect();
    tier_values.sort_unstable();
    tier_values.dedup();
    let mut tier_options = option("", "any", query.tier.is_none());
    for t in tier_values {
        tier_options.push_str(&option(&t.to_string(), &t.to_string(), query.tier == Some(t)));
    }
    let mut sorts = String::new();
    for (sort, name) in Sort::ALL {
        sorts.push_str(&option(name, name, query.sort.unwrap_or(Sort::State) == sort));
    }
    let hidden = |name: &str, v: Option<&String>| {
        v.map(|v| format!("<input type=hidden name={name} value=\"{}\">", esc(v))).unwrap_or_default()
    };
    let archive = hidden("archive", query.archive.as_ref()) + &hidden("refresh", o.filters.refresh.as_ref());
    format!(
        "<form class=filters method=get action=\"\" aria-label=\"filter and sort the mirrors\">{archive}\
         <label>state<br><select name=state>{states}</select></label>\
         <label>tag<br><select name=tag>{tag_options}</select></label>\
         <label>tier<br><select name=tier>{tier_options}</select></label>\
         <label>name contains<br><input name=q size=12 value=\"{}\"></label>\
         <label>sort by<br><select name=sort>{sorts}</select></label>\
         <button type=submit>show</button> <a href=\"?\">all mirrors</a></form>",
        esc(query.q.as_deref().unwrap_or("")),
    )
}

/// One archive: versions, push under way, counts, charts, the grid.
fn archive(o: &Overview<'_>, query: &Query, tiers: &BTreeMap<(&str, &str), usize>, a: &ArchiveStatus) -> String {
    let mut html = String::new();
    let id = url_part(&a.name);
    let _ = write!(
        html,
        "<section aria-labelledby=\"a-{id}\"><h2 id=\"a-{id}\">{}</h2><p>trace version <b>{}</b>{} · last pushed <b>{}</b></p>",
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
    match &o.status.mirrors_error {
        Some(_) => html.push_str("<p class=\"counts failing\">standing unknown: the mirrors' state cannot be read</p>"),
        None => html.push_str(&counts(&a.mirrors)),
    }
    if let Some(r) = &a.rotation {
        let _ = write!(html, "<p class=rotation>key rotation — {}</p>", esc(&r.summary(50)));
    }
    let columns = o.grid.of(&a.name);
    // The charts side by side: the grid below is what the page is for.
    let _ = write!(
        html,
        "<div class=charts>{}<div>{}</div></div>",
        charts::trend(&a.name, columns),
        propagation(a, &o.status.freshness)
    );
    html.push_str(&mirror_grid(o, query, tiers, a, columns));
    html.push_str("</section>");
    html
}

/// "3 failing, 7 behind of 1,000 mirrors": every standing but ok that any mirror has.
fn counts(mirrors: &[MirrorView]) -> String {
    let mut by: BTreeMap<u8, (Health, usize)> = BTreeMap::new();
    for m in mirrors {
        by.entry(rank(m.health)).or_insert((m.health, 0)).1 += 1;
    }
    let total = mirrors.len();
    let bad: Vec<String> = by
        .values()
        .filter(|(h, _)| *h != Health::Ok)
        .map(|(h, n)| format!("<span class={h}>{} {h}</span>", thousands(*n)))
        .collect();
    let ok = by.get(&rank(Health::Ok)).map_or(0, |(_, n)| *n);
    match bad.is_empty() {
        true => format!("<p class=counts>all {} mirrors ok</p>", thousands(total)),
        false => format!(
            "<p class=counts>{} of {} mirrors <small>({} ok)</small></p>",
            bad.join(", "),
            thousands(total),
            thousands(ok)
        ),
    }
}

/// `1,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The grid: a row per mirror (filtered, sorted), its standing, lag and failures, then a cell
/// per recent push, newest right.
fn mirror_grid(
    o: &Overview<'_>,
    query: &Query,
    tiers: &BTreeMap<(&str, &str), usize>,
    a: &ArchiveStatus,
    columns: &[std::sync::Arc<Column>],
) -> String {
    let tags = |m: &MirrorView| -> Vec<&str> {
        let Some(c) = o.config else { return Vec::new() };
        let name = m.state.mirror.as_str();
        match c.mirrors.iter().find(|x| x.name == name) {
            Some(x) => x.tags.iter().map(String::as_str).collect(),
            None => c
                .watched
                .iter()
                .find(|w| w.name == name)
                .map(|w| w.tags.iter().map(String::as_str).collect())
                .unwrap_or_default(),
        }
    };
    let tier = |m: &MirrorView| tiers.get(&(a.name.as_str(), m.state.mirror.as_str())).copied();
    let lag = |m: &MirrorView| m.state.live.as_ref().and_then(|l| l.lag_ms);
    let mut rows: Vec<&MirrorView> = a
        .mirrors
        .iter()
        .filter(|m| query.state.is_none_or(|s| s.keeps(m.health)))
        .filter(|m| query.tag.as_deref().is_none_or(|t| tags(m).contains(&t)))
        .filter(|m| query.tier.is_none_or(|t| tier(m) == Some(t)))
        .filter(|m| query.q.as_deref().is_none_or(|q| m.state.mirror.contains(q)))
        .collect();
    let by_name = |x: &&MirrorView, y: &&MirrorView| x.state.mirror.cmp(&y.state.mirror);
    match query.sort.unwrap_or(Sort::State) {
        Sort::State => rows.sort_by(|x, y| rank(x.health).cmp(&rank(y.health)).then_with(|| by_name(x, y))),
        Sort::Name => rows.sort_by(by_name),
        // Longest first, and a lag that cannot be told (unreachable) before them all.
        Sort::Lag => rows.sort_by(|x, y| {
            let key = |m: &MirrorView| lag(m).map_or(u64::MAX, |l| l);
            key(y).cmp(&key(x)).then_with(|| by_name(x, y))
        }),
        Sort::Failures => rows.sort_by(|x, y| y.state.failures.cmp(&x.state.failures).then_with(|| by_name(x, y))),
    }
    let mut html = String::new();
    if query.narrows() {
        let _ = write!(
            html,
            "<p class=shown>showing {} of {} mirrors</p>",
            thousands(rows.len()),
            thousands(a.mirrors.len())
        );
    }
    let sort_link = |sort: Sort, label: &str| {
        let name = Sort::ALL.iter().find(|(s, _)| *s == sort).map_or("state", |(_, n)| *n);
        let current = query.sort.unwrap_or(Sort::State) == sort;
        format!(
            "<th scope=col{}><a href=\"{}\">{label}</a></th>",
            if current { format!(" aria-sort={}", sort.aria()) } else { String::new() },
            esc(&o.filters.href(Some(name), o.filters.refresh.as_deref()))
        )
    };
    let _ = write!(
        html,
        "<table class=grid id=\"grid-{}\"><caption>{} mirrors: standing now and the last {} push(es), newest right \
         <small>(✓ ok · ✗ failed · ◷ deferred · … pending · – skipped · blank: not in that push)</small></caption><thead><tr>{}{}{}{}",
        url_part(&a.name),
        esc(&a.name),
        columns.len(),
        sort_link(Sort::Name, "mirror"),
        sort_link(Sort::State, "state"),
        sort_link(Sort::Lag, "lag"),
        sort_link(Sort::Failures, "failures"),
    );
    for c in columns {
        let serial = c.serial.as_deref().unwrap_or("?");
        let tail: String = serial.chars().rev().take(2).collect::<Vec<_>>().into_iter().rev().collect();
        let _ = write!(
            html,
            "<th scope=col title=\"{} by {} at {}\">{}</th>",
            esc(serial),
            esc(&c.origin),
            c.started_at,
            esc(&tail)
        );
    }
    html.push_str("</tr></thead><tbody>");
    for m in rows {
        let name = &m.state.mirror;
        let detail = m.detail();
        let title = if detail.is_empty() { String::new() } else { format!(" title=\"{}\"", esc(&detail)) };
        let _ = write!(
            html,
            "<tr data-mirror=\"{n}\" data-health={h}><th scope=row><a href=\"mirror/{u}\">{n}</a></th><td class=\"l {h}\"{title}>{h}<td class=l>{}<td class=l>{}",
            lag(m).map(format_age).unwrap_or_else(|| "-".into()),
            m.state.failures,
            n = esc(name),
            u = url_part(name),
            h = m.health,
        );
        for c in columns {
            match c.outcome(name) {
                None => html.push_str("<td class=n>"),
                Some(r) => {
                    let (shape, class, word) = symbol(r.outcome);
                    match r.outcome {
                        crate::vocab::model::Outcome::Ok => {
                            let _ = write!(html, "<td>{shape}");
                        }
                        _ => {
                            let why = r.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
                            let class_word = r.error_class.map(|c| format!(" ({c})")).unwrap_or_default();
                            let _ = write!(
                                html,
                                "<td class={class} title=\"{word}{}{}\">{shape}",
                                esc(&class_word),
                                esc(&why)
                            );
                        }
                    }
                }
            }
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
    html
}

/// The propagation being followed (live), else the last push's: chart and tiers.
fn propagation(a: &ArchiveStatus, freshness: &[FreshnessRow]) -> String {
    let mut html = String::new();
    if let Some(p) = &a.propagation {
        let elapsed = crate::vocab::units::millis(p.started_at.0.elapsed().unwrap_or_default());
        let deadline = crate::vocab::units::millis(p.deadline.0.duration_since(p.started_at.0).unwrap_or_default());
        let title = format!("Propagation of {} (following, until {})", p.version, p.deadline);
        html.push_str(&charts::propagation(&title, &p.rows, p.followed, Some(deadline), Some(elapsed)));
    } else if let Some(r) = a.last_report.as_ref().filter(|r| !r.propagation.is_empty()) {
        let title = format!("Propagation of {}", r.serial.as_deref().unwrap_or("?"));
        html.push_str(&charts::propagation(&title, &r.propagation, r.followed(), r.propagation_deadline_ms, None));
        html.push_str(&tier_table(r, freshness));
    }
    html
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
    let mut tiers: BTreeMap<usize, Tier> = Default::default();
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
        "<table class=tiers><tr><th scope=col>tier</th><th scope=col>mirrors</th><th scope=col>fed by</th><th scope=col>median live after</th></tr>",
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
        "<h2>Freshness</h2><table class=freshness><tr><th scope=col>archive</th><th scope=col>mirror</th><th scope=col>standing</th>\
         <th scope=col>version</th><th scope=col>behind</th><th scope=col>age</th><th scope=col>since</th><th scope=col>upstream</th><th scope=col>checked</th></tr>",
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
            r.lag_ms.map(format_age).unwrap_or_else(|| "-".into()),
            time(r.since),
            esc(r.upstream.as_deref().unwrap_or("-")),
            time(Some(r.checked_at)),
        );
    }
    html.push_str("</table>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::ledger::{Kind, MirrorState};

    /// What cannot be read is said on both pages, never shown as nothing to show: the push
    /// history (unreadable, or some of its reports), the mirrors' state, the lag history.
    #[test]
    fn what_cannot_be_read_is_said() {
        let view = MirrorView {
            health: Health::Ok,
            since: None,
            kind: Kind::Http,
            far_behind: false,
            state: MirrorState { archive: "debian".into(), mirror: "m".into(), ..MirrorState::default() },
        };
        let archive = ArchiveStatus { name: "debian".into(), mirrors: vec![view], ..ArchiveStatus::default() };
        let mut status = DaemonStatus { archives: vec![archive], ..DaemonStatus::default() };
        let grid = Grid {
            error: Some("cannot read state/reports: Permission denied".into()),
            unreadable: 2,
            ..Grid::default()
        };
        let now = Timestamp(std::time::SystemTime::now());
        let filters = Filters::default();
        let html = overview(&Overview { status: &status, grid: &grid, config: None, filters: &filters, now });
        assert!(html.contains(
            "<p class=failing>the push history cannot be read: cannot read state/reports: Permission denied</p>"
        ));
        assert!(html.contains("<p class=failing>2 of the newest stored reports cannot be read"));
        let lags = Err("cannot read state/freshness-history.json: Permission denied");
        let page = super::super::mirror_page("m", &status, &grid, None, lags, &filters).unwrap();
        assert!(page.contains("the push history cannot be read") && page.contains("2 of the newest stored reports"));
        assert!(page.contains(
            "<p class=failing>no lag chart: cannot read state/freshness-history.json: Permission denied</p>"
        ));

        // The ledger unreadable: no mirror to count, which is not "all 0 mirrors ok".
        status.archives[0].mirrors.clear();
        status.mirrors_error = Some("cannot read state/mirrors.json: Permission denied".into());
        let html =
            overview(&Overview { status: &status, grid: &Grid::default(), config: None, filters: &filters, now });
        assert!(html.contains("standing unknown: the mirrors' state cannot be read") && !html.contains("mirrors ok"));
    }

    /// A query is taken key by key: a repeated key or an overlong value is named, never a 400.
    #[test]
    fn a_query_takes_first_values_and_names_the_rest() {
        let long = "x".repeat(300);
        let f = Filters::parse(Some(&format!("tag=eu&tag=us&q={long}&state=failing&colour=red&refresh=0")));
        assert_eq!((f.tag.as_deref(), f.q.as_deref(), f.state.as_deref()), (Some("eu"), None, Some("failing")));
        assert_eq!(f.ignored, ["tag `us` (given twice)", "q longer than 256 characters", "`colour`"]);
        assert!(!f.refreshes());
        assert_eq!(f.href(Some("name"), None), "?state=failing&tag=eu&sort=name");
        let html = shell("t", "", &f);
        assert!(!html.contains("http-equiv=refresh") && !html.contains("<script>") && html.contains("updates paused"));
        assert!(html.contains("<a href=\"?state=failing&amp;tag=eu\">resume</a>"), "{html}");
        let other = Filters::parse(Some("refresh=5"));
        assert!(other.refreshes() && other.refresh.is_none(), "{other:?}");
        assert_eq!(other.ignored, ["refresh `5` (only 0, to pause)"]);
        assert!(shell("t", "", &Filters::default()).contains("<a href=\"?refresh=0\">pause updates</a>"));
    }
}
