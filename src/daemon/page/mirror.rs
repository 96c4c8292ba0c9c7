//! One mirror's page (`/mirror/NAME`): how it is reached and as whom (transport, keys, source
//! address, host key), then per archive it carries: its standing (the same view as everywhere),
//! its upstream chain, its lag over the recent sweeps, and every recent trigger with its
//! attempts, class and error.

use std::fmt::Write as _;

use super::grid::Grid;
use super::{charts, esc, shell, symbol};
use crate::config::{Config, Transport};
use crate::daemon::status::DaemonStatus;
use crate::observe::freshness::format_age;
use crate::observe::lag::LagHistory;
use crate::vocab::units::format_ms;

/// The page of mirror `name`, or `None` when no archive and no configured mirror knows it.
pub fn mirror_page(
    name: &str,
    status: &DaemonStatus,
    grid: &Grid,
    config: Option<&Config>,
    lags: Result<&LagHistory, &str>,
    filters: &super::Filters,
) -> Option<String> {
    let views: Vec<_> = status
        .archives
        .iter()
        .filter_map(|a| a.mirrors.iter().find(|m| m.state.mirror == name).map(|m| (a, m)))
        .collect();
    let configured = config.and_then(|c| c.mirrors.iter().find(|m| m.name == name));
    let watched = config.and_then(|c| c.watched.iter().find(|w| w.name == name));
    if views.is_empty() && configured.is_none() && watched.is_none() {
        return None;
    }
    let mut html = format!("<p><a href=\"../\">← all mirrors</a></p><h1>{}</h1>", esc(name));
    html.push_str(&super::history_errors(grid));
    if let Some(why) = &status.mirrors_error {
        let _ = write!(html, "<p class=failing>the mirrors' state cannot be read: {}</p>", esc(why));
    }
    if let Err(why) = lags {
        let _ = write!(html, "<p class=failing>no lag chart: {}</p>", esc(why));
    }
    let no_lags = LagHistory::default();
    let lags = lags.as_ref().map_or(&no_lags, |l| l);
    html.push_str("<h2>How it is reached</h2><dl>");
    let mut fact = |term: &str, value: String| {
        let _ = write!(html, "<dt>{}</dt><dd>{value}</dd>", esc(term));
    };
    match (configured, watched) {
        (Some(m), _) => {
            let transport = match &m.transport {
                Transport::Ssh(_) => "SSH (ftpsync)",
                Transport::Http(_) => "HTTP",
                Transport::Mqtt(_) => "MQTT broadcast",
            };
            fact("transport", format!("{transport}: <code>{}</code>", esc(&m.transport.display_target())));
            if let Transport::Ssh(ssh) = &m.transport {
                let host_key = match ssh.host_key.as_deref().map(crate::wire::keys::parse_public_key) {
                    Some(Ok(key)) => {
                        format!("<code>{}</code> (pinned in its file)", esc(&crate::wire::keys::fingerprint(&key)))
                    }
                    Some(Err(e)) => format!("<span class=failing>unreadable pinned key: {}</span>", esc(&e)),
                    None => "checked against known_hosts".into(),
                };
                fact("host key", host_key);
            }
            fact("type", esc(&m.kind.to_string()));
            fact("enabled", if m.enabled { "yes".into() } else { "<span class=disabled>no</span>".into() });
            fact("rate limit", m.rate_limit.map(|r| r.to_string()).unwrap_or_else(|| "none".into()));
            fact("timeout, retries", format!("{}, {}", humantime::format_duration(m.timeout), m.retries));
            if !m.tags.is_empty() {
                fact("tags", esc(&m.tags.join(", ")));
            }
            if let Some(check) = &m.check {
                fact("checked at", format!("<code>{}</code>", esc(check.as_str())));
            }
            for (archive, sender) in &m.senders {
                let mut who = Vec::new();
                if let Some(fp) = &sender.fingerprint {
                    who.push(format!("key <code>{}</code>", esc(fp)));
                }
                if let Some(fp) = &sender.next_fingerprint {
                    who.push(format!("next key <code>{}</code>", esc(fp)));
                }
                if let Some(addr) = sender.source_address {
                    who.push(format!("from {addr}"));
                }
                if !who.is_empty() {
                    fact(&format!("sent as, for {archive}"), who.join(", "));
                }
            }
        }
        (None, Some(w)) => {
            fact("transport", "none: check-only, never triggered".into());
            fact("checked at", format!("<code>{}</code>", esc(w.check.as_str())));
            if !w.tags.is_empty() {
                fact("tags", esc(&w.tags.join(", ")));
            }
        }
        (None, None) => fact("configuration", "<span class=failing>no longer configured</span>".into()),
    }
    html.push_str("</dl>");
    for (a, view) in views {
        let s = &view.state;
        let _ = write!(
            html,
            "<section aria-labelledby=\"a-{n}\"><h2 id=\"a-{n}\">{n}</h2><p class=standing>standing: <b class={h}>{h}</b>{}{}</p>",
            view.since.map(|t| format!(" since {t}")).unwrap_or_default(),
            esc(&match view.detail() {
                d if d.is_empty() => String::new(),
                d => format!(" — {d}"),
            }),
            n = esc(&a.name),
            h = view.health,
        );
        html.push_str("<dl>");
        let mut fact = |term: &str, value: String| {
            let _ = write!(html, "<dt>{}</dt><dd>{value}</dd>", esc(term));
        };
        fact(
            "last delivered",
            match (&s.delivered, s.last_ok) {
                (Some(v), Some(at)) => format!("{} at {at}", esc(v)),
                _ => "never".into(),
            },
        );
        if let Some(key) = &s.key {
            fact("key it accepted", format!("<code>{}</code>", esc(key)));
        }
        if let Some(live) = &s.live {
            fact(
                "serves",
                format!(
                    "{}, lag {} (read {})",
                    esc(live.version.as_deref().unwrap_or("?")),
                    live.lag_ms.map(format_age).unwrap_or_else(|| "unknown".into()),
                    live.checked_at
                ),
            );
        }
        let chain = status.freshness.iter().find(|r| r.archive == a.name && r.mirror == name).map(|r| &r.chain);
        if let Some(chain) = chain.filter(|c| !c.is_empty()) {
            let hops: Vec<String> = chain.iter().map(|h| esc(h)).collect();
            fact("upstream chain", format!("primary → {} <small>(from its _hierarchy)</small>", hops.join(" → ")));
        }
        html.push_str("</dl>");
        let samples = lags.of(&a.name, name);
        if !samples.is_empty() {
            let max_lag = config.and_then(|c| c.archives.get(&a.name)).map(|x| crate::vocab::units::millis(x.max_lag));
            let _ =
                write!(html, "<h3>Lag over the last {} sweeps</h3>{}", samples.len(), charts::lag(samples, max_lag));
        }
        html.push_str(&triggers(grid, &a.name, name));
        html.push_str("</section>");
    }
    Some(shell(&format!("{name} — pushmirror"), &html, filters))
}

