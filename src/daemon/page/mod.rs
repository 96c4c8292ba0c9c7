//! The daemon's HTML pages: the overview (`/`: per archive the counts, the propagation trend, a
//! grid of every mirror's state now and its last [`grid::PUSHES`] pushes, filters and sorting
//! that live in the URL) and one mirror's page (`/mirror/NAME`: its configuration, its recent
//! triggers, its lag over time, its upstream chain).
//!
//! Server-rendered HTML with inline SVG and CSS: no external resources (the page works on an
//! air-gapped primary) and no framework. Without JavaScript it reloads itself; with it, a few
//! lines replace the page's `<main>` in place and say so, visibly, when the daemon stops
//! answering. Every state is a word or a shape as well as a colour.

pub mod grid;

mod charts;
mod mirror;
mod overview;

pub use mirror::mirror_page;
pub use overview::{Overview, overview, render};

use crate::push::ledger::Health;
use crate::vocab::model::Outcome;

/// Seconds between refreshes of a page.
pub const REFRESH_SECS: u64 = 15;

/// The longest query value taken (a name, a tag); longer ones are named and ignored.
const MAX_VALUE: usize = 256;

/// The overview's query: filters and sorting, as given (unknown values are named on the page,
/// never an error: a link from an old bookmark still shows something).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// `failing`, `behind`, … (a [`Health`]), or `problems`: any but ok, unknown and disabled.
    pub state: Option<String>,
    /// Mirrors with this tag.
    pub tag: Option<String>,
    /// Mirrors this many hops from the primary (from their `_hierarchy`).
    pub tier: Option<String>,
    /// Mirrors whose name contains this.
    pub q: Option<String>,
    /// One archive only.
    pub archive: Option<String>,
    /// `state` (the default: worst first), `name`, `lag` (longest first), `failures`.
    pub sort: Option<String>,
    /// `0`: no automatic update of the page.
    pub refresh: Option<String>,
    /// What the query held that is not taken: a repeated key, a value too long, an unknown key.
    pub ignored: Vec<String>,
}

impl Filters {
    /// The filters of a raw query string (`state=failing&tag=eu`): each key's first value; the
    /// rest named in [`Filters::ignored`].
    pub fn parse(query: Option<&str>) -> Filters {
        let mut f = Filters::default();
        let Some(query) = query.filter(|q| !q.is_empty()) else { return f };
        let Ok(url) = reqwest::Url::parse(&format!("http://page/?{query}")) else {
            f.ignored.push("a query that is not one".into());
            return f;
        };
        for (key, value) in url.query_pairs() {
            let slot = match key.as_ref() {
                "state" => &mut f.state,
                "tag" => &mut f.tag,
                "tier" => &mut f.tier,
                "q" => &mut f.q,
                "archive" => &mut f.archive,
                "sort" => &mut f.sort,
                "refresh" => &mut f.refresh,
                other => {
                    f.ignored.push(format!("`{}`", shorten(other)));
                    continue;
                }
            };
            if value.chars().count() > MAX_VALUE {
                f.ignored.push(format!("{key} longer than {MAX_VALUE} characters"));
            } else if slot.is_some() {
                f.ignored.push(format!("{key} `{}` (given twice)", shorten(&value)));
            } else {
                *slot = Some(value.into_owned());
            }
        }
        if let Some(r) = f.refresh.take_if(|r| r != "0") {
            f.ignored.push(format!("refresh `{}` (only 0, to pause)", shorten(&r)));
        }
        f
    }

    /// Whether the page updates itself.
    fn refreshes(&self) -> bool {
        self.refresh.as_deref() != Some("0")
    }

    /// The query of this view with `sort` and `refresh` replaced (`None`: left out), encoded.
    fn href(&self, sort: Option<&str>, refresh: Option<&str>) -> String {
        let given = [
            ("archive", self.archive.as_deref()),
            ("state", self.state.as_deref()),
            ("tag", self.tag.as_deref()),
            ("tier", self.tier.as_deref()),
            ("q", self.q.as_deref()),
            ("sort", sort),
            ("refresh", refresh),
        ];
        let parts: Vec<String> = given
            .iter()
            .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| format!("{k}={}", url_part(v))))
            .collect();
        format!("?{}", parts.join("&"))
    }
}

/// At most 40 characters of `s`, for naming it.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// What the state filter keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateFilter {
    Is(Health),
    Problems,
}

/// How the grid is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    State,
    Name,
    Lag,
    Failures,
}

