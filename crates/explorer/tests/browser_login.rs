//! The login form in a real browser (see `webdriver`): an explorer started with a UI token sends
//! a browser to `/login` and back to the page it asked for, refuses a wrong token, keeps the
//! login in an `HttpOnly`, `SameSite=Strict` cookie that scripts cannot read, is not logged
//! out by a form on another site, and logs out with "Log out".

mod fixtures;
mod webdriver;

use fixtures::*;
use serde_json::Value;
use webdriver::{agent, explorer, Browser};

const UI_TOKEN: &str = "browser-test-ui-token-0123456789";
const INGEST_TOKEN: &str = "browser-test-ingest-token";
const SESSION: &str = "login-session";

#[test]
fn the_login_form_works_in_a_real_browser() {
    let work = tempfile::tempdir().unwrap();
    // The UI token from the environment, as an operator would keep it out of `ps`.
    let (_server, base) = explorer(
        &work.path().join("login.db"),
        &["--token", INGEST_TOKEN],
        &[("API_SESSIONS_UI_TOKEN", UI_TOKEN)],
    );
    let Some(browser) = Browser::start(&work.path().join("profile"), None) else { return };

    // The exporter's way in needs no login.
    let b = fixtures::base();
    let mut records: Vec<_> = (1..=3).map(|n| record(SESSION, n, b + n as i64 * 1000)).collect();
    records[1].user = Some("alice".into());
    let mut posted = agent()
        .post(&format!("{base}/v1/records"))
        .header("Authorization", &format!("Bearer {INGEST_TOKEN}"))
        .send(&ndjson(&records)[..])
        .unwrap();
    let report: Value = posted.body_mut().read_json().unwrap();
    assert_eq!(report["accepted"], 3, "{report}");

    // A page asked for without a login leads to the form, and back to the page after it.
    let wanted = format!("{base}/sessions/{SESSION}?user=alice");
    browser.open(&wanted);
    browser.wait_until("the login form", || browser.current_url().contains("/login?next="));
    assert_eq!(browser.text("h1"), "Log in");
    assert!(browser.find_all("header form.logout").is_empty());

    browser.type_into("#token", "not the token");
    browser.click("form.login button[type=submit]");
    browser.wait_until("the refusal", || !browser.find_all("p.error").is_empty());
    assert_eq!(browser.text("p.error"), "Wrong token.");
    assert!(browser.current_url().ends_with("/login"), "{}", browser.current_url());

    browser.type_into("#token", UI_TOKEN);
    browser.click("form.login button[type=submit]");
    browser.wait_until("the session page", || browser.current_url() == wanted);
    assert_eq!(browser.rows("requests"), 3);

    let cookies = browser.cookies();
    let login = cookies
        .iter()
        .find(|cookie| cookie["name"] == "api_sessions_login")
        .unwrap_or_else(|| panic!("no login cookie: {cookies:?}"));
    assert_eq!(login["httpOnly"], true, "{login}");
    assert_eq!(login["sameSite"], "Strict", "{login}");
    assert!(!login["value"].as_str().unwrap().contains(UI_TOKEN));
    let readable = browser.script("return document.cookie;");
    assert!(!readable.as_str().unwrap().contains("api_sessions"), "scripts see {readable}");

    // The JSON API answers the logged-in browser too.
    browser.open(&format!("{base}/api/sessions"));
    let listed = browser.script("return document.body.innerText;");
    assert!(listed.as_str().unwrap().contains(SESSION), "{listed}");

    // A form on another page (an opaque origin) that posts to /logout logs nobody out.
    let forged = format!(
        "data:text/html,<form id=f method=post action=\"{base}/logout\"></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    browser.open(&forged);
    browser.wait_until("the forged post", || browser.current_url().starts_with(&base));
    browser.open(&format!("{base}/"));
    assert!(!browser.current_url().contains("/login"), "{}", browser.current_url());
    assert!(!browser.find_all("header form.logout").is_empty(), "still logged in");
    assert_eq!(browser.rows("sessions"), 1);

    browser.click("header form.logout button");
    browser.wait_until("the login form", || browser.current_url().ends_with("/login"));
    browser.open(&format!("{base}/"));
    browser.wait_until("the redirect", || browser.current_url().ends_with("/login"));
    assert!(browser.cookies().iter().all(|cookie| cookie["name"] != "api_sessions_login"));
}
