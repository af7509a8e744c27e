//! The UI in a real browser: headless Chromium driven through chromedriver's W3C WebDriver API.
//!
//! Loads the list, applies a filter, opens a session, filters inside it, downloads the CSV,
//! copies the link, drops the in-session filters, and proves that captured `<script>` and
//! `onerror` payloads stay text. (The screenshots of the docs are `browser_filters`'.)
//!
//! Needs Debian's `chromium` and `chromium-driver` (or CHROMIUM and CHROMEDRIVER pointing at
//! them). Without them the test fails, unless API_SESSIONS_SKIP_BROWSER=1 says to skip it.

mod fixtures;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api_sessions_core::record::Record;
use fixtures::*;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Sets `window.__xss` if it ever runs, and tries an `<img onerror>` and an alert as well.
const PAYLOAD: &str =
    "<script>window.__xss='script';alert(1)</script><img src=x onerror=\"window.__xss='img'\">";

fn find_program(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(PathBuf::from(path)).filter(|path| path.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// A WebDriver session.
struct Browser {
    agent: ureq::Agent,
    url: String,
}

impl Browser {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let mut response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self.agent.post(&url).send_json(body.unwrap_or_else(|| json!({}))),
        }
        .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        let status = response.status();
        let value: Value = response.body_mut().with_config().limit(64 << 20).read_json().unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn current_url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap().to_owned()
    }

    fn find_all(&self, css: &str) -> Vec<String> {
        let found =
            self.call("POST", "/elements", Some(json!({"using": "css selector", "value": css})));
        found.as_array().unwrap().iter().map(|e| e[ELEMENT].as_str().unwrap().to_owned()).collect()
    }

    fn find(&self, css: &str) -> String {
        let found = self.find_all(css);
        assert!(!found.is_empty(), "no element matches {css:?} on {}", self.current_url());
        found[0].clone()
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.call("POST", &format!("/element/{element}/click"), None);
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.call("POST", &format!("/element/{element}/clear"), None);
        self.call("POST", &format!("/element/{element}/value"), Some(json!({ "text": text })));
    }

    fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.call("GET", &format!("/element/{element}/text"), None).as_str().unwrap().to_owned()
    }

    fn script(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(json!({ "script": script, "args": [] })))
    }

    fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} on {}",
                self.current_url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn rows(&self, table: &str) -> usize {
        self.find_all(&format!("table.{table} tbody tr")).len()
    }

    /// Whether an alert is open: WebDriver answers "no such alert" otherwise.
    fn alert_open(&self) -> bool {
        let response = self.agent.get(&format!("{}/alert/text", self.url)).call().unwrap();
        response.status().is_success()
    }
}

