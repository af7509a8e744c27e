//! Blocking in a real browser (see `webdriver`): Block on a session's page with a duration and a
//! reason, the session's block state, the Blocks page with who blocked what, when and why, and
//! Unblock; the module's document follows each step.

mod fixtures;
mod webdriver;

use fixtures::*;
use serde_json::Value;
use webdriver::{agent, explorer, Browser};

const SESSION: &str = "a91f0c3e5d7b2e4f6a8c0d1e3f5a7b9c";
const KEY: &str = "7c0b9e2a41d35f68b2e4a9c1d0f37e5b";

fn document(base: &str) -> Value {
    let mut reply = agent().get(&format!("{base}/v1/denylist")).call().unwrap();
    reply.body_mut().read_json().unwrap()
}

#[test]
fn block_and_unblock_in_a_real_browser() {
    let work = tempfile::tempdir().unwrap();
    let (_server, base) = explorer(&work.path().join("block.db"), &[], &[]);
    let Some(browser) = Browser::start(&work.path().join("profile"), None) else { return };
    let b = fixtures::base();
    let records: Vec<_> = (0..25u64)
        .map(|i| {
            let mut r = record(SESSION, i + 1, b + i as i64 * 800);
            r.key_hash = KEY.into();
            r.method = "POST".into();
            r.path = "/api/v1/login".into();
            r.status = 401;
            r.flows = vec!["auth".into()];
            r.user_agent = Some("python-requests/2.31".into());
            r
        })
        .collect();
    let mut posted =
        agent().post(&format!("{base}/v1/records")).send(&ndjson(&records)[..]).unwrap();
    let report: Value = posted.body_mut().read_json().unwrap();
    assert_eq!(report["accepted"], 25, "{report}");

    // Block, from the session's page, for a day.
    browser.open(&format!("{base}/sessions/{SESSION}"));
    assert!(browser.text("section.block").contains("Not blocked"));
    browser.script("document.getElementById('block-ttl').value = '24h'; return true;");
    browser.type_into("#block-reason", "credential stuffing <script>x</script>");
    browser.click("#block-session");
    browser.wait_until("the blocked state", || !browser.find_all("p.blocked-state").is_empty());
    assert!(browser.current_url().ends_with(&format!("/sessions/{SESSION}#block")));
    let state = browser.text("p.blocked-state");
    assert!(state.contains("blocked") && state.contains("by ui"), "{state}");
    assert!(state.contains("credential stuffing <script>x</script>"), "the reason is text");
    let served = document(&base);
    assert_eq!(served["version"], 1);
    assert_eq!(served["entries"][0]["key_hash"], KEY);
    assert_eq!(served["entries"][0]["reason"], "credential stuffing <script>x</script>");
    let expires = served["entries"][0]["expires"].as_str().unwrap();
    let ends = api_sessions_core::time::Millis::parse(expires).unwrap().0;
    let day = api_sessions_core::time::Millis::now().0 + DAY;
    assert!((day - 60_000..=day).contains(&ends), "{expires}");

    // The Blocks page, from the header: who blocked what, when and why.
    browser.click("header.top nav.sections a[href='/blocks']");
    browser.wait_until("the Blocks page", || browser.current_url().ends_with("/blocks"));
    assert_eq!(browser.rows("blocks"), 1);
    let row = format!("table.blocks tr[data-key='{KEY}']");
    assert_eq!(browser.text(&format!("{row} td.by")), "ui");
    assert!(browser.text(&format!("{row} td.reason")).starts_with("credential stuffing"));
    assert_eq!(
        browser.find_all(&format!("{row} a[href='/sessions/{SESSION}']")).len(),
        1,
        "the session it was blocked from"
    );
    assert_eq!(browser.rows("audit"), 1);

    // Unblock.
    browser.click(&format!("{row} form.unblock button"));
    browser.wait_until("the unblock", || browser.find_all("table.blocks").is_empty());
    assert!(browser.text("p.empty").starts_with("Nothing is blocked"));
    assert_eq!(browser.rows("audit"), 2);
    assert_eq!(browser.text("table.audit tbody tr:first-child td.action"), "unblock");
    let served = document(&base);
    assert_eq!(served["version"], 2);
    assert_eq!(served["entries"], Value::Array(vec![]));

    // Back on the session's page it can be blocked again.
    browser.open(&format!("{base}/sessions/{SESSION}"));
    assert!(browser.find_all("p.blocked-state").is_empty());
    assert_eq!(browser.find_all("#block-session").len(), 1);
}