/// Every recent trigger of `mirror` for `archive`, newest first.
fn triggers(grid: &Grid, archive: &str, mirror: &str) -> String {
    let mut rows = String::new();
    let mut n = 0;
    for c in grid.of(archive).iter().rev() {
        for r in c.rows.get(mirror).into_iter().flatten() {
            n += 1;
            let (shape, _, word) = symbol(r.outcome);
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class={word}>{shape} {word}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(c.serial.as_deref().unwrap_or("?")),
                c.started_at,
                esc(&c.origin),
                r.stage,
                r.attempts,
                format_ms(r.duration_ms),
                r.error_class.map(|c| c.to_string()).unwrap_or_default(),
                esc(r.error.as_deref().unwrap_or("")),
            );
        }
    }
    if n == 0 {
        return "<p class=muted>no trigger in the stored reports</p>".into();
    }
    format!(
        "<table class=triggers><caption>Its last {n} triggers, newest first</caption><thead><tr><th scope=col>version</th>\
         <th scope=col>push started</th><th scope=col>by</th><th scope=col>stage</th><th scope=col>outcome</th>\
         <th scope=col>attempts</th><th scope=col>took</th><th scope=col>class</th><th scope=col>error</th></tr></thead>\
         <tbody>{rows}</tbody></table>"
    )
}
