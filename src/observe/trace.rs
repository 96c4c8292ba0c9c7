//! The trace files a Debian mirror publishes under `project/trace/`, as ftpsync writes them: the
//! upstream's `master` (its `Archive serial:` is the version the mirror serves, because ftpsync
//! copies it only after a complete sync), the mirror's own trace (`Date:`, `Date-Started:`,
//! `Upstream-mirror:`, `Total time spent in rsync:`, …) and `_hierarchy` (one line per tier from
//! the primary to the mirror). Parsing only; fetching them is the prober's.

use std::time::{Duration, SystemTime};

/// One trace file: its first line (`date -u` output in ftpsync's, free text in others) and its
/// `Key: value` fields in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// The first line, when it is not a field.
    pub first_line: Option<String>,
    /// `Key: value` lines, in file order.
    pub fields: Vec<(String, String)>,
}

impl Trace {
    /// Parses `text`; lines that are neither the first line nor `Key: value` are ignored. A trace
    /// comes from a mirror, so what is kept is bounded: at most [`MAX_FIELDS`] fields, each value
    /// cut to [`MAX_VALUE`] characters, control characters replaced by `?` (nothing a mirror
    /// writes reaches a terminal or a page as it is).
    pub fn parse(text: &str) -> Trace {
        let mut trace = Trace::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end();
            match line.split_once(':') {
                Some((key, value)) if is_field_name(key) && trace.fields.len() < MAX_FIELDS => {
                    trace.fields.push((key.to_string(), clean(value.trim())));
                }
                _ if i == 0 && !line.is_empty() => trace.first_line = Some(clean(line)),
                _ => {}
            }
        }
        trace
    }

    /// The first value of `key` (case-insensitive, as in mail headers).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    /// `Archive serial:` — the version, in a `master` trace.
    pub fn serial(&self) -> Option<&str> {
        self.get("Archive serial").filter(|s| !s.is_empty() && *s != "unknown")
    }

    /// `Date:` (RFC 2822), when the trace was written: the end of the mirror's sync.
    pub fn date(&self) -> Option<SystemTime> {
        self.get("Date").and_then(rfc2822)
    }

    /// `Date-Started:` (RFC 2822), when the mirror's sync started.
    pub fn date_started(&self) -> Option<SystemTime> {
        self.get("Date-Started").and_then(rfc2822)
    }

    /// How long the mirror's last sync took: `Date:` − `Date-Started:`, else the rsync time.
    pub fn sync_duration(&self) -> Option<Duration> {
        match (self.date_started(), self.date()) {
            (Some(start), Some(end)) => end.duration_since(start).ok(),
            _ => self.get("Total time spent in rsync").and_then(|s| s.parse().ok()).map(Duration::from_secs),
        }
    }

    /// `Upstream-mirror:` — the host it syncs from.
    pub fn upstream(&self) -> Option<&str> {
        self.get("Upstream-mirror").filter(|s| !s.is_empty() && *s != "unknown")
    }
}

/// The most fields kept of one trace (ftpsync writes about 20).
pub const MAX_FIELDS: usize = 64;
/// The longest value kept, in characters.
pub const MAX_VALUE: usize = 256;
/// The most tiers kept of a `_hierarchy`.
pub const MAX_HOPS: usize = 16;

/// `text` cut to [`MAX_VALUE`] characters, control characters replaced by `?`.
pub fn clean(text: &str) -> String {
    text.chars().take(MAX_VALUE).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// The start of `text` (at most 40 characters, cleaned) when it is markup — HTML or XML, its first
/// non-blank character `<` — or holds a NUL byte: a trace file is plain text whose first line is
/// a date or a version, so such a body is a web page (or binary), never a trace.
pub fn markup(text: &str) -> Option<String> {
    let start = text.trim_start();
    if !start.starts_with('<') && !text.contains('\0') {
        return None;
    }
    let first = start.lines().next().unwrap_or("");
    Some(clean(&first.chars().take(40).collect::<String>()))
}

/// A header-like field name: letters, digits, `-`, `_` and spaces (`Archive serial`), beginning
/// and ending with a letter (so `Sun Nov 29 13:51:46 UTC 2026`, a first line, is not one).
fn is_field_name(key: &str) -> bool {
    key.len() <= 64
        && key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key.ends_with(|c: char| c.is_ascii_alphabetic())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ' '))
}