fn records(b: i64) -> Vec<Record> {
    let mut records = Vec::new();
    let mut n = 0;
    let mut next = |session: &str, minutes: i64| {
        n += 1;
        record(session, n, b + minutes * MINUTE + n as i64)
    };
    // A session worth a screenshot: login, browsing, billing, then an injection attempt.
    let steps: [(&str, &str, u16, &[&str]); 12] = [
        ("POST", "/api/v1/login", 200, &["auth"]),
        ("GET", "/api/v1/account", 200, &["account_management"]),
        ("GET", "/api/v1/products", 200, &[]),
        ("GET", "/api/v1/products/42", 200, &[]),
        ("PUT", "/api/v1/cart/items/42", 200, &[]),
        ("GET", "/api/v1/cart", 200, &[]),
        ("POST", "/api/v1/orders", 201, &["billing"]),
        ("POST", "/api/v1/payments", 402, &["billing"]),
        ("POST", "/api/v1/payments", 201, &["billing"]),
        ("GET", "/api/v1/orders/1001", 200, &[]),
        ("GET", "/api/v1/orders/1002", 404, &[]),
        ("GET", "/api/v1/products", 403, &[]),
    ];
    for (i, (method, path, status, flows)) in steps.iter().enumerate() {
        let mut r = next("5f3a9c0d2b7e4e81a6c2d9b0e1f4a7c3", i as i64 * 3);
        r.method = method.to_string();
        r.path = path.to_string();
        r.status = *status;
        r.flows = flows.iter().map(|f| f.to_string()).collect();
        r.duration_ms = 3.0 + (i * 7 % 40) as f64;
        r.response_bytes = 400 + (i as u64 * 977 % 9000);
        r.ip = if i < 9 { "203.0.113.24" } else { "198.51.100.7" }.into();
        if i > 0 {
            r.user = Some("alice".into());
            r.role = Some("customer".into());
        }
        r.params = vec![param("token", "hmac-sha256:5be0c2a1")];
        if *path == "/api/v1/orders" {
            r.params.push(param("order_id", "ord-1001"));
        }
        if i == 11 {
            r.attack = attack(
                "sqli",
                "GET /api/v1/products?id=42%27%20OR%201%3D1-- HTTP/1.1",
                &[("Host", "shop.example.com"), ("User-Agent", "sqlmap/1.8"), ("Cookie", "sid=…")],
                "",
            );
        }
        records.push(r);
    }
    // Another session of alice's, and a few others.
    for (session, user) in [("b-bob", "bob"), ("c-carol", "carol"), ("d-alice", "alice")] {
        for k in 0..3 {
            let mut r = next(session, 40 + k);
            r.user = Some(user.into());
            records.push(r);
        }
    }
    // Many calls of one documented endpoint, one of them far slower than the others.
    for k in 0..25 {
        let mut r = next("f-items", 60 + k / 5);
        r.path = format!("/api/v1/items/{}", 500 + k);
        r.duration_ms = if k == 17 { 900.0 } else { 8.0 };
        records.push(r);
    }
    // Everything an attacker controls, carrying the payload.
    for k in 0..2 {
        let mut r = next("e-evil", 50 + k);
        r.path = format!("/search/{PAYLOAD}");
        r.user = Some(PAYLOAD.into());
        r.user_agent = Some(PAYLOAD.into());
        r.params = vec![param("q", PAYLOAD)];
        r.method = if k == 0 { "GET" } else { "POST" }.into();
        r.attack = attack(
            "xss",
            &format!("GET /search?q={PAYLOAD} HTTP/1.1"),
            &[("X-Payload", PAYLOAD)],
            PAYLOAD,
        );
        records.push(r);
    }
    records
}