impl Sort {
    const ALL: [(Sort, &'static str); 4] =
        [(Sort::State, "state"), (Sort::Name, "name"), (Sort::Lag, "lag"), (Sort::Failures, "failures")];

    /// Its direction, as `aria-sort` says it.
    fn aria(self) -> &'static str {
        match self {
            Sort::Name => "ascending",
            Sort::Lag | Sort::Failures => "descending",
            // Worst first: an order of its own.
            Sort::State => "other",
        }
    }
}

/// [`Filters`] understood, with what was not.
#[derive(Debug, Clone, Default)]
struct Query {
    state: Option<StateFilter>,
    tag: Option<String>,
    tier: Option<usize>,
    q: Option<String>,
    archive: Option<String>,
    sort: Option<Sort>,
    /// Values that mean nothing, named on the page.
    ignored: Vec<String>,
}

impl Query {
    fn of(f: &Filters) -> Query {
        let mut ignored = f.ignored.clone();
        let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
        let state = given(&f.state).and_then(|s| match s.as_str() {
            "problems" => Some(StateFilter::Problems),
            _ => match Health::ALL.iter().find(|h| h.to_string() == s) {
                Some(h) => Some(StateFilter::Is(*h)),
                None => {
                    ignored.push(format!("state `{s}`"));
                    None
                }
            },
        });
        let tier = given(&f.tier).and_then(|t| match t.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => {
                ignored.push(format!("tier `{t}`"));
                None
            }
        });
        let sort = given(&f.sort).and_then(|s| match Sort::ALL.iter().find(|(_, name)| *name == s) {
            Some((sort, _)) => Some(*sort),
            None => {
                ignored.push(format!("sort `{s}`"));
                None
            }
        });
        Query { state, tag: given(&f.tag), tier, q: given(&f.q), archive: given(&f.archive), sort, ignored }
    }

    /// Whether any filter narrows the grid.
    fn narrows(&self) -> bool {
        self.state.is_some() || self.tag.is_some() || self.tier.is_some() || self.q.is_some()
    }
}

impl StateFilter {
    fn keeps(self, h: Health) -> bool {
        match self {
            StateFilter::Is(want) => h == want,
            StateFilter::Problems => !matches!(h, Health::Ok | Health::Unknown | Health::Disabled),
        }
    }
}

/// How bad a standing is, worst first, for sorting by state.
fn rank(h: Health) -> u8 {
    match h {
        Health::Failing => 0,
        Health::Unreachable => 1,
        Health::Behind => 2,
        Health::Pending => 3,
        Health::Deferred => 4,
        Health::Unknown => 5,
        Health::Disabled => 6,
        Health::Ok => 7,
    }
}

/// A trigger's outcome as the grid shows it: a shape, a CSS class, the word.
fn symbol(outcome: Outcome) -> (&'static str, &'static str, &'static str) {
    match outcome {
        Outcome::Ok => ("✓", "o", "ok"),
        Outcome::Failed => ("✗", "f", "failed"),
        Outcome::Deferred => ("◷", "d", "deferred"),
        Outcome::Pending => ("…", "p", "pending"),
        Outcome::Skipped => ("–", "s", "skipped"),
        Outcome::Planned => ("○", "s", "planned"),
    }
}

/// HTML-escaped text (also safe in a quoted attribute).
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `s` percent-encoded for a URL's path segment or query value.
fn url_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

