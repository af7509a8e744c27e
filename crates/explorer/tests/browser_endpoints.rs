//! Endpoints in a real browser (see `webdriver`): `/endpoints` against an OpenAPI document
//! (documented, shadow, zombie and unused endpoints, suggested flows), its filter form, the link
//! from an endpoint to the sessions that called it (`/?endpoint=...`), and in one of those
//! sessions the requests far above the endpoint's usual time and size, highlighted.
//!
//! Takes the screenshot of `/endpoints` at 1,024 pixels that docs/endpoints.md shows; it is
//! written to `docs/endpoints.png` when API_SESSIONS_UPDATE_SCREENSHOT=1, to Cargo's test
//! scratch directory otherwise.

mod fixtures;
mod webdriver;

use std::path::{Path, PathBuf};

use api_sessions_core::record::Record;
use base64::Engine;
use fixtures::*;
use serde_json::{json, Value};
use webdriver::{agent, explorer, Browser};

const SPEC: &str = "\
openapi: 3.0.3
info: {title: Shop, version: '2.1'}
servers:
  - url: https://shop.example.com/api/v1
paths:
  /login:
    post: {responses: {'200': {description: OK}}}
  /products:
    get: {responses: {'200': {description: OK}}}
  /products/{productId}:
    get: {responses: {'200': {description: OK}}}
  /orders:
    post: {responses: {'201': {description: Created}}}
  /orders/{orderId}:
    get: {responses: {'200': {description: OK}}}
  /reports/{reportId}/export:
    get: {responses: {'200': {description: OK}}}
  /cart/legacy:
    get:
      deprecated: true
      responses: {'200': {description: OK}}
  /gift-cards:
    post: {responses: {'201': {description: Created}}}
";

const BROWSER: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";

/// Customers of a shop over an afternoon: each logs in, browses products, orders and looks at
/// the order; the back office exports reports, one of which is slow and one huge; one client
/// still uses the deprecated cart and one calls an internal path no document mentions.
fn traffic(b: i64) -> Vec<Record> {
    let mut records = Vec::new();
    let mut n = 0;
    let mut next = |session: &str, ts: i64, method: &str, path: &str, status: u16| {
        n += 1;
        let mut r = record(session, n, ts);
        r.server = "shop.example.com".into();
        r.method = method.into();
        r.path = path.into();
        r.status = status;
        r.user_agent = Some(BROWSER.into());
        r.duration_ms = 4.0 + (n % 9) as f64 * 1.5;
        r.response_bytes = 900 + (n * 37 % 600);
        r
    };
    for c in 0..12i64 {
        let session = format!("customer-{c:02}");
        let user = format!("customer{c:02}@example.com");
        let t = b + c * 7 * MINUTE;
        let ip = format!("203.0.113.{}", 10 + c);
        let steps = [
            ("POST", "/api/v1/login".to_owned(), 200),
            ("GET", "/api/v1/products".to_owned(), 200),
            ("GET", format!("/api/v1/products/{}", 40 + c % 5), 200),
            ("GET", format!("/api/v1/products/{}", 50 + c % 3), 200),
            ("POST", "/api/v1/orders".to_owned(), 201),
            ("GET", format!("/api/v1/orders/{}", 7100 + c), 200),
        ];
        for (k, (method, path, status)) in steps.into_iter().enumerate() {
            let mut r = next(&session, t + k as i64 * 20_000, method, &path, status);
            r.ip = ip.clone();
            r.user = Some(user.clone());
            r.role = Some("customer".into());
            if k == 0 {
                r.flows = vec!["auth".into()];
                r.params = vec![param("username", &user)];
            }
            if method == "POST" && path.ends_with("/orders") {
                r.flows = vec!["billing".into()];
            }
            records.push(r);
        }
    }
    // The back office: 24 exports, usually quick and small; the 23rd slow, the 24th huge.
    for k in 0..24i64 {
        let mut r = next(
            "backoffice",
            b + 5 * MINUTE + k * 90_000,
            "GET",
            &format!("/api/v1/reports/{}/export", 300 + k),
            200,
        );
        r.ip = "192.0.2.50".into();
        r.user = Some("ops@example.com".into());
        r.role = Some("admin".into());
        r.duration_ms = 40.0 + (k % 6) as f64 * 4.0;
        r.response_bytes = 18_000 + (k as u64 % 5) * 700;
        if k == 22 {
            r.duration_ms = 2_350.0;
        }
        if k == 23 {
            r.response_bytes = 4_800_000;
        }
        records.push(r);
    }
    for k in 0..3i64 {
        let mut r =
            next("old-app", b + 50 * MINUTE + k * 30_000, "GET", "/api/v1/cart/legacy", 200);
        r.ip = "198.51.100.20".into();
        r.user_agent = Some("ShopApp/2.3 (Android 9)".into());
        records.push(r);
    }
    for k in 0..2i64 {
        let mut r =
            next("debugger", b + 55 * MINUTE + k * 10_000, "GET", "/api/v1/internal/debug", 200);
        r.ip = "198.51.100.77".into();
        records.push(r);
    }
    records
}