#[test]
fn the_ui_works_in_a_real_browser() {
    let chromium = find_program("CHROMIUM", &["chromium", "chromium-browser", "google-chrome"]);
    let driver = find_program("CHROMEDRIVER", &["chromedriver"]);
    let (chromium, driver) = match (chromium, driver) {
        (Some(chromium), Some(driver)) => (chromium, driver),
        _ if std::env::var_os("API_SESSIONS_SKIP_BROWSER").is_some_and(|v| v == "1") => {
            // Straight to stderr: the test harness hides what passing tests print.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: the browser test (chromium or chromedriver not found, \
                 API_SESSIONS_SKIP_BROWSER=1)"
            );
            return;
        }
        _ => panic!(
            "the browser test needs chromium and chromedriver (Debian: apt-get install chromium \
             chromium-driver; or set CHROMIUM and CHROMEDRIVER); set API_SESSIONS_SKIP_BROWSER=1 \
             to skip it"
        ),
    };
    let work = tempfile::tempdir().unwrap();
    let downloads = work.path().join("downloads");
    std::fs::create_dir(&downloads).unwrap();

    // The explorer, with the records posted like the module would.
    let spec = work.path().join("shop.yaml");
    std::fs::write(
        &spec,
        "openapi: 3.0.3\npaths:\n  /api/v1/items/{itemId}:\n    get: {}\n  /api/v1/stock:\n    get: {}\n",
    )
    .unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_api-sessions"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(work.path().join("browser.db"))
        .arg("--openapi")
        .arg(&spec)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let _server = Killed(server);
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines.next().expect("api-sessions exited").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().trim_end_matches('/').to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let b = fixtures::base();
    let records = records(b);
    let mut posted =
        agent().post(&format!("{base}/v1/records")).send(&ndjson(&records)[..]).unwrap();
    let report: Value = posted.body_mut().read_json().unwrap();
    assert_eq!(report["accepted"], records.len(), "{report}");

    let port = free_port();
    let _driver = Killed(
        Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", driver.display())),
    );
    let driver_url = format!("http://127.0.0.1:{port}");
    let agent = agent();
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.get(&format!("{driver_url}/status")).call().is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let capabilities = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", "--window-size=1360,2200",
                format!("--user-data-dir={}", work.path().join("profile").display()),
            ],
            "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false
            }
        }
    }}});
    let mut created =
        agent.post(&format!("{driver_url}/session")).send_json(&capabilities).unwrap();
    let created: Value = created.body_mut().read_json().unwrap();
    let session = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("chromedriver refused the session: {created}"))
        .to_owned();
    let browser = Browser { agent: agent.clone(), url: format!("{driver_url}/session/{session}") };

    // The list, then a global filter applied through the form.
    browser.open(&format!("{base}/"));
    assert_eq!(browser.rows("sessions"), 6);
    browser.type_into("#f-user", "alice");
    browser.click("form.filters button[type=submit]");
    browser.wait_until("the user filter", || browser.current_url().contains("user=alice"));
    assert_eq!(browser.rows("sessions"), 2);

    // Open the session; it shares the filter.
    browser.click("a.session-link[title='5f3a9c0d2b7e4e81a6c2d9b0e1f4a7c3']");
    browser.wait_until("the session page", || browser.current_url().contains("/sessions/5f3a"));
    assert!(browser.current_url().contains("user=alice"));
    assert_eq!(browser.rows("requests"), 12);
    assert_eq!(
        browser.find_all("section.charts svg").len(),
        4,
        "method, status, IP, attack charts"
    );
    assert!(browser.find_all("figure.timeline svg rect").len() >= 2, "the timeline has bars");
    assert!(browser.text("section.flows").contains("billing"));
    assert!(browser.text("details.request[open] pre.raw").contains("sqlmap/1.8"));

    // An in-session filter, then "Copy link", "Download CSV" and "Show all requests".
    browser.script("document.getElementById('f-method').value = 'POST'; return true;");
    browser.click("form.filters button[type=submit]");
    browser.wait_until("the method filter", || browser.current_url().contains("method=POST"));
    assert_eq!(browser.rows("requests"), 4);
    let share = browser.script("return document.getElementById('share-link').value;");
    let share = share.as_str().unwrap();
    assert!(
        share.starts_with(&base) && share.contains("user=alice") && share.contains("method=POST"),
        "{share}"
    );
    browser.click("#copy-link");
    browser.wait_until("Copy link to answer", || browser.text("#copy-link") == "Copied");

    browser.click("#download-csv");
    let csv_path = downloads.join("session-5f3a9c0d2b7e4e81a6c2d9b0e1f4a7c3.csv");
    browser.wait_until("the CSV download", || csv_path.is_file());
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let rows: Vec<&str> = csv.trim_end().split("\r\n").collect();
    assert!(rows[0].starts_with("time,session_id,request_id,node,method,path,status"));
    assert_eq!(rows.len(), 1 + 4, "the CSV has the filtered requests: {csv}");
    assert!(rows[1..].iter().all(|row| row.contains(",POST,")), "{csv}");

    browser.click("#show-all");
    browser.wait_until("all requests", || !browser.current_url().contains("method="));
    assert!(browser.current_url().contains("user=alice"), "the global filter stays");
    assert_eq!(browser.rows("requests"), 12);

    // Captured payloads stay text: nothing ran, nothing was injected, the text is visible.
    browser.open(&format!("{base}/sessions/e-evil"));
    browser.wait_until("the hostile session", || browser.rows("requests") == 2);
    let checks = browser.script(
        "return {
            ran: window.__xss === undefined ? null : window.__xss,
            images: document.querySelectorAll('img').length,
            scripts: Array.from(document.scripts).map(s => s.getAttribute('src')),
            shown: document.body.innerText.split('<script>window.__xss').length - 1
        };",
    );
    assert_eq!(checks["ran"], Value::Null, "a payload ran: {checks}");
    assert_eq!(checks["images"], 0, "a payload became an element: {checks}");
    assert_eq!(checks["scripts"], json!(["/static/app.js"]), "{checks}");
    assert!(checks["shown"].as_u64().unwrap() >= 4, "the payload is shown as text: {checks}");
    assert!(!browser.alert_open(), "an alert opened");
    browser.open(&format!("{base}/?q=%3Cscript%3E"));
    assert_eq!(browser.rows("sessions"), 1);
    assert!(!browser.alert_open());

    // The endpoints page, reached from the header, filtered by spec status through the form.
    browser.click("header.top nav.sections a[href='/endpoints']");
    browser.wait_until("the endpoints page", || browser.current_url().ends_with("/endpoints"));
    assert!(browser.rows("endpoints") >= 10, "every endpoint is listed");
    assert!(browser.text("table.endpoints").contains("GET /api/v1/orders/{id}"));
    browser.script("document.getElementById('e-spec').value = 'documented'; return true;");
    browser.click("form.filters button[type=submit]");
    browser.wait_until("the spec filter", || browser.current_url().contains("spec=documented"));
    assert_eq!(browser.rows("endpoints"), 1);
    assert_eq!(browser.text("table.endpoints tbody td.endpoint"), "GET /api/v1/items/{itemId}");
    assert_eq!(browser.text("table.endpoints tbody .badge.spec"), "documented");
    browser.open(&format!("{base}/endpoints?spec=unused"));
    assert_eq!(browser.text("table.endpoints tbody td.endpoint"), "GET /api/v1/stock");
    // Sorting by a column header, then back to the documented endpoint.
    browser.open(&format!("{base}/endpoints"));
    browser.click("table.endpoints th a.sort[href*='sort=requests']");
    browser.wait_until("the sorted list", || browser.current_url().contains("sort=requests"));
    assert_eq!(
        browser.text("table.endpoints tbody tr:last-child td.endpoint"),
        "GET /api/v1/items/{itemId}",
        "ascending after a click on the default sort"
    );
    browser.open(&format!("{base}/endpoints?spec=documented"));

    // The endpoint links to the sessions that called it, whose request is highlighted.
    browser.click("a.endpoint-link");
    browser.wait_until("the sessions of the endpoint", || {
        browser.current_url().contains("endpoint=GET+%2Fapi%2Fv1%2Fitems%2F%7BitemId%7D")
    });
    assert_eq!(browser.rows("sessions"), 1);
    browser.click("a.session-link[title='f-items']");
    browser.wait_until("the session page", || browser.current_url().contains("/sessions/f-items"));
    assert_eq!(browser.rows("requests"), 25);
    let outliers = browser.find_all("table.requests td.outlier");
    assert_eq!(outliers.len(), 1, "one request is far above the endpoint's usual time");
    assert_eq!(browser.text("table.requests td.outlier.duration"), "900.0");
    let highlighted = browser.script(
        "const cell = document.querySelector('table.requests td.outlier');
         return {background: getComputedStyle(cell).backgroundColor, title: cell.title};",
    );
    assert_eq!(highlighted["background"], "rgb(255, 241, 204)", "{highlighted}");
    assert!(highlighted["title"].as_str().unwrap().contains("usual (p95)"), "{highlighted}");
    assert!(browser.text("table.requests td.endpoint").contains("documented"));

    browser.call("DELETE", "", None);
}