const STYLE: &str = concat!(
    ":root{color-scheme:light dark;--fg:#222;--bg:#fff;--muted:#666;--line:#ddd;--head:#f4f4f4;",
    "--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--link:#0550ae}",
    "@media (prefers-color-scheme:dark){:root{--fg:#ddd;--bg:#111;--muted:#999;--line:#333;--head:#1c1c1c;",
    "--ok:#3fb950;--bad:#ff7b72;--warn:#d29922;--link:#79c0ff}}",
    "body{font:14px system-ui,sans-serif;margin:1.5em;color:var(--fg);background:var(--bg)}",
    "a{color:var(--link)}small,.muted{color:var(--muted)}",
    "table{border-collapse:collapse;margin:.5em 0 2em}td,th{padding:.2em .6em;border-bottom:1px solid var(--line);text-align:left}",
    "thead th,tr:first-child>th{background:var(--head)}caption{text-align:left;font-weight:bold;padding:.3em 0}",
    ".ok,.up-to-date{color:var(--ok)}.failed,.failing,.behind,.unreachable{color:var(--bad);font-weight:bold}",
    ".deferred,.pending,.syncing{color:var(--warn)}.skipped,.planned,.unknown,.disabled{color:var(--muted)}",
    "progress{width:20em}svg text{font:11px system-ui,sans-serif;fill:var(--muted)}",
    ".grid td{padding:0 .15em;text-align:center;font-size:12px}.grid td.l{text-align:left;font-size:14px;padding:0 .6em}",
    ".grid th[scope=row]{font-weight:normal}.grid thead th{font-size:11px;padding:0 .15em}",
    ".grid td:not([class]){color:var(--ok)}.grid td.f{color:var(--bad);font-weight:bold}.grid td.d,.grid td.p{color:var(--warn)}",
    ".grid td.s,.grid td.n{color:var(--muted)}",
    ".filters{margin:1em 0;display:flex;gap:1em;flex-wrap:wrap;align-items:end}.counts{font-size:15px}",
    ".trend polyline,.lag polyline{stroke:var(--fg);stroke-width:1.5}.trend circle,.trend rect,.trend path{fill:var(--fg)}",
    ".lag .unknown{stroke:var(--bad);stroke-width:2}.lag .limit{stroke:var(--bad)}",
    ".charts{display:flex;flex-wrap:wrap;gap:0 3em;align-items:flex-start}.charts figure{margin:0}",
    ".legend{list-style:none;padding:0;display:flex;gap:1.5em;margin:.2em 0 1em}",
    "#stale{background:var(--bad);color:var(--bg);padding:.4em .8em;font-weight:bold}",
    "dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{color:var(--muted)}dd{margin:0}",
);

/// Replaces the page's `<main>` with the daemon's newer one every [`REFRESH_SECS`]: one request
/// at a time, each given that long; not while a control of the page has the focus (the operator
/// is typing or choosing). When the daemon does not answer, or answers with an error, a banner
/// says since when the page is stale, instead of old data standing as now.
const SCRIPT: &str = concat!(
    "(()=>{const s=document.getElementById('stale');let ok=Date.now(),busy=false;",
    "const stale=why=>{s.hidden=false;s.textContent='Not updated for '+Math.round((Date.now()-ok)/1000)+' s: '+why+'.';};",
    "setInterval(async()=>{if(document.hidden)return;",
    "if(busy){stale('the daemon does not answer');return;}",
    "const f=document.activeElement;if(f&&f.closest('main')&&f.matches('input,select,textarea,button'))return;",
    "busy=true;try{",
    "const r=await fetch(location.href,{cache:'no-store',signal:AbortSignal.timeout(REFRESH)});",
    "if(!r.ok){stale('the daemon answered HTTP '+r.status);return;}",
    "const d=new DOMParser().parseFromString(await r.text(),'text/html');",
    "document.querySelector('main').replaceWith(d.querySelector('main'));ok=Date.now();s.hidden=true;",
    "}catch(e){stale('the daemon does not answer');}finally{busy=false;}",
    "},REFRESH)})();",
);

/// A whole page: `title`, then `body` as its `<main>`; it updates itself unless the view's
/// `filters` say `refresh=0`, and links to pausing or resuming that (the view kept).
fn shell(title: &str, body: &str, filters: &Filters) -> String {
    let sort = filters.sort.as_deref();
    let (meta, script, switch) = match filters.refreshes() {
        true => (
            format!("<noscript><meta http-equiv=refresh content={REFRESH_SECS}></noscript>"),
            format!("<script>{}</script>", SCRIPT.replace("REFRESH", &(REFRESH_SECS * 1000).to_string())),
            format!(
                "updated every {REFRESH_SECS} s · <a href=\"{}\">pause updates</a>",
                esc(&filters.href(sort, Some("0")))
            ),
        ),
        false => (
            String::new(),
            String::new(),
            format!("updates paused · <a href=\"{}\">resume</a>", esc(&filters.href(sort, None))),
        ),
    };
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         {meta}<title>{}</title><style>{STYLE}</style></head>\
         <body><p id=stale role=alert hidden></p><main>{body}</main><p><small>{switch}</small></p>{script}</body></html>\n",
        esc(title),
    )
}

/// What of the push history could not be read, in red; empty when all could.
fn history_errors(grid: &grid::Grid) -> String {
    let mut html = String::new();
    if let Some(why) = &grid.error {
        html.push_str(&format!("<p class=failing>the push history cannot be read: {}</p>", esc(why)));
    }
    if grid.unreadable > 0 {
        html.push_str(&format!(
            "<p class=failing>{} of the newest stored reports cannot be read: their pushes are missing here \
             (the daemon's log and <code>state_dir/reports/</code> tell more)</p>",
            grid.unreadable
        ));
    }
    html
}
