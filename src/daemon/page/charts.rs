//! The page's charts, drawn here as inline SVG (no scripts, no external resources). Each has a
//! text equivalent in its `aria-label` and its lines differ by dash pattern and marker, not by
//! colour alone.

use std::fmt::Write as _;

use super::esc;
use super::grid::Column;
use crate::observe::lag::Sample;
use crate::push::report::Propagated;
use crate::vocab::units::format_ms;

const W: f64 = 480.0;
const H: f64 = 160.0;
const PAD: f64 = 36.0;

/// The share of followed mirrors live over time since the push started: a step line, held at
/// its final level to the end of the chart, with that level written out. The x axis ends at the
/// last mirror seen live, or now while following; the deadline is drawn where it falls on the
/// chart, else named.
pub(super) fn propagation(
    title: &str,
    rows: &[Propagated],
    followed: usize,
    deadline: Option<u64>,
    now: Option<u64>,
) -> String {
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

/// The propagation trend of `columns` (oldest first): per followed push the time until 50 %,
/// 90 % and all of its followed mirrors were live. A share never reached leaves a gap and is
/// counted in the caption. Empty when no push was followed.
pub(super) fn trend(archive: &str, columns: &[std::sync::Arc<Column>]) -> String {
    let points: Vec<_> = columns.iter().filter_map(|c| c.trend.map(|t| (c, t))).collect();
    let Some((last, last_trend)) = points.last() else { return String::new() };
    let n = points.len();
    let top = points.iter().flat_map(|(_, t)| [t.p50, t.p90, t.p100]).flatten().max().unwrap_or(0).max(1000);
    let x = |i: usize| if n == 1 { W / 2.0 } else { PAD + (W - 2.0 * PAD) * i as f64 / (n - 1) as f64 };
    let y = |ms: u64| H - PAD + (2.0 * PAD - H) * ms as f64 / top as f64;
    // (share, its time, dash pattern, marker): told apart without colour.
    type Series = (&'static str, fn(&super::grid::Trend) -> Option<u64>, &'static str, &'static str);
    let series: [Series; 3] = [
        ("50%", |t| t.p50, "", "circle"),
        ("90%", |t| t.p90, "6 3", "square"),
        ("100%", |t| t.p100, "2 3", "triangle"),
    ];
    let mut svg = String::new();
    let mut legend = String::new();
    for (k, (label, get, dash, marker)) in series.iter().enumerate() {
        // A gap where the share was not reached: one polyline per unbroken run.
        let mut run = String::new();
        let mut marks = String::new();
        for (i, (_, t)) in points.iter().enumerate() {
            match get(t) {
                Some(ms) => {
                    let (px, py) = (x(i), y(ms));
                    let _ = write!(run, "{px:.1},{py:.1} ");
                    marks.push_str(&mark(marker, px, py));
                }
                None if !run.is_empty() => {
                    let _ = write!(
                        svg,
                        "<polyline class=s{k} fill=none stroke-dasharray=\"{dash}\" points=\"{}\" />",
                        run.trim_end()
                    );
                    run.clear();
                }
                None => {}
            }
        }
        if !run.is_empty() {
            let _ = write!(
                svg,
                "<polyline class=s{k} fill=none stroke-dasharray=\"{dash}\" points=\"{}\" />",
                run.trim_end()
            );
        }
        svg.push_str(&marks);
        let missed = points.iter().filter(|(_, t)| get(t).is_none()).count();
        let missed = if missed > 0 { format!(" (not reached in {missed})") } else { String::new() };
        let _ = write!(legend, "<li><span class=\"key s{k}\">{}</span> {label} live{missed}</li>", mark_text(marker));
    }
    let said = |v: Option<u64>| v.map(format_ms).unwrap_or_else(|| "never".into());
    let label = format!(
        "time until 50, 90 and 100 percent of followed mirrors were live, last {n} followed pushes; the last ({}): {}, {}, {}",
        last.serial.as_deref().unwrap_or("?"),
        said(last_trend.p50),
        said(last_trend.p90),
        said(last_trend.p100),
    );
    format!(
        "<figure class=trend><figcaption>Propagation trend of {} <small>(last {n} followed pushes, oldest left)</small></figcaption>\
         <svg role=img aria-label=\"{}\" width={W} height={H} viewBox=\"0 0 {W} {H}\">\
         <line x1={PAD} y1={b} x2={r} y2={b} stroke=#999 /><line x1={PAD} y1={PAD} x2={PAD} y2={b} stroke=#999 />\
         {svg}<text x=2 y={t}>{}</text><text x=24 y={b}>0</text>\
         <text x={PAD} y={l}>{}</text><text x={rl} y={l}>{}</text></svg><ul class=legend>{legend}</ul></figure>",
        esc(archive),
        esc(&label),
        esc(&format_ms(top)),
        esc(points[0].0.serial.as_deref().unwrap_or("?")),
        esc(last.serial.as_deref().unwrap_or("?")),
        b = H - PAD,
        r = W - PAD,
        t = PAD + 4.0,
        l = H - PAD + 16.0,
        rl = W - PAD - 60.0,
    )
}

/// A marker at (x, y): circle, square or triangle.
fn mark(shape: &str, x: f64, y: f64) -> String {
    match shape {
        "circle" => format!("<circle cx={x:.1} cy={y:.1} r=3 />"),
        "square" => format!("<rect x={:.1} y={:.1} width=6 height=6 />", x - 3.0, y - 3.0),
        _ => format!("<path d=\"M{x:.1} {:.1}l3.5 6h-7z\" />", y - 4.0),
    }
}

/// The marker as a character, for the legend.
fn mark_text(shape: &str) -> &'static str {
    match shape {
        "circle" => "●",
        "square" => "■",
        _ => "▲",
    }
}

/// A mirror's lag over its recent sweeps: a line of the lag, a cross at the top for each sweep
/// that could not tell it (unreachable, or no date). Empty without samples.
pub(super) fn lag(samples: &[Sample], max_lag_ms: Option<u64>) -> String {
    if samples.is_empty() {
        return String::new();
    }
    let (first, last) = (samples[0].at.0, samples[samples.len() - 1].at.0);
    let span = last.duration_since(first).map(crate::vocab::units::millis).unwrap_or(0).max(1);
    let top = samples.iter().filter_map(|s| s.lag_ms).chain(max_lag_ms).max().unwrap_or(0).max(60_000);
    let x = |s: &Sample| {
        let ms = s.at.0.duration_since(first).map(crate::vocab::units::millis).unwrap_or(0);
        if samples.len() == 1 { W / 2.0 } else { PAD + (W - 2.0 * PAD) * ms as f64 / span as f64 }
    };
    let y = |ms: u64| H - PAD + (2.0 * PAD - H) * ms.min(top) as f64 / top as f64;
    let mut svg = String::new();
    let mut run = String::new();
    let mut unknown = 0;
    for s in samples {
        match s.lag_ms {
            Some(ms) => {
                let _ = write!(run, "{:.1},{:.1} ", x(s), y(ms));
            }
            None => {
                unknown += 1;
                let (cx, cy) = (x(s), PAD - 8.0);
                let _ = write!(svg, "<path class=unknown d=\"M{:.1} {:.1}l6 6m0 -6l-6 6\" />", cx - 3.0, cy - 3.0);
                if !run.is_empty() {
                    let _ = write!(svg, "<polyline class=lagline fill=none points=\"{}\" />", run.trim_end());
                    run.clear();
                }
            }
        }
    }
    if !run.is_empty() {
        let _ = write!(svg, "<polyline class=lagline fill=none points=\"{}\" />", run.trim_end());
    }
    let limit = max_lag_ms.map(|m| {
        format!(
            "<line class=limit x1={PAD} y1={ly:.1} x2={r} y2={ly:.1} stroke-dasharray=4 /><text x={tx} y={ty:.1}>max_lag</text>",
            ly = y(m),
            r = W - PAD,
            tx = W - PAD - 44.0,
            ty = y(m) - 3.0
        )
    });
    let now = samples[samples.len() - 1].lag_ms.map(crate::observe::freshness::format_age);
    let label = format!(
        "lag over the last {} sweeps, from {} to {}; now {}{}",
        samples.len(),
        samples[0].at,
        samples[samples.len() - 1].at,
        now.as_deref().unwrap_or("unknown"),
        if unknown > 0 { format!("; {unknown} sweeps could not tell it") } else { String::new() }
    );
    format!(
        "<svg class=lag role=img aria-label=\"{}\" width={W} height={H} viewBox=\"0 0 {W} {H}\">\
         <line x1={PAD} y1={b} x2={r} y2={b} stroke=#999 /><line x1={PAD} y1={PAD} x2={PAD} y2={b} stroke=#999 />\
         {svg}{}<text x=2 y={t}>{}</text><text x=24 y={b}>0</text>\
         <text x={PAD} y={l}>{}</text><text x={rl} y={l}>{}</text></svg>",
        esc(&label),
        limit.unwrap_or_default(),
        esc(&crate::observe::freshness::format_age(top)),
        samples[0].at,
        samples[samples.len() - 1].at,
        b = H - PAD,
        r = W - PAD,
        t = PAD + 4.0,
        l = H - PAD + 16.0,
        rl = W - PAD - 120.0,
    )
}
