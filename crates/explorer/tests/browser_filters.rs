//! The filter model, time and long values in a real browser (see `webdriver`), at 1024 px:
//! a session opened from a filtered list shows the list's filters as removable chips with
//! "N of M requests", "Show all requests" and "Apply filters" work and "← Sessions" keeps only
//! the list's filters; time presets, the UTC/local switch, the timeline's axis, legend and
//! zoom (click and drag), charts that filter when clicked; long paths and parameters kept to
//! two lines, paths wrapped at `/`, parameters decoded with a raw switch, stable request
//! links, numbering across pages, the retention, and errors shown on the page.
//!
//! Takes the screenshots the docs show (the list, and a session opened from a filtered list);
//! they are written to `docs/` when API_SESSIONS_UPDATE_SCREENSHOT=1, so that an ordinary test
//! run leaves the checkout as it found it.

mod fixtures;
mod webdriver;

use std::path::{Path, PathBuf};

use api_sessions_core::record::Record;
use api_sessions_core::time::Millis;
use base64::Engine;
use fixtures::*;
use serde_json::{json, Value};
use webdriver::{agent, explorer, Browser};

const SHOP: &str = "5f3a9c0d2b7e4e81a6c2d9b0e1f4a7c3";
const LONG: &str = "long-values-0001";
const BOT: &str = "bot-0001-scraper";
const RECENT: &str = "recent-0001";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// "東京で検索" as a browser sends it in a query string.
const ENCODED: &str = "%E6%9D%B1%E4%BA%AC%E3%81%A7%E6%A4%9C%E7%B4%A2";

fn records(b: i64) -> Vec<Record> {
    let mut records = Vec::new();
    let mut n = 0;
    let mut next = |session: &str, ts: i64| {
        n += 1;
        record(session, n, ts + n as i64)
    };
    // A shopper whose session ends in probing: 4 of its 12 requests are client errors.
    let steps: [(&str, &str, u16, &[&str]); 12] = [
        ("POST", "/api/v1/login", 200, &["auth"]),
        ("GET", "/api/v1/account", 200, &["account_management"]),
        ("GET", "/api/v1/products", 200, &[]),
        ("GET", "/api/v1/products/42", 200, &[]),
        ("PUT", "/api/v1/cart/items/42", 200, &[]),
        ("POST", "/api/v1/orders", 201, &["billing"]),
        ("POST", "/api/v1/payments", 402, &["billing"]),
        ("POST", "/api/v1/payments", 201, &["billing"]),
        ("GET", "/api/v1/orders/1001", 200, &[]),
        ("GET", "/api/v1/orders/1002", 404, &[]),
        ("GET", "/api/v1/admin/users", 403, &["admin"]),
        ("GET", "/api/v1/search", 404, &[]),
    ];
    for (i, (method, path, status, flows)) in steps.iter().enumerate() {
        let mut r = next(SHOP, b + i as i64 * 150_000);
        r.method = method.to_string();
        r.path = path.to_string();
        r.status = *status;
        r.flows = flows.iter().map(|f| f.to_string()).collect();
        r.duration_ms = 3.0 + (i * 7 % 40) as f64;
        r.response_bytes = 400 + (i as u64 * 977 % 9000);
        r.ip = if i < 9 { "203.0.113.24" } else { "198.51.100.7" }.into();
        r.user = Some("alice".into());
        r.role = Some("customer".into());
        r.params = vec![param("token", "hmac-sha256:5be0c2a1")];
        r.params[0].hashed = true;
        if *path == "/api/v1/search" {
            r.params.push(param("q", ENCODED));
        }
        records.push(r);
    }
    // Another user's short session, all answered.
    for k in 0..3 {
        let mut r = next("d-dana", b + 40 * MINUTE + k * 1000);
        r.user = Some("dana".into());
        records.push(r);
    }
    // Odd values: a 5,000-character parameter and a 1,500-character path.
    for k in 0..9 {
        let mut r = next(LONG, b + 30 * MINUTE + k * 1000);
        r.path = format!("/api/v1/notes/{k}");
        if k == 3 {
            r.params =
                vec![param("blob", &"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo".repeat(143)[..5000])];
        }
        if k == 5 {
            let mut path = String::new();
            let mut i = 0;
            while path.len() < 1500 {
                path.push_str(&format!("/segment-{i:04}"));
                i += 1;
            }
            r.path = path;
        }
        if k == 7 {
            r.params = vec![param("q", ENCODED), param("page", "2")];
        }
        records.push(r);
    }
    // A scraper: 1,000 requests, one a second, an hour before the others.
    for k in 0..1000 {
        let mut r = next(BOT, b - HOUR + k * 1000);
        r.path = format!("/api/v1/items/{k}");
        r.user_agent = Some("python-requests/2.31".into());
        records.push(r);
    }
    // Something in the last few minutes, for the presets.
    for k in 0..2 {
        let now = Millis::now().0;
        records.push(next(RECENT, now - 5 * MINUTE + k * 1000));
    }
    records
}

