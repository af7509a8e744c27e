//! Session intelligence in a real browser (see `webdriver`): the list's risk column and its
//! badges, sorting by risk through the filter form, a signal chip that filters the list, and on
//! a session's page every signal with its detail, its evidence linked and the evidence rows of
//! the request table highlighted; the actor's other sessions.

mod fixtures;
mod webdriver;

use api_sessions_core::record::Record;
use fixtures::*;
use serde_json::Value;
use webdriver::{agent, explorer, Browser};

const BROWSER: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";

/// A content scanner, a credential stuffer, a shopper who browses at a person's pace, and two
/// short later sessions of the shopper's browser (the same actor).
fn traffic(b: i64) -> Vec<Record> {
    let mut records = Vec::new();
    let words = ["admin", ".git/config", "backup.zip", "wp-login.php", ".env", "phpinfo.php"];
    for i in 0..60u64 {
        let mut r = record("scanner", i + 1, b + i as i64 * 50);
        r.path = format!("/{}{}", words[i as usize % words.len()], i);
        r.status = 404;
        r.response_bytes = 153;
        r.ip = "198.51.100.66".into();
        r.user_agent = Some("gobuster/3.6".into());
        records.push(r);
    }
    for i in 0..20u64 {
        let mut r = record("stuffer", 100 + i, b + i as i64 * 700);
        r.method = "POST".into();
        r.path = "/api/v1/login".into();
        r.status = 401;
        r.flows = vec!["auth".into()];
        r.params = vec![param("username", &format!("user{i}@example.net"))];
        r.ip = "203.0.113.99".into();
        r.user_agent = Some("python-requests/2.31".into());
        records.push(r);
    }
    let pages = [
        ("POST", "/api/v1/login", 200),
        ("GET", "/api/v1/products", 200),
        ("GET", "/api/v1/products/7", 200),
        ("PUT", "/api/v1/cart/items/7", 200),
        ("GET", "/api/v1/cart", 200),
        ("POST", "/api/v1/orders", 201),
        ("GET", "/api/v1/orders/1001", 200),
        ("GET", "/api/v1/account", 200),
    ];
    let thinks = [0, 9_000, 31_000, 44_000, 71_000, 130_000, 160_000, 230_000];
    for (i, ((method, path, status), think)) in pages.iter().zip(thinks).enumerate() {
        let mut r = record("shopper", 200 + i as u64, b + think);
        r.method = method.to_string();
        r.path = path.to_string();
        r.status = *status;
        r.ip = "192.0.2.10".into();
        r.user_agent = Some(BROWSER.into());
        r.user = Some("alice".into());
        if i == 0 {
            r.flows = vec!["auth".into()];
        }
        records.push(r);
    }
    for (k, session) in ["shopper-2", "shopper-3"].iter().enumerate() {
        let mut r = record(session, 300 + k as u64, b + 40 * MINUTE + k as i64 * MINUTE);
        r.path = "/api/v1/account".into();
        r.ip = "192.0.2.10".into();
        r.user_agent = Some(BROWSER.into());
        r.user = Some("alice".into());
        records.push(r);
    }
    records
}

/// The sessions of the list in page order, with their risk as shown.
fn listed(browser: &Browser) -> Vec<(String, u64)> {
    let rows = browser.script(
        "return Array.from(document.querySelectorAll('table.sessions tbody tr')).map(row => [
            row.querySelector('a.session-link').title,
            row.querySelector('td .risk').textContent]);",
    );
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| (row[0].as_str().unwrap().to_owned(), row[1].as_str().unwrap().parse().unwrap()))
        .collect()
}

