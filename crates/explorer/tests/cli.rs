//! The `api-sessions` binary: `ingest`, `serve` with `--follow` and `--token`, and the one-line
//! errors people see when something is in the way.

mod fixtures;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fixtures::*;

const BINARY: &str = env!("CARGO_BIN_EXE_api-sessions");

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(BINARY).args(args).current_dir(dir).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Whether a log line (`TIME LEVEL message`) has this level and starts with `message`.
fn logged(text: &str, level: &str, message: &str) -> bool {
    text.lines().any(|line| {
        line.split_once(' ')
            .and_then(|(_time, rest)| rest.trim_start().strip_prefix(level))
            .and_then(|rest| rest.strip_prefix(' '))
            .is_some_and(|rest| rest.starts_with(message))
    })
}

#[test]
fn ingest_loads_files_idempotently_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let b = base();
    let mut data = ndjson(&[record("c", 1, b), record("c", 2, b + 1)]);
    std::fs::write(dir.path().join("good.ndjson"), &data).unwrap();
    data.extend_from_slice(b"{broken\n");
    std::fs::write(dir.path().join("bad.ndjson"), &data).unwrap();

    let first = run(&["ingest", "--db", "x.db", "good.ndjson"], dir.path());
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stderr(&first).contains("good.ndjson: 2 accepted, 0 duplicates, 0 rejected"));
    let again = run(&["ingest", "--db", "x.db", "good.ndjson"], dir.path());
    assert!(again.status.success());
    assert!(stderr(&again).contains("good.ndjson: 0 accepted, 2 duplicates, 0 rejected"));

    let bad = run(&["ingest", "--db", "x.db", "bad.ndjson", "missing.ndjson"], dir.path());
    assert_eq!(bad.status.code(), Some(1));
    let text = stderr(&bad);
    assert!(text.contains("bad.ndjson: 0 accepted, 2 duplicates, 1 rejected"), "{text}");
    assert!(text.contains("bad.ndjson:3: "), "{text}");
    assert!(text.contains("missing.ndjson: read failed"), "{text}");
}

struct Server {
    child: Child,
    base: String,
    log: std::sync::mpsc::Receiver<String>,
}

impl Server {
    fn start(args: &[&str], dir: &Path) -> Server {
        let mut child = Command::new(BINARY)
            .arg("serve")
            .args(args)
            .current_dir(dir)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, log) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = Server { child, base: String::new(), log };
        let line = server.wait_for("listening on ");
        server.base = line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .split('/')
            .take(3)
            .collect::<Vec<_>>()
            .join("/");
        server
    }

    fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!("api-sessions never said {text:?}"),
            }
        }
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let mut response = ureq::get(&format!("{}{path}", self.base)).call().unwrap();
        response.body_mut().read_json().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_follows_a_file_requires_the_token_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let b = base();
    let follow = dir.path().join("module.ndjson");
    std::fs::write(&follow, ndjson(&[record("tail", 1, b)])).unwrap();
    let mut server = Server::start(
        &[
            "--db",
            "s.db",
            "--listen",
            "127.0.0.1:0",
            "--token",
            "t0ken",
            "--retention",
            "36h",
            "--follow",
            follow.to_str().unwrap(),
        ],
        dir.path(),
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = server.get("/api/sessions");
        if listed["sessions"].as_array().unwrap().len() == 1 {
            assert_eq!(listed["sessions"][0]["session_id"], "tail");
            break;
        }
        assert!(Instant::now() < deadline, "the followed file never showed up");
        std::thread::sleep(Duration::from_millis(50));
    }

    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("{}/v1/records", server.base);
    let body = ndjson(&[record("posted", 2, b)]);
    let denied = agent.post(&url).send(&body[..]).unwrap();
    assert_eq!(denied.status(), 401);
    let mut allowed =
        agent.post(&url).header("Authorization", "Bearer t0ken").send(&body[..]).unwrap();
    assert_eq!(allowed.status(), 200);
    let report: serde_json::Value = allowed.body_mut().read_json().unwrap();
    assert_eq!(report["accepted"], 1);

    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    server.wait_for("stopped");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_explains_a_taken_port_and_an_unusable_database() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = run(&["serve", "--db", "a.db", "--listen", &address], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        logged(&text, "ERROR", &format!("cannot listen on {address}: address already in use")),
        "{text}"
    );

    std::fs::write(dir.path().join("garbage.db"), vec![b'x'; 8192]).unwrap();
    for db in ["garbage.db", "."] {
        let output = run(&["serve", "--db", db, "--listen", "127.0.0.1:0"], dir.path());
        assert_eq!(output.status.code(), Some(1), "{db}");
        let text = stderr(&output);
        assert!(logged(&text, "ERROR", &format!("cannot open database \"{db}\": ")), "{text}");
        assert_eq!(text.lines().count(), 1, "one line: {text}");
    }

    let output = run(&["serve", "--retention", "a week"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("invalid retention \"a week\""));
}

#[test]
fn serve_and_ingest_keep_records_in_clickhouse() {
    if fixtures::clickhouse::skipped() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = format!("clickhouse={}", fixtures::clickhouse::database_url());
    let b = base();
    std::fs::write(dir.path().join("loaded.ndjson"), ndjson(&[record("loaded", 1, b)])).unwrap();
    for expected in ["1 accepted, 0 duplicates", "0 accepted, 1 duplicates"] {
        let output = run(&["ingest", "--store", &store, "loaded.ndjson"], dir.path());
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    }

    let mut server = Server::start(&["--store", &store, "--listen", "127.0.0.1:0"], dir.path());
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("{}/v1/records", server.base);
    let body = ndjson(&[record("posted", 2, b + 1000), record("posted", 3, b + 2000)]);
    let mut reply = agent.post(&url).send(&body[..]).unwrap();
    assert_eq!(reply.status(), 200);
    let report: serde_json::Value = reply.body_mut().read_json().unwrap();
    assert_eq!((report["accepted"].as_u64(), report["duplicates"].as_u64()), (Some(2), Some(0)));

    let listed = server.get("/api/sessions");
    let ids: Vec<&str> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["posted", "loaded"]);
    assert_eq!(listed["sessions"][0]["requests"], 2);
    let one = server.get("/api/sessions/posted?method=GET");
    assert_eq!(one["requests"].as_array().unwrap().len(), 2);
    // Nothing was written to a SQLite file on the side.
    assert!(!dir.path().join("api-sessions.db").exists());

    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    server.wait_for("stopped");
    assert!(server.child.wait().unwrap().success());
}

#[test]
fn a_bad_store_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    for (store, message) in [
        ("mysql", "invalid store \"mysql\": use sqlite or clickhouse=URL"),
        ("clickhouse", "invalid store \"clickhouse\": use sqlite or clickhouse=URL"),
        ("clickhouse=127.0.0.1:8123", "invalid ClickHouse URL \"127.0.0.1:8123\": no scheme"),
        ("clickhouse:http://u:pw@h/", "invalid store \"…\""),
    ] {
        let output = run(&["serve", "--store", store], dir.path());
        assert_eq!(output.status.code(), Some(2), "{store}");
        let text = stderr(&output);
        assert!(text.contains(message), "{store}: {text}");
        assert!(!text.contains("pw"), "{text}");
    }

    // Nothing listens there: the store cannot open, and says where it tried.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = format!("clickhouse=http://127.0.0.1:{closed}/?database=x");
    let output = run(&["ingest", "--store", &store, "none.ndjson"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        logged(
            &text,
            "ERROR",
            &format!("cannot open ClickHouse http://127.0.0.1:{closed}/ database x: ")
        ),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "one line: {text}");
}
