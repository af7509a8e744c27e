//! Headless Chromium through chromedriver's W3C WebDriver API, and the explorer as a process,
//! for the tests that drive the UI in a real browser.
//!
//! Needs Debian's `chromium` and `chromium-driver` (or CHROMIUM and CHROMEDRIVER pointing at
//! them). Without them a test fails, unless API_SESSIONS_SKIP_BROWSER=1 says to skip it.

#![allow(dead_code)] // Each test crate uses its own part of this file.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(PathBuf::from(path)).filter(|path| path.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A child process, killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// `api-sessions serve` on a free loopback port with `args` and `env`; its base URL, without
/// the final `/`.
pub fn explorer(db: &Path, args: &[&str], env: &[(&str, &str)]) -> (Killed, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_api-sessions"));
    command.args(["serve", "--listen", "127.0.0.1:0", "--db"]).arg(db).args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut server = command.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = server.stderr.take().unwrap();
    let server = Killed(server);
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines.next().expect("api-sessions exited").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().trim_end_matches('/').to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (server, base)
}

/// A WebDriver session in headless Chromium, with chromedriver kept alive beside it.
pub struct Browser {
    agent: ureq::Agent,
    url: String,
    _driver: Killed,
}

impl Browser {
    /// A new browser, or `None` when the test is to be skipped (after saying so).
    pub fn start(profile: &Path, downloads: Option<&Path>) -> Option<Browser> {
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
                return None;
            }
            _ => panic!(
                "the browser test needs chromium and chromedriver (Debian: apt-get install \
                 chromium chromium-driver; or set CHROMIUM and CHROMEDRIVER); set \
                 API_SESSIONS_SKIP_BROWSER=1 to skip it"
            ),
        };
        let port = free_port();
        let driver_process = Killed(
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
        let mut prefs = json!({});
        if let Some(downloads) = downloads {
            prefs = json!({
                "download.default_directory": downloads,
                "download.prompt_for_download": false
            });
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    "--disable-dev-shm-usage", "--window-size=1360,2200",
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": prefs
            }
        }}});
        let mut created =
            agent.post(&format!("{driver_url}/session")).send_json(&capabilities).unwrap();
        let created: Value = created.body_mut().read_json().unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver refused the session: {created}"))
            .to_owned();
        Some(Browser {
            agent,
            url: format!("{driver_url}/session/{session}"),
            _driver: driver_process,
        })
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
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

    pub fn open(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn current_url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap().to_owned()
    }

    pub fn find_all(&self, css: &str) -> Vec<String> {
        let found =
            self.call("POST", "/elements", Some(json!({"using": "css selector", "value": css})));
        found.as_array().unwrap().iter().map(|e| e[ELEMENT].as_str().unwrap().to_owned()).collect()
    }

    pub fn find(&self, css: &str) -> String {
        let found = self.find_all(css);
        assert!(!found.is_empty(), "no element matches {css:?} on {}", self.current_url());
        found[0].clone()
    }

    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.call("POST", &format!("/element/{element}/click"), None);
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.call("POST", &format!("/element/{element}/clear"), None);
        self.call("POST", &format!("/element/{element}/value"), Some(json!({ "text": text })));
    }

    pub fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.call("GET", &format!("/element/{element}/text"), None).as_str().unwrap().to_owned()
    }

    pub fn script(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(json!({ "script": script, "args": [] })))
    }

    /// The cookies the browser holds for the current page, as WebDriver reports them (with
    /// `httpOnly` and `sameSite`).
    pub fn cookies(&self) -> Vec<Value> {
        self.call("GET", "/cookie", None).as_array().unwrap().clone()
    }

    pub fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
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

    pub fn rows(&self, table: &str) -> usize {
        self.find_all(&format!("table.{table} tbody tr")).len()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.agent.delete(&self.url).call();
    }
}