#[test]
fn risk_and_signals_work_in_a_real_browser() {
    let work = tempfile::tempdir().unwrap();
    let (_server, base) = explorer(&work.path().join("detect.db"), &[], &[]);
    let Some(browser) = Browser::start(&work.path().join("profile"), None) else { return };
    let records = traffic(fixtures::base());
    let mut posted =
        agent().post(&format!("{base}/v1/records")).send(&ndjson(&records)[..]).unwrap();
    let report: Value = posted.body_mut().read_json().unwrap();
    assert_eq!(report["accepted"], records.len(), "{report}");

    // The list has a risk column; the bots' badges stand out, the people's do not.
    browser.open(&format!("{base}/"));
    assert_eq!(browser.rows("sessions"), 5);
    let headers =
        browser.script("return document.querySelector('table.sessions thead').textContent;");
    let headers = headers.as_str().unwrap();
    assert!(headers.contains("Risk") && headers.contains("Signals"), "{headers}");
    let before = listed(&browser);
    let risk = |id: &str| before.iter().find(|(listed, _)| listed == id).unwrap().1;
    assert_eq!(risk("scanner"), 100, "{before:?}");
    assert!(risk("stuffer") >= 50, "{before:?}");
    for person in ["shopper", "shopper-2", "shopper-3"] {
        assert!(risk(person) < 50, "{person}: {before:?}");
    }
    let scanner_row = "table.sessions tbody tr:has(a.session-link[title='scanner'])";
    assert_eq!(browser.find_all(&format!("{scanner_row} .risk.high")).len(), 1);
    let chips = browser.text(&format!("{scanner_row} td.signals"));
    assert!(chips.contains("path_scan"), "{chips}");
    let shopper_row = "table.sessions tbody tr:has(a.session-link[title='shopper'])";
    assert!(browser.find_all(&format!("{shopper_row} td.signals .chip")).is_empty());

    // Sorted by risk through the form: every bot above every person, highest first.
    browser.script("document.getElementById('f-sort').value = 'risk'; return true;");
    browser.click("form.filters button[type=submit]");
    browser.wait_until("the sort by risk", || browser.current_url().contains("sort=risk"));
    let sorted = listed(&browser);
    assert_eq!(sorted.len(), 5);
    let risks: Vec<u64> = sorted.iter().map(|(_, risk)| *risk).collect();
    assert!(risks.windows(2).all(|w| w[0] >= w[1]), "{sorted:?}");
    let mut top: Vec<&str> = sorted[..2].iter().map(|(id, _)| id.as_str()).collect();
    top.sort_unstable();
    assert_eq!(top, ["scanner", "stuffer"], "{sorted:?}");
    // Ascending puts them last.
    browser.script("document.getElementById('f-order').value = 'asc'; return true;");
    browser.click("form.filters button[type=submit]");
    browser.wait_until("the ascending order", || browser.current_url().contains("order=asc"));
    let ascending = listed(&browser);
    assert_eq!(ascending[4].1, 100, "{ascending:?}");

    // A signal chip lists the sessions that show it.
    browser.open(&format!("{base}/"));
    browser.click(&format!("{scanner_row} td.signals a.chip[href='/?signal=path_scan']"));
    browser.wait_until("the signal filter", || browser.current_url().contains("signal=path_scan"));
    assert_eq!(listed(&browser).iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["scanner"]);

    // The scanner's page: the risk, every signal with its measured figure, and its evidence.
    browser.click("a.session-link[title='scanner']");
    browser.wait_until("the session page", || browser.current_url().contains("/sessions/scanner"));
    assert_eq!(browser.text("section.signals h2 .risk"), "100");
    let signals = browser.script(
        "return Array.from(document.querySelectorAll('table.signals tbody tr')).map(row => ({
            name: row.querySelector('.chip').textContent,
            finding: row.classList.contains('finding'),
            detail: row.cells[2].textContent,
            evidence: Array.from(row.querySelectorAll('td.evidence a'))
                .map(a => [a.title, a.getAttribute('href')])}));",
    );
    let signals = signals.as_array().unwrap();
    let scan = signals.iter().find(|s| s["name"] == "path_scan").expect("path_scan is shown");
    assert_eq!(scan["finding"], true, "{scan}");
    assert_eq!(scan["detail"], "60 distinct endpoints answered 404", "{scan}");
    let evidence = scan["evidence"].as_array().unwrap();
    assert_eq!(evidence.len(), 5, "{scan}");
    assert_eq!(evidence[0][0], "scanner-req-1");
    assert_eq!(
        evidence[0][1], "#request-scanner-req-1",
        "evidence on this page links to its request"
    );
    let client = signals.iter().find(|s| s["name"] == "automation_client").expect("the client");
    assert!(client["detail"].as_str().unwrap().contains("gobuster"), "{client}");

    // The evidence rows of the request table are highlighted and say what they show.
    let rows = browser.script(
        "return Array.from(document.querySelectorAll('table.requests tbody tr.evidence'))
            .map(row => ({
                n: row.cells[0].textContent,
                signals: row.dataset.signals,
                background: getComputedStyle(row.cells[1]).backgroundColor}));",
    );
    let rows = rows.as_array().unwrap();
    assert!(rows.len() >= 5, "{rows:?}");
    let first = rows.iter().find(|row| row["n"] == "1").expect("request 1 is evidence");
    assert!(first["signals"].as_str().unwrap().contains("path_scan"), "{first}");
    assert_eq!(first["background"], "rgb(255, 248, 225)", "{first}");
    let plain = browser.script(
        "const row = document.querySelector('table.requests tbody tr:not(.evidence)');
         return row ? getComputedStyle(row.cells[1]).backgroundColor : null;",
    );
    assert_ne!(plain, "rgb(255, 248, 225)", "rows that show nothing are not highlighted");
    browser.click("table.signals td.evidence a[title='scanner-req-1']");
    browser.wait_until("the evidence's request", || {
        browser.current_url().ends_with("#request-scanner-req-1")
    });
    assert!(browser.text("details#request-scanner-req-1 summary").contains("/admin0"));

    // The stuffer's refused logins, and the shopper's page: no signal, the actor's sessions.
    browser.open(&format!("{base}/sessions/stuffer"));
    let failures = browser.text("table.signals tbody tr.finding");
    assert!(failures.contains("auth_failures") && failures.contains("20 refused logins"));
    browser.open(&format!("{base}/sessions/shopper"));
    assert!(browser.text("section.signals").contains("No signal"));
    assert!(browser.find_all("table.requests tbody tr.evidence").is_empty());
    let actor = browser.text("section.actor");
    assert!(actor.contains("192.0.2.10") && actor.contains("2 other sessions"), "{actor}");
    assert_eq!(browser.find_all("section.actor ul.actor-sessions a").len(), 2);
    browser.click("section.actor a[href='/sessions/shopper-2']");
    browser.wait_until("the actor's session", || browser.current_url().ends_with("/shopper-2"));
}
