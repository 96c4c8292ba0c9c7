//! The status page at scale, in a real browser: the daemon serves 1,000 mirrors with 50 stored
//! pushes of history, and headless Chromium renders the overview, a filtered and a sorted view
//! from their URLs, and one mirror's page; axe-core checks them for accessibility.

use std::time::{Duration, SystemTime};

use pushmirror::demo::HttpReceiver;
use pushmirror::demo::history::{MIRRORS, PUSHES, name, serial, write_history, write_lag_history};
use tokio_util::sync::CancellationToken;

use crate::common::{Fixture, chromium, headless};

/// What Chromium made of `url`'s page.
async fn dom(browser: &std::path::Path, url: String) -> String {
    let (b, profile) = (browser.to_path_buf(), tempfile::tempdir().unwrap());
    let out = tokio::task::spawn_blocking(move || headless(&b, profile.path(), &["--dump-dom".to_string(), url]))
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A screenshot of `url` at `width`×`height`, checked to be one; copied to
/// `$PUSHMIRROR_SCREENSHOTS/<file>` when that is set (how the README's images are made).
async fn screenshot(browser: &std::path::Path, url: String, size: &str, file: &str) {
    let profile = tempfile::tempdir().unwrap();
    let shot = profile.path().join(file);
    let (b, p) = (browser.to_path_buf(), profile.path().to_path_buf());
    let args = vec![format!("--screenshot={}", shot.display()), format!("--window-size={size}"), url];
    let out = tokio::task::spawn_blocking(move || headless(&b, &p, &args)).await.unwrap();
    let png = std::fs::read(&shot)
        .unwrap_or_else(|e| panic!("chromium wrote no screenshot ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "not a real screenshot: {} bytes", png.len());
    if let Some(dir) = std::env::var_os("PUSHMIRROR_SCREENSHOTS") {
        std::fs::write(std::path::Path::new(&dir).join(file), png).unwrap();
    }
}

/// The mirrors of a rendered grid, in the order shown, with their standing.
fn rows(dom: &str) -> Vec<(String, String)> {
    dom.split("<tr data-mirror=\"")
        .skip(1)
        .map(|r| {
            let name = r.split('"').next().unwrap().to_string();
            let health = r.split("data-health=\"").nth(1).and_then(|h| h.split('"').next()).unwrap().to_string();
            (name, health)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_of_1000_mirrors_and_50_pushes_renders_filters_and_sorts_in_chromium() {
    let Some(browser) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "chromium is required in CI (apt-get install chromium)");
        eprintln!("chromium not installed: skipping outside CI");
        return;
    };
    let trigger = HttpReceiver::start().await.unwrap();
    let traces = HttpReceiver::start().await.unwrap();
    let f = Fixture::new();
    f.set_main(
        "mirrors_dir: mirrors.d\nstate_dir: state\nstatus: { listen: 127.0.0.1:0, history: 200 }\n\
         archives:\n  debian:\n    root: archive\n    settle: 1s\n    poll: 1h\n",
    );
    f.set_serial(&serial(PUSHES - 1));
    for i in 0..MIRRORS {
        let tag = if i % 2 == 0 { "eu" } else { "us" };
        let check = if i == 500 { format!("check: {}\n", traces.url("/debian/")) } else { String::new() };
        f.http_mirror(&name(i), &trigger.url("/"), &format!("tags: [{tag}]\n{check}"));
    }
    // m0500 serves the current version, two hops from the primary.
    let date = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(3600));
    traces.publish("/debian/project/trace/master", &format!("Archive serial: {}\nDate: {date}\n", serial(PUSHES - 1)));
    traces.publish(
        "/debian/project/trace/_hierarchy",
        "hub.example.org hub.example.org t1 primary\nm0500 m0500 m0500 hub.example.org\n",
    );
    write_history(&f.path("state"), &trigger.url("/")).unwrap();
    write_lag_history(&f.path("state")).unwrap();

    let shutdown = CancellationToken::new();
    let (_reload, rx) = tokio::sync::mpsc::unbounded_channel();
    let control = pushmirror::daemon::Control::new(shutdown.clone(), rx);
    let daemon = pushmirror::daemon::start(f.config_path(), f.config(), control, Duration::from_secs(5)).await.unwrap();
    let mut status = daemon.status.clone();
    status.wait_for(|s| s.archives[0].pushed_version.is_some() && !s.freshness.is_empty()).await.unwrap();
    let base = format!("http://{}", daemon.addr);

    // /status at this size validates against its documented schema.
    let served = reqwest::get(format!("{base}/status")).await.unwrap().bytes().await.unwrap();
    crate::common::assert_valid("docs/status.schema.json", &served);

    // The whole overview: every mirror, 50 cells each, the counts the ledger gives.
    let html = reqwest::get(format!("{base}/")).await.unwrap().text().await.unwrap();
    eprintln!("overview: {} bytes", html.len());
    assert!(html.len() < 1024 * 1024, "the page is {} bytes", html.len());
    let page = dom(&browser, format!("{base}/")).await;
    let shown = rows(&page);
    assert_eq!(shown.len(), MIRRORS);
    assert!(
        page.contains(
            "<p class=\"counts\"><span class=\"failing\">3 failing</span>, <span class=\"deferred\">5 deferred</span> \
             of 1,000 mirrors <small>(992 ok)</small></p>"
        ),
        "{}",
        page.split("<p class=\"counts\">").nth(1).unwrap_or(&page[..2000]).split("</p>").next().unwrap()
    );
    // Worst first: the failing, then the deferred, then by name.
    let first: Vec<&str> = shown.iter().take(9).map(|(n, _)| n.as_str()).collect();
    assert_eq!(first, ["m0000", "m0001", "m0002", "m0010", "m0011", "m0012", "m0013", "m0014", "m0003"]);
    let grid = page.split("<table class=\"grid\"").nth(1).unwrap().split("</table>").next().unwrap();
    let cells = |class: &str| grid.matches(&format!("<td class=\"{class}\" title=")).count();
    assert_eq!(grid.matches("<th scope=\"col\" title=\"").count(), PUSHES, "a column per push");
    assert_eq!(cells("f"), 3 * 5 + 7 + 2, "failed cells");
    assert_eq!(cells("d"), 5, "deferred cells");
    assert_eq!(grid.matches("<td>✓</td>").count(), MIRRORS * PUSHES - 3 * 5 - 7 - 2 - 5, "ok cells");
    assert!(page.contains("<figure class=\"trend\">") && page.contains("100% live (not reached in 8)"), "the trend");

    // Keyboard and screen-reader basics, beside axe-core below: one h1 and a heading per
    // archive, headers on both axes of the grid, every control labelled, charts described,
    // and every non-ok cell saying in words (and by its shape) what the colour says.
    assert_eq!(page.matches("<h1>").count(), 1);
    assert!(page.contains("<h2 id=\"a-debian\">debian</h2>"));
    assert_eq!(grid.matches("<th scope=\"row\">").count(), MIRRORS, "a row header per mirror");
    assert_eq!(page.matches("<select ").count(), page.matches("<label>").count() - 1, "one label per control");
    assert!(
        page.matches("<svg ").count() >= 2
            && page.matches("<svg ").count() == page.matches("role=\"img\" aria-label=").count()
    );
    for (class, word, shape) in [("f", "failed", "✗"), ("d", "deferred", "◷")] {
        let cells: Vec<&str> = grid.split(&format!("<td class=\"{class}\" title=\"")).skip(1).collect();
        assert!(
            !cells.is_empty() && cells.iter().all(|c| c.starts_with(word) && c.contains(&format!("\">{shape}</td>")))
        );
    }
    // A filtered view is a URL: failing mirrors tagged eu.
    let filtered = dom(&browser, format!("{base}/?state=failing&tag=eu")).await;
    assert_eq!(rows(&filtered), [("m0000".into(), "failing".into()), ("m0002".into(), "failing".into())]);
    assert!(filtered.contains("showing 2 of 1,000 mirrors"), "{filtered}");
    assert!(filtered.contains("<option value=\"failing\" selected=\"\">"), "the form shows the filter");
    let tier = dom(&browser, format!("{base}/?tier=2")).await;
    assert_eq!(rows(&tier), [("m0500".into(), "ok".into())]);
    // Sorted by failures, most first; by name.
    let sorted = rows(&dom(&browser, format!("{base}/?sort=failures&state=problems")).await);
    let order: Vec<&str> = sorted.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, ["m0000", "m0001", "m0002", "m0010", "m0011", "m0012", "m0013", "m0014"]);
    let by_name = rows(&dom(&browser, format!("{base}/?sort=name")).await);
    assert!(by_name.windows(2).all(|w| w[0].0 < w[1].0), "sorted by name");
    let bad = dom(&browser, format!("{base}/?state=nonsense&sort=x")).await;
    assert!(bad.contains("ignored, not understood: state `nonsense`, sort `x`"), "an unknown filter is named");
    assert_eq!(rows(&bad).len(), MIRRORS);
    let twice = reqwest::get(format!("{base}/?tag=eu&tag=us&archive=ubuntu")).await.unwrap();
    assert_eq!(twice.status(), 200, "a repeated key is not a bad request");
    let twice = twice.text().await.unwrap();
    assert!(twice.contains("tag `us` (given twice), archive `ubuntu`"), "named, not silently empty");

    // One mirror's story: how it is reached, its upstream chain, lag chart, every trigger.
    let mirror = dom(&browser, format!("{base}/mirror/m0500")).await;
    assert!(mirror.contains("<h1>m0500</h1>"), "{mirror}");
    assert!(mirror.contains("primary → hub.example.org → m0500"), "the chain: {mirror}");
    assert!(mirror.contains("<svg class=\"lag\""), "the lag chart");
    assert!(mirror.contains("31 sweeps") && mirror.contains("2 sweeps could not tell it"), "30 stored + the daemon's");
    let triggers = mirror.split("<table class=\"triggers\">").nth(1).unwrap().split("</table>").next().unwrap();
    assert_eq!(triggers.matches("<tr>").count(), 1 + PUSHES, "a header and a row per push");
    assert!(triggers.contains("http-status after 4 attempts") && triggers.contains("connect after 4 attempts"));
    assert!(
        mirror
            .contains(&format!("<code>{}</code>", pushmirror::config::redact_url(&trigger.url("/").parse().unwrap())))
    );
    let missing = reqwest::get(format!("{base}/mirror/nope")).await.unwrap();
    assert_eq!(missing.status(), 404);

    screenshot(&browser, format!("{base}/?state=problems"), "1280,900", "dashboard-overview.png").await;
    screenshot(&browser, format!("{base}/mirror/m0500"), "1100,1300", "dashboard-mirror.png").await;
    for (view, url) in [("overview", format!("{base}/?state=problems")), ("mirror", format!("{base}/mirror/m0500"))] {
        accessible(&browser, view, &url).await;
    }
    stale_banner(&browser, &format!("{base}/mirror/m0500")).await;
    shutdown.cancel();
    daemon.wait().await.unwrap();
}

/// The page at `url`, opened where its updates cannot reach the daemon (a saved copy): after an
/// update interval it says it is stale, instead of its data standing as now.
async fn stale_banner(browser: &std::path::Path, url: &str) {
    let html = reqwest::get(url).await.unwrap().text().await.unwrap();
    assert!(html.contains("<p id=stale role=alert hidden></p>"), "hidden while fresh");
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("saved.html");
    std::fs::write(&page, html).unwrap();
    let (b, p) = (browser.to_path_buf(), dir.path().to_path_buf());
    let args = vec!["--virtual-time-budget=20000".into(), "--dump-dom".into(), format!("file://{}", page.display())];
    let out = tokio::task::spawn_blocking(move || headless(&b, &p, &args)).await.unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let banner = dom.split("<p id=\"stale\" role=\"alert\"").nth(1).and_then(|b| b.split("</p>").next()).unwrap();
    assert!(
        banner.starts_with(">Not updated for ") && banner.ends_with("s: the daemon does not answer."),
        "the banner: {banner}"
    );
}

/// axe-core (npm `axe-core`, installed by `.ci/run` under `target/axe`) run on the page at `url`
/// in Chromium: no WCAG 2 A/AA violation. Required under `CI`.
async fn accessible(browser: &std::path::Path, view: &str, url: &str) {
    let axe = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/axe/node_modules/axe-core/axe.min.js");
    if !axe.exists() {
        assert!(std::env::var_os("CI").is_none(), "axe-core is required in CI: {} is missing", axe.display());
        eprintln!("axe-core not installed ({}): skipping the accessibility check", axe.display());
        return;
    }
    let html = reqwest::get(url).await.unwrap().text().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = format!(
        "<script src=\"file://{}\"></script><script>axe.run(document, {{runOnly: ['wcag2a', 'wcag2aa']}}).then(r => {{\
         const out = document.createElement('pre'); out.id = 'axe-result';\
         out.textContent = JSON.stringify(r.violations.map(v => ({{id: v.id, nodes: v.nodes.slice(0, 3).map(n => n.html)}})));\
         document.body.appendChild(out); }});</script></body>",
        axe.display()
    );
    let page = dir.path().join(format!("{view}.html"));
    std::fs::write(&page, html.replace("</body>", &run)).unwrap();
    let (b, p) = (browser.to_path_buf(), dir.path().to_path_buf());
    let args = vec!["--virtual-time-budget=10000".into(), "--dump-dom".into(), format!("file://{}", page.display())];
    let out = tokio::task::spawn_blocking(move || headless(&b, &p, &args)).await.unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let result = dom.split("<pre id=\"axe-result\">").nth(1).and_then(|r| r.split("</pre>").next());
    assert_eq!(result, Some("[]"), "axe-core on the {view} page found violations (or did not run)");
}