#[test]
fn endpoints_work_in_a_real_browser() {
    let work = tempfile::tempdir().unwrap();
    let spec = work.path().join("shop.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let (_server, base) =
        explorer(&work.path().join("endpoints.db"), &["--openapi", spec.to_str().unwrap()], &[]);
    let Some(browser) = Browser::start(&work.path().join("profile"), None) else { return };
    let records = traffic(fixtures::base());
    let mut posted =
        agent().post(&format!("{base}/v1/records")).send(&ndjson(&records)[..]).unwrap();
    let report: Value = posted.body_mut().read_json().unwrap();
    assert_eq!(report["accepted"], records.len(), "{report}");

    // The page at the width of a small laptop, as the docs show it.
    browser.call("POST", "/window/rect", Some(json!({"width": 1024, "height": 900})));
    browser.open(&format!("{base}/endpoints"));
    assert_eq!(browser.text("h1"), "Endpoints");
    let listed = browser.script(
        "return Array.from(document.querySelectorAll('table.endpoints tbody tr')).map(row => ({
            endpoint: row.querySelector('td.endpoint').textContent,
            spec: (row.querySelector('.badge.spec') || {}).textContent || null,
            link: (row.querySelector('a.endpoint-link') || {href: null}).href,
            suggested: Array.from(row.querySelectorAll('td.auto-flows .tag'))
                .map(tag => tag.textContent)}));",
    );
    let listed = listed.as_array().unwrap();
    let find = |endpoint: &str| {
        listed
            .iter()
            .find(|row| row["endpoint"] == endpoint)
            .unwrap_or_else(|| panic!("{endpoint} is not listed: {listed:?}"))
    };
    for (endpoint, spec) in [
        ("POST /api/v1/login", "documented"),
        ("GET /api/v1/products/{productId}", "documented"),
        ("GET /api/v1/orders/{orderId}", "documented"),
        ("GET /api/v1/reports/{reportId}/export", "documented"),
        ("GET /api/v1/cart/legacy", "zombie"),
        ("GET /api/v1/internal/debug", "shadow"),
        ("POST /api/v1/gift-cards", "unused"),
    ] {
        assert_eq!(find(endpoint)["spec"], spec, "{endpoint}");
    }
    assert_eq!(find("POST /api/v1/gift-cards")["link"], Value::Null, "nothing to link to");
    assert_eq!(find("POST /api/v1/login")["suggested"], json!(["auth"]));
    assert_eq!(listed.len(), 9, "{listed:?}");
    let width = browser.script("return window.innerWidth;");
    assert!(width.as_u64().unwrap() <= 1024, "{width}");
    save_screenshot(&browser);

    // Filtered by spec status through the form.
    browser.script("document.getElementById('e-spec').value = 'shadow'; return true;");
    browser.click("form.filters button[type=submit]");
    browser.wait_until("the spec filter", || browser.current_url().contains("spec=shadow"));
    assert_eq!(browser.rows("endpoints"), 1);
    assert_eq!(browser.text("table.endpoints tbody td.endpoint"), "GET /api/v1/internal/debug");
    // Text search.
    browser.open(&format!("{base}/endpoints?q=export"));
    assert_eq!(browser.rows("endpoints"), 1);
    let figures = browser.text("table.endpoints tbody tr td.num.nowrap");
    assert!(figures.contains(" / "), "p50 / p95 / p99: {figures}");

    // From the endpoint to the sessions that called it.
    browser.open(&format!("{base}/endpoints?q=orders%2F"));
    browser.click("a.endpoint-link");
    browser.wait_until("the sessions of the endpoint", || {
        browser.current_url().contains("endpoint=GET+%2Fapi%2Fv1%2Forders%2F%7BorderId%7D")
    });
    assert_eq!(browser.rows("sessions"), 12, "every customer looked at an order");
    let endpoint = browser.script("return document.getElementById('f-endpoint').value;");
    assert_eq!(endpoint, "GET /api/v1/orders/{orderId}", "the filter form shows it");
    let counted = browser.script(
        "return Array.from(document.querySelectorAll('table.sessions tbody tr'))
            .map(row => row.cells[5].textContent);",
    );
    assert!(counted.as_array().unwrap().iter().all(|c| c == "1"), "requests to it: {counted}");

    // The back office's exports: the slow one and the huge one stand out.
    browser.open(&format!("{base}/endpoints?q=export"));
    browser.click("a.endpoint-link");
    browser.wait_until("the sessions of the endpoint", || browser.current_url().contains("export"));
    assert_eq!(browser.rows("sessions"), 1);
    browser.click("a.session-link[title='backoffice']");
    browser.wait_until("the session page", || browser.current_url().contains("/backoffice"));
    assert_eq!(browser.rows("requests"), 24);
    let outliers = browser.script(
        "return Array.from(document.querySelectorAll('table.requests td.outlier')).map(cell => ({
            row: cell.parentElement.cells[0].textContent,
            class: cell.className,
            text: cell.textContent,
            title: cell.title,
            background: getComputedStyle(cell).backgroundColor}));",
    );
    let outliers = outliers.as_array().unwrap();
    assert_eq!(outliers.len(), 2, "{outliers:?}");
    let slow = &outliers[0];
    assert_eq!(slow["row"], "23", "{slow}");
    assert!(slow["class"].as_str().unwrap().contains("duration"), "{slow}");
    assert_eq!(slow["text"], "2350.0");
    assert!(slow["title"].as_str().unwrap().contains("usual (p95) for the endpoint"), "{slow}");
    let large = &outliers[1];
    assert_eq!(large["row"], "24", "{large}");
    assert!(large["class"].as_str().unwrap().contains("size"), "{large}");
    assert_eq!(large["text"], "4800000");
    assert!(large["title"].as_str().unwrap().starts_with("far above"), "{large}");
    for cell in outliers {
        assert_eq!(cell["background"], "rgb(255, 241, 204)", "{cell}");
    }
    // The endpoint cell links back to the sessions of the endpoint, with its spec status.
    let cell = browser.text("table.requests tbody tr:first-child td.endpoint");
    assert!(cell.contains("GET /api/v1/reports/{reportId}/export") && cell.contains("documented"));
}

fn save_screenshot(browser: &Browser) {
    let png = browser.call("GET", "/screenshot", None);
    let png = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let dir = if std::env::var_os("API_SESSIONS_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("endpoints.png"), png).unwrap();
}