/// An RFC 2822 date (`Sun, 29 Nov 2026 13:51:46 +0000`, as `date -R` writes it).
pub fn rfc2822(text: &str) -> Option<SystemTime> {
    let parsed = chrono::DateTime::parse_from_rfc2822(text.trim()).ok()?;
    let secs = u64::try_from(parsed.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// One line of `_hierarchy`: a tier between the primary and the mirror that published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The name of the tier's own trace file.
    pub tracefile: String,
    /// Its `MIRRORNAME`.
    pub mirror: String,
    /// The host that ran it (`TRACEHOST`).
    pub host: String,
    /// Where it synced from (`RSYNC_HOST`).
    pub upstream: String,
}

/// `_hierarchy`: the tiers from the one nearest the primary to the mirror that published it.
/// Lines that do not have four words are skipped; of a longer chain the last [`MAX_HOPS`] are
/// kept (the mirror itself is the last), each word [`clean`]ed.
pub fn parse_hierarchy(text: &str) -> Vec<Hop> {
    let mut hops: Vec<Hop> = text
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[..] {
                [tracefile, mirror, host, upstream] => Some(Hop {
                    tracefile: clean(tracefile),
                    mirror: clean(mirror),
                    host: clean(host),
                    upstream: clean(upstream),
                }),
                _ => None,
            }
        })
        .collect();
    let extra = hops.len().saturating_sub(MAX_HOPS);
    hops.drain(..extra);
    hops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_first_line_and_dates() {
        let t = Trace::parse(
            "Sun Nov 29 13:51:46 UTC 2026\nDate: Sun, 29 Nov 2026 13:51:46 +0000\n\
             Date-Started: Sun, 29 Nov 2026 13:50:00 +0000\nArchive serial: 2026112901\n\
             Upstream-mirror: ftp-master.example\nTotal time spent in rsync: 99\nnot a field line\n",
        );
        assert_eq!(t.first_line.as_deref(), Some("Sun Nov 29 13:51:46 UTC 2026"));
        assert_eq!(t.serial(), Some("2026112901"));
        assert_eq!(t.upstream(), Some("ftp-master.example"));
        assert_eq!(t.sync_duration(), Some(Duration::from_secs(106)));
        assert_eq!(t.date().unwrap().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 1_795_960_306);
        assert_eq!(Trace::parse("Archive serial: unknown\n").serial(), None);
        assert_eq!(markup("\n  <!DOCTYPE html>\n<html><head>"), Some("<!DOCTYPE html>".into()));
        assert_eq!(markup("<?xml version=\"1.0\"?><Error>"), Some("<?xml version=\"1.0\"?><Error>".into()));
        assert!(markup("bin\0ary").is_some());
        assert_eq!(markup("Sun Nov 29 13:51:46 UTC 2026\nArchive serial: 2026112901\n"), None);
        let rsync_only = Trace::parse("Total time spent in rsync: 12\n");
        assert_eq!(rsync_only.sync_duration(), Some(Duration::from_secs(12)));
    }

    /// Files written by the real ftpsync (tests/data/ftpsync/make.sh says how).
    fn fixture(path: &str) -> String {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ftpsync");
        std::fs::read_to_string(root.join(path)).unwrap()
    }

    #[test]
    fn traces_written_by_the_real_ftpsync_two_tiers_down() {
        let master = Trace::parse(&fixture("tier2/master"));
        assert_eq!(master.serial(), Some("2026112901"));
        let own = Trace::parse(&fixture("tier2/tier2.example.net"));
        assert_eq!(own.first_line.as_deref(), Some("Sun Nov 29 14:21:31 UTC 2026"));
        assert_eq!(own.serial(), Some("2026112901"));
        assert_eq!(own.upstream(), Some("tier1.example.net"));
        assert_eq!(own.get("Running on host"), Some("tier2.example.net"));
        assert_eq!(own.sync_duration(), Some(Duration::from_secs(4)));
        let tier1 = Trace::parse(&fixture("tier1/tier1.example.net"));
        assert_eq!(tier1.upstream(), Some("primary.example.net"));
        let hops = parse_hierarchy(&fixture("tier2/_hierarchy"));
        let chain: Vec<(&str, &str)> = hops.iter().map(|h| (h.mirror.as_str(), h.upstream.as_str())).collect();
        assert_eq!(chain, [("tier1.example.net", "primary.example.net"), ("tier2.example.net", "tier1.example.net")]);
        assert_eq!(parse_hierarchy(&fixture("tier1/_hierarchy")).len(), 1);
    }

    #[test]
    fn what_a_hostile_mirror_writes_is_bounded_and_printable() {
        let long = "9".repeat(10_000);
        let t = Trace::parse(&format!("Archive serial: {long}\nUpstream-mirror: evil\u{1b}[2Jhost\n"));
        assert_eq!(t.serial().map(str::len), Some(MAX_VALUE));
        assert_eq!(t.upstream(), Some("evil?[2Jhost"));
        let many: String = (0..1000).map(|i| format!("F{i}x: v\n")).collect();
        assert_eq!(Trace::parse(&many).fields.len(), MAX_FIELDS);
        let chain: String = (0..1000).map(|i| format!("m{i} m{i} h{i} u{i}\n")).collect();
        let hops = parse_hierarchy(&chain);
        assert_eq!((hops.len(), hops.last().unwrap().mirror.as_str()), (MAX_HOPS, "m999"));
    }

    #[test]
    fn hierarchy_lines_of_four_words() {
        let hops = parse_hierarchy("a.example a.example host-a primary\n\nbroken line\nb b host-b a.example\n");
        assert_eq!(hops.iter().map(|h| h.mirror.as_str()).collect::<Vec<_>>(), ["a.example", "b"]);
        assert_eq!(hops[1].upstream, "a.example");
    }
}