/// The browser's element id of the first match of `css`.
fn element(browser: &Browser, css: &str) -> Value {
    json!({ ELEMENT: browser.find(css) })
}

/// Presses the mouse at `from` and releases it at `to`, offsets from the element's centre.
fn drag(browser: &Browser, css: &str, from: (i64, i64), to: (i64, i64)) {
    let origin = element(browser, css);
    let actions = json!({"actions": [{
        "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
        "actions": [
            {"type": "pointerMove", "duration": 0, "origin": origin, "x": from.0, "y": from.1},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerMove", "duration": 150, "origin": origin, "x": (from.0 + to.0) / 2, "y": to.1},
            {"type": "pointerMove", "duration": 150, "origin": origin, "x": to.0, "y": to.1},
            {"type": "pointerUp", "button": 0}
        ]
    }]});
    browser.call("POST", "/actions", Some(actions));
    browser.call("DELETE", "/actions", None);
}

fn resize(browser: &Browser, width: u32, height: u32) {
    browser.call("POST", "/window/rect", Some(json!({"width": width, "height": height})));
    let inner = browser.script("return window.innerWidth;");
    assert!(inner.as_u64().unwrap() <= width as u64, "{inner}");
}

fn screenshot(browser: &Browser, name: &str) {
    let png = browser.call("GET", "/screenshot", None);
    let png = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let dir = if std::env::var_os("API_SESSIONS_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

fn query_value(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Where each line of the element's text ends: the last character before each break.
const LINE_ENDS: &str = "
    const cell = arguments[0];
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    const ends = [];
    let last = null, lastTop = null, lines = 0;
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (let i = 0; i < node.length; i++) {
            const range = document.createRange();
            range.setStart(node, i);
            range.setEnd(node, i + 1);
            const rect = range.getClientRects()[0];
            if (!rect) continue;
            if (lastTop !== null && rect.top > lastTop + 2) { ends.push(last); lines++; }
            lastTop = rect.top;
            last = node.data[i];
        }
    }
    return {ends: ends, lines: lines + 1};
";

#[test]
fn filters_time_and_long_values_in_a_real_browser() {
    let work = tempfile::tempdir().unwrap();
    let (_server, base) = explorer(&work.path().join("filters.db"), &["--retention", "3d"], &[]);
    let Some(browser) = Browser::start(&work.path().join("profile"), None) else { return };
    let records = records(fixtures::base());
    let mut posted =
        agent().post(&format!("{base}/v1/records")).send(&ndjson(&records)[..]).unwrap();
    let report: Value = posted.body_mut().read_json().unwrap();
    assert_eq!(report["accepted"], records.len(), "{report}");
    resize(&browser, 1024, 900);

    // The list states the retention; a screenshot of it for the docs.
    browser.open(&format!("{base}/"));
    assert_eq!(browser.rows("sessions"), 5);
    assert!(browser.text("footer.retention").contains("keeps 3 days"));
    screenshot(&browser, "explorer-list.png");

    // Presets: the last 15 minutes hold one session, the last 24 hours all of them; the
    // picker shows the start to the second.
    browser.click("nav.presets a.preset[data-length='900000']");
    browser.wait_until("the 15-minute preset", || browser.current_url().contains("from="));
    assert_eq!(browser.rows("sessions"), 1);
    assert!(browser.text("table.sessions").contains(RECENT));
    let from = query_value(&browser.current_url(), "from").unwrap();
    let from = Millis::parse(&from).unwrap();
    let ago = Millis::now().0 - from.0;
    assert!((15 * MINUTE - 60_000..=15 * MINUTE + 60_000).contains(&ago), "{ago} ms ago");
    let picker = browser.script(
        "const f = document.getElementById('f-from'); return {value: f.value, step: f.step};",
    );
    let value = picker["value"].as_str().unwrap();
    assert_eq!(value.len(), "YYYY-MM-DDTHH:MM:SS".len(), "no milliseconds: {picker}");
    assert_eq!(picker["step"], "1", "{picker}");
    browser.click("nav.presets a.preset[data-length='86400000']");
    browser.wait_until("the 24-hour preset", || browser.rows("sessions") == 5);

    // A global filter and a sort, then a session opened from that list.
    let list = format!("{base}/?status=4xx&sort=requests");
    browser.open(&list);
    assert_eq!(browser.rows("sessions"), 1);
    browser.click(&format!("a.session-link[title='{SHOP}']"));
    browser
        .wait_until("the session", || browser.current_url().contains(&format!("/sessions/{SHOP}")));
    assert_eq!(browser.rows("requests"), 4, "only the requests the list's filters select");
    assert!(
        browser.text("#scope").contains("Showing 4 of 12 requests"),
        "{}",
        browser.text("#scope")
    );
    assert_eq!(browser.find_all("#scope .filter-chip").len(), 1);
    assert!(browser.text("#scope .filter-chip[data-name='status']").contains("4xx"));
    resize(&browser, 1024, 2000);
    screenshot(&browser, "explorer-session.png");
    resize(&browser, 1024, 900);

    // Stable request links: by request id, on every page and filter.
    let first = browser.script(
        "const a = document.querySelector('table.requests tbody tr td a');
         return {href: a.getAttribute('href'), text: a.textContent};",
    );
    let anchor = first["href"].as_str().unwrap().trim_start_matches('#').to_owned();
    assert!(anchor.starts_with("request-") && anchor.contains(SHOP), "{first}");
    assert_eq!(browser.find_all(&format!("details[id='{anchor}']")).len(), 1);

    // An in-session filter narrows further; the way back keeps only the list's filters.
    browser.script("document.getElementById('f-method').value = 'POST'; return true;");
    browser.click("form.filters button[type=submit]");
    browser.wait_until("the method filter", || browser.current_url().contains("method=POST"));
    assert_eq!(browser.rows("requests"), 1);
    assert!(browser.text("#scope").contains("Showing 1 of 12 requests"));
    assert_eq!(browser.find_all("#scope .filter-chip").len(), 2);
    browser.click("#back");
    browser.wait_until("the list", || !browser.current_url().contains("/sessions/"));
    assert_eq!(browser.current_url(), list, "the list's own filters, not the session's");
    assert_eq!(browser.rows("sessions"), 1);

    // A chip removes its filter; "Apply filters" brings the list's back.
    browser.click(&format!("a.session-link[title='{SHOP}']"));
    browser.wait_until("the session", || browser.current_url().contains("/sessions/"));
    browser.click("#scope .filter-chip[data-name='status'] a.remove");
    browser.wait_until("the chip's removal", || !browser.current_url().contains("status="));
    assert_eq!(browser.rows("requests"), 12);
    assert!(browser.find_all("#scope .filter-chip").is_empty());
    assert!(browser.text("#scope").contains("All 12 requests"));
    browser.click("#apply-filters");
    browser.wait_until("the list's filters", || browser.current_url().contains("status=4xx"));
    assert_eq!(browser.rows("requests"), 4);
    assert!(browser.find_all("#apply-filters").is_empty(), "already applied");

    // "Show all requests" drops them, and the way back still knows the list.
    browser.click("#show-all");
    browser.wait_until("all requests", || browser.rows("requests") == 12);
    assert!(!browser.current_url().contains("status="));
    let back = browser.script("return document.getElementById('back').href;");
    assert_eq!(back.as_str().unwrap(), list);

    // A bar of a distribution chart filters by its value.
    browser.click("section.charts svg[aria-label='Methods'] a.filter:nth-of-type(2)");
    browser.wait_until("the method bar", || browser.current_url().contains("method="));
    let method = query_value(&browser.current_url(), "method").unwrap();
    assert_eq!(method, "POST", "the second bar: 4 POST after 7 GET");
    assert_eq!(browser.rows("requests"), 4);
    browser.click("section.charts svg[aria-label='Statuses'] a.filter");
    browser.wait_until("the status bar", || browser.current_url().contains("status="));
    assert_eq!(query_value(&browser.current_url(), "status").unwrap(), "201");
    assert_eq!(browser.rows("requests"), 2);

    // The flows link to the sessions that touched them.
    browser.open(&format!("{base}/sessions/{SHOP}"));
    browser.click("section.flows a.flow");
    browser.wait_until("the flow's sessions", || browser.current_url().contains("flow="));
    assert_eq!(browser.rows("sessions"), 1);

    // The timeline: a time axis with several labelled ticks, a legend, and the scale beside
    // the bars, not over them.
    browser.open(&format!("{base}/sessions/{BOT}"));
    assert_eq!(browser.rows("requests"), 200);
    assert_eq!(browser.text("h2#requests"), "Requests 1–200 of 1,000");
    let ticks = browser.find_all("figure.timeline svg text.tick");
    assert!((3..=8).contains(&ticks.len()), "{} ticks", ticks.len());
    let legend = browser.text("figure.timeline ul.legend");
    for label in ["1xx–3xx", "4xx", "5xx", "malicious request", "up to"] {
        assert!(legend.contains(label), "{legend}");
    }
    let overlap = browser.script(
        "const scale = document.querySelector('figure.timeline li.scale').getBoundingClientRect();
         const bars = Array.from(document.querySelectorAll('figure.timeline svg g.slice rect:not(.hit)'));
         const ticks = Array.from(document.querySelectorAll('figure.timeline svg text.tick'));
         const hits = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
         const labels = ticks.map(t => t.getBoundingClientRect());
         return {
           bars: bars.filter(b => hits(b.getBoundingClientRect(), scale)).length,
           ticks: labels.filter((a, i) => labels.some((b, j) => i !== j && hits(a, b))).length,
           tickOverBars: labels.filter(a => bars.some(b => hits(a, b.getBoundingClientRect()))).length,
           count: bars.length
         };",
    );
    assert_eq!(overlap["bars"], 0, "the scale label is over the bars: {overlap}");
    assert_eq!(overlap["ticks"], 0, "tick labels overlap: {overlap}");
    assert_eq!(overlap["tickOverBars"], 0, "tick labels over the bars: {overlap}");
    assert!(overlap["count"].as_u64().unwrap() >= 30, "{overlap}");

    // Numbering goes on across pages.
    browser.click("nav.paging a.button:not(.secondary)");
    browser.wait_until("the second page", || browser.current_url().contains("cursor="));
    assert_eq!(browser.text("h2#requests"), "Requests 201–400 of 1,000");
    assert_eq!(browser.text("table.requests tbody tr:first-child td:first-child"), "201");

    // A click on a slice zooms to it.
    browser.open(&format!("{base}/sessions/{BOT}"));
    browser.click("figure.timeline svg a.zoom:nth-of-type(10)");
    browser.wait_until("the zoom", || browser.current_url().contains("to="));
    let url = browser.current_url();
    let (from, to) = (query_value(&url, "from").unwrap(), query_value(&url, "to").unwrap());
    let (from, to) = (Millis::parse(&from).unwrap(), Millis::parse(&to).unwrap());
    assert!(to.0 - from.0 < 60_000, "one slice of 60: {from:?} {to:?}");
    let shown = browser.rows("requests");
    assert!((10..=25).contains(&shown), "{shown} requests in one slice");
    assert!(browser.text("#scope").contains(&format!("Showing {shown} of 1,000 requests")));

    // Dragging across a fifth of the timeline shows about a fifth of the requests.
    browser.open(&format!("{base}/sessions/{BOT}"));
    let width = browser
        .script(
            "return document.querySelector('figure.timeline svg').getBoundingClientRect().width;",
        )
        .as_f64()
        .unwrap();
    let at = |share: f64| ((share - 0.5) * width).round() as i64;
    drag(&browser, "figure.timeline svg", (at(0.40), -10), (at(0.60), -10));
    browser.wait_until("the dragged range", || browser.current_url().contains("to="));
    let h2 = browser.text("h2#requests");
    let shown: u64 = h2.rsplit(' ').next().unwrap().replace(',', "").parse().unwrap();
    assert!((170..=230).contains(&shown), "{h2}");
    assert!(browser.text("#scope").contains(" of 1,000 requests"));
    let dragged = browser.current_url();

    // UTC or local time: Tokyo is nine hours ahead, the choice is remembered, and the pickers
    // still send UTC.
    browser.call(
        "POST",
        "/goog/cdp/execute",
        Some(
            json!({"cmd": "Emulation.setTimezoneOverride", "params": {"timezoneId": "Asia/Tokyo"}}),
        ),
    );
    browser.open(&dragged);
    let shown_utc = browser.text("table.requests tbody time");
    assert_eq!(browser.text("#tz-toggle"), "Times: UTC");
    let picker_utc = browser.script("return document.getElementById('f-from').value;");
    browser.click("#tz-toggle");
    browser.wait_until("local time", || browser.text("#tz-toggle").contains("UTC+09:00"));
    let shown_local = browser.text("table.requests tbody time");
    let hours = |text: &str| -> i64 { text[11..13].parse().unwrap() };
    assert_eq!((hours(&shown_utc) + 9) % 24, hours(&shown_local), "{shown_utc} → {shown_local}");
    assert_eq!(shown_utc[13..], shown_local[13..]);
    assert!(browser.text("label[for='f-from']").contains("local time"));
    let picker_local = browser.script("return document.getElementById('f-from').value;");
    let (picker_utc, picker_local) = (picker_utc.as_str().unwrap(), picker_local.as_str().unwrap());
    assert_eq!((hours(picker_utc) + 9) % 24, hours(picker_local), "{picker_utc} → {picker_local}");
    browser.open(&format!("{base}/sessions/{BOT}?request_id={BOT}-req-1"));
    assert!(browser.text("#tz-toggle").contains("UTC+09:00"), "remembered");
    browser.open(&dragged);
    browser.click("form.filters button[type=submit]");
    browser.wait_until("the form", || browser.current_url() != dragged);
    let sent = Millis::parse(&query_value(&browser.current_url(), "from").unwrap()).unwrap();
    let asked = Millis::parse(&query_value(&dragged, "from").unwrap()).unwrap();
    assert_eq!(sent, asked, "the picker sent its time in UTC");
    browser.click("#tz-toggle");
    browser.wait_until("UTC", || browser.text("#tz-toggle") == "Times: UTC");

    // Long values at 1024 px: two lines each, the page stays short, paths wrap at `/`.
    browser.open(&format!("{base}/sessions/{LONG}"));
    assert_eq!(browser.rows("requests"), 9);
    let height = browser.script("return document.documentElement.scrollHeight;").as_u64().unwrap();
    let parts = browser.script(
        "return Array.from(document.querySelectorAll('main > *'))
           .map(e => `${e.tagName}.${e.className}#${e.id}: ${Math.round(e.getBoundingClientRect().height)}`)
           .join(', ');",
    );
    assert!(height < 3000, "a 9-request session is {height} px tall: {parts}");
    let width = browser.script("return document.documentElement.scrollWidth;").as_u64().unwrap();
    assert!(width <= 1024, "the page is {width} px wide");
    let long_path = "table.requests tbody tr:nth-child(6) td.path";
    let cell = element(&browser, &format!("{long_path} .clamp"));
    let lines = browser.call(
        "POST",
        "/execute/sync",
        Some(json!({"script": LINE_ENDS, "args": [cell.clone()]})),
    );
    assert!(lines["ends"].as_array().unwrap().iter().all(|end| end == "/"), "{lines}");
    let clamped = browser.script(&format!(
        "return document.querySelector('{long_path} .clamp').getBoundingClientRect().height;"
    ));
    browser.click(&format!("{long_path} button.expand"));
    let lines =
        browser.call("POST", "/execute/sync", Some(json!({"script": LINE_ENDS, "args": [cell]})));
    let ends = lines["ends"].as_array().unwrap();
    assert!(ends.len() >= 4, "the whole path, on several lines: {lines}");
    assert!(ends.iter().all(|end| end == "/"), "a path breaks only after a slash: {lines}");
    let expanded = browser.script(&format!(
        "return document.querySelector('{long_path} .clamp').getBoundingClientRect().height;"
    ));
    assert!(expanded.as_f64().unwrap() > 2.0 * clamped.as_f64().unwrap(), "{clamped} {expanded}");
    let blob = browser.script(
        "const c = document.querySelector('table.requests tbody tr:nth-child(4) td.params .clamp');
         return {height: c.getBoundingClientRect().height, full: c.scrollHeight,
                 expand: !!c.parentElement.querySelector('button.expand')};",
    );
    assert!(blob["height"].as_f64().unwrap() < 45.0, "two lines: {blob}");
    assert!(blob["full"].as_f64().unwrap() > 100.0, "{blob}");
    assert_eq!(blob["expand"], true, "{blob}");

    // Parameters decoded for reading, raw on demand.
    let params = "table.requests tbody tr:nth-child(8) td.params";
    assert!(browser.text(params).contains("q=東京で検索"), "{}", browser.text(params));
    assert!(!browser.text(params).contains(ENCODED));
    browser.click("#raw-values");
    assert!(browser.text(params).contains(&format!("q={ENCODED}")), "{}", browser.text(params));
    assert!(!browser.text(params).contains("東京で検索"));
    browser.click("#raw-values");
    assert!(browser.text(params).contains("q=東京で検索"));

    // The link to one request shows it alone.
    let link = browser.script(
        "const id = document.querySelector('table.requests tbody tr:nth-child(8) td a')
             .getAttribute('href').slice(1);
         return document.getElementById(id).querySelector('a.permalink').href;",
    );
    browser.open(link.as_str().unwrap());
    assert_eq!(browser.rows("requests"), 1);
    assert!(browser.text(params.replace("nth-child(8)", "nth-child(1)").as_str()).contains("東京"));

    // Bad queries are explained on the page, which keeps its form.
    browser.open(&format!("{base}/?usr=alice"));
    assert!(
        browser.text("p.error").contains("unknown parameter `usr`"),
        "{}",
        browser.text("p.error")
    );
    assert!(!browser.find_all("form.filters").is_empty());
    browser.open(&format!("{base}/?from=2026-11-22T10:00&to=2026-11-22T09:00"));
    assert!(browser.text("p.error").contains("invalid range"));
    browser.open(&format!("{base}/sessions/{SHOP}?from=2026-11-22T10:00&to=2026-11-22T09:00"));
    assert!(browser.text("p.error").contains("invalid range"));
    assert!(!browser.find_all("form.filters").is_empty());
    browser.open(&format!("{base}/sessions/{SHOP}?bogus=1"));
    assert!(browser.text("p.error").contains("unknown parameter `bogus`"));
}
