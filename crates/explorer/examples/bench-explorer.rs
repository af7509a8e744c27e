//! Benchmark of the explorer at scale; run by `scripts/bench-explorer`.
//!
//! 1. Generates N realistic records (default 1,000,000) over the last six days: tens of
//!    thousands of sessions of very different lengths (people and a few bots), users and
//!    roles, business flows, parameters, about one request in 200 malicious with its full
//!    content. The bots are of six kinds, each doing the abuse one signal is for (a flood, a
//!    credential stuffer, a content scanner, an id enumerator, an SMS pumper, a steady
//!    scraper). Besides the shop, eight service hosts of 1,000 endpoints each, and the paths
//!    the scanners guess, make some 10,000 endpoints. The module's own writer
//!    (`Record::write_ndjson`) produces the NDJSON.
//! 2. Ingest through both real paths, each into a fresh database: `api-sessions ingest FILE`
//!    as it is, with `--detect off`, and with a `--baseline` binary if given (one built from a
//!    revision without endpoint statistics, which cannot be switched off), with each run's
//!    peak resident memory and the detector's stored state; and `POST /v1/records` to
//!    `api-sessions serve` in batches of 512 records (the module's default batch) from 8
//!    concurrent senders (nginx workers of a few nodes).
//! 3. Latency of `GET /api/sessions` (first page, next and previous pages, each with its exact
//!    total) per filter, per sort, by risk and by signal, of a session page, and of
//!    `GET /api/endpoints` per sort and filter, p50 and p95 over varied values, against the
//!    served database.
//!
//! Usage: bench-explorer [--records N] [--queries N] [--senders N] [--binary PATH] [--dir DIR]
//!                       [--skip-cli] [--baseline PATH] [--rounds N] [--reuse]
//!                       [--store sqlite|clickhouse|clickhouse=URL]
//!
//! `--skip-cli` leaves out the `ingest` runs of step 2 and `--queries 0` step 3, to measure or
//! profile one path alone. `--reuse` queries the database an earlier run left in `--dir`
//! instead of posting the records again, to compare the queries of several binaries on one
//! database. `--rounds N` repeats the `ingest` runs N times, in turn, and
//! reports the best of each.
//!
//! `--store clickhouse=URL` serves from that ClickHouse database (which must hold no records,
//! but with `--reuse`) instead of a SQLite file; `--store clickhouse` starts a
//! `clickhouse-server` of its own on loopback, its configuration and data in `--dir`
//! (`clickhouse/`), as the tests do (API_SESSIONS_CLICKHOUSE_SERVER names another program than
//! Debian's `/usr/sbin/clickhouse-server`). Either way step 2 posts the records to the served
//! explorer only: the `ingest` runs and the detector's state are SQLite's.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../tests/fixtures/clickhouse/config.rs"]
mod clickhouse_config;

use api_sessions_core::record::{Attack, AttackRequest, Param, ParamKind, Record, SCHEMA_VERSION};
use api_sessions_core::time::Millis;

const BATCH: usize = 512;
const DAY_MS: i64 = 86_400_000;

/// splitmix64: small, fast and the same on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_thousand: u64) -> bool {
        self.below(1000) < per_thousand
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn hex(value: u64, salt: u64) -> String {
    let mut rng = Rng::new(value.wrapping_mul(31).wrapping_add(salt));
    format!("{:016x}{:016x}", rng.next(), rng.next())
}

/// One planned session: who, from where, how long.
struct Plan {
    start: i64,
    requests: u32,
    mean_gap_ms: u64,
    actor: u64,
    user: Option<u32>,
    role: &'static str,
    ip: String,
    node: usize,
    pid: u32,
    bot: Option<Bot>,
}

/// What a bot session does, each the kind of abuse one signal is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bot {
    /// Fast random requests across the API (`rate`).
    Flood,
    /// Logins with stolen credentials, nearly all refused (`auth_failures`).
    CredentialStuffer,
    /// Guessed paths, nearly all not found (`path_scan`).
    ContentScanner,
    /// Walks order ids one after another (`enumeration`).
    Enumerator,
    /// One-time passwords sent again and again (`flow_abuse` on `sms_gateway`).
    SmsPumper,
    /// Product pages at a steady pace with a browser's User-Agent (`regular_timing`).
    Scraper,
}

const BOTS: [Bot; 6] = [
    Bot::Flood,
    Bot::CredentialStuffer,
    Bot::ContentScanner,
    Bot::Enumerator,
    Bot::SmsPumper,
    Bot::Scraper,
];

const ROLES: [&str; 4] = ["customer", "customer", "support", "admin"];
const NODES: [&str; 4] = ["web-1", "web-2", "web-3", "web-4"];
const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "okhttp/4.12.0",
    "MyShop/5.2 (iPhone; iOS 17.5)",
    "python-requests/2.32.3",
];

struct Endpoint {
    method: &'static str,
    path: &'static str,
    flows: &'static [&'static str],
}

const ENDPOINTS: [Endpoint; 14] = [
    Endpoint { method: "GET", path: "/api/v1/products/{}", flows: &[] },
    Endpoint { method: "GET", path: "/api/v1/products", flows: &[] },
    Endpoint { method: "GET", path: "/api/v1/orders/{}", flows: &[] },
    Endpoint { method: "POST", path: "/api/v1/orders", flows: &["billing"] },
    Endpoint { method: "GET", path: "/api/v1/cart", flows: &[] },
    Endpoint { method: "PUT", path: "/api/v1/cart/items/{}", flows: &[] },
    Endpoint { method: "GET", path: "/api/v1/account", flows: &["account_management"] },
    Endpoint { method: "PATCH", path: "/api/v1/account/profile", flows: &["account_management"] },
    Endpoint { method: "POST", path: "/api/v1/payments", flows: &["billing"] },
    Endpoint { method: "POST", path: "/api/v1/otp/send", flows: &["sms_gateway"] },
    Endpoint { method: "POST", path: "/api/v1/assistant/chat", flows: &["ai_llm"] },
    Endpoint { method: "GET", path: "/admin/users/{}", flows: &["admin"] },
    Endpoint { method: "POST", path: "/graphql", flows: &[] },
    Endpoint { method: "DELETE", path: "/api/v1/cart/items/{}", flows: &[] },
];

/// Hosts of many small services besides the shop, each with AREAS × RESOURCES endpoints: with
/// the shop's own and the paths the scanners guess, some 10,000 endpoints in all.
const CATALOG_HOSTS: u64 = 8;
const AREAS: [&str; 20] = [
    "catalog",
    "inventory",
    "shipping",
    "billing",
    "accounts",
    "reports",
    "search",
    "reviews",
    "loyalty",
    "promotions",
    "returns",
    "warehouse",
    "suppliers",
    "pricing",
    "analytics",
    "support",
    "marketing",
    "partners",
    "media",
    "settings",
];
const RESOURCES: [&str; 50] = [
    "items",
    "lists",
    "tags",
    "notes",
    "labels",
    "groups",
    "members",
    "invites",
    "exports",
    "imports",
    "jobs",
    "tasks",
    "events",
    "alerts",
    "rules",
    "policies",
    "quotas",
    "limits",
    "regions",
    "zones",
    "stores",
    "carts",
    "wishlists",
    "coupons",
    "vouchers",
    "bundles",
    "variants",
    "images",
    "videos",
    "documents",
    "templates",
    "webhooks",
    "channels",
    "messages",
    "threads",
    "tickets",
    "comments",
    "ratings",
    "badges",
    "levels",
    "rewards",
    "stats",
    "metrics",
    "summaries",
    "snapshots",
    "schedules",
    "calendars",
    "locations",
    "addresses",
    "contacts",
];
/// What content scanners guess, followed by a word of RESOURCES.
const SCANNED: [&str; 40] = [
    "admin",
    "backup",
    "old",
    "test",
    "dev",
    "staging",
    "wp-admin",
    "phpmyadmin",
    "config",
    "private",
    "secret",
    "tmp",
    "logs",
    "debug",
    "console",
    "server-status",
    "cgi-bin",
    "uploads",
    "files",
    "db",
    "sql",
    "dump",
    "archive",
    "install",
    "setup",
    "api-docs",
    "swagger",
    "actuator",
    "git",
    "env",
    "cache",
    "internal",
    "legacy",
    "beta",
    "portal",
    "manage",
    "system",
    "vendor",
    "assets",
    "include",
];

const ATTACKS: [(&str, &str); 4] = [
    ("sqli", "/api/v1/products?id=1%27%20OR%201%3D1--"),
    ("xss", "/api/v1/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
    ("path_traversal", "/static/..%2F..%2Fetc%2Fpasswd"),
    ("blocked", "/admin/export?all=1"),
];

fn plan_sessions(records: usize, now: i64) -> Vec<Plan> {
    let mut rng = Rng::new(1);
    let span = 6 * DAY_MS;
    let actors = (records / 40).max(10) as u64;
    let users = (records / 60).max(5) as u64;
    let mut plans = Vec::new();
    let mut planned = 0usize;
    while planned < records {
        let bot = rng.chance(4).then(|| *rng.pick(&BOTS));
        let requests = if bot.is_some() {
            500 + rng.below(8000) as u32
        } else {
            // Mostly short visits, some long ones: 1..~120 with a long tail.
            let base = 1 + rng.below(20) as u32;
            if rng.chance(100) {
                base * (2 + rng.below(6) as u32)
            } else {
                base
            }
        };
        let requests = requests.min((records - planned) as u32).max(1);
        let mean_gap_ms =
            if bot.is_some() { 50 + rng.below(400) } else { 2000 + rng.below(40_000) };
        let actor = rng.below(actors);
        let logged_in = bot.is_none() && rng.chance(700);
        plans.push(Plan {
            start: now - span + rng.below((span - DAY_MS / 6) as u64) as i64,
            requests,
            mean_gap_ms,
            actor,
            user: logged_in.then(|| (actor % users) as u32),
            role: if logged_in { ROLES[(actor % ROLES.len() as u64) as usize] } else { "" },
            ip: format!(
                "{}.{}.{}.{}",
                [203, 198, 192, 100][(actor % 4) as usize],
                (actor >> 2) % 250,
                (actor >> 6) % 250,
                1 + actor % 250
            ),
            node: rng.below(NODES.len() as u64) as usize,
            pid: 1000 + rng.below(4) as u32,
            bot,
        });
        planned += requests as usize;
    }
    plans
}

/// Writes the records in time order, as nginx would.
fn generate(path: &Path, records: usize, now: i64) -> (Vec<String>, usize) {
    let plans = plan_sessions(records, now);
    let mut events: Vec<(i64, u32, u32)> = Vec::with_capacity(records);
    for (s, plan) in plans.iter().enumerate() {
        let mut rng = Rng::new(0xABCD ^ s as u64);
        let mut ts = plan.start;
        for k in 0..plan.requests {
            events.push((ts, s as u32, k));
            ts += if plan.bot == Some(Bot::Scraper) {
                (plan.mean_gap_ms + rng.below(plan.mean_gap_ms / 20 + 1)) as i64
            } else {
                1 + rng.below(plan.mean_gap_ms * 2) as i64
            };
        }
    }
    events.sort_unstable();
    let mut seqs: HashMap<(usize, u32), u64> = HashMap::new();
    let mut out =
        BufWriter::with_capacity(1 << 20, File::create(path).expect("create records file"));
    let mut line = Vec::with_capacity(4096);
    for &(ts, s, k) in &events {
        let plan = &plans[s as usize];
        let seq = seqs.entry((plan.node, plan.pid)).or_insert(0);
        *seq += 1;
        let record = record(plan, s, k, ts.min(now - 1000), *seq);
        line.clear();
        record.write_ndjson(&mut line);
        out.write_all(&line).expect("write records");
    }
    out.flush().expect("write records");
    let users: Vec<String> =
        plans.iter().filter_map(|plan| plan.user.map(|u| format!("user{u:05}"))).collect();
    (users, plans.len())
}

fn record(plan: &Plan, s: u32, k: u32, ts: i64, seq: u64) -> Record {
    let mut rng = Rng::new(((s as u64) << 32) | k as u64);
    let mut server = "shop.example.com".to_owned();
    let mut user_agent = AGENTS[(plan.actor % 4) as usize];
    let mut user = plan.user.filter(|_| k > 0).map(|u| format!("user{u:05}"));
    let mut status = None;
    let (method, path, flows): (&str, String, &[&str]) = match plan.bot {
        None if k == 0 && plan.user.is_some() => ("POST", "/api/v1/login".into(), &["auth"]),
        None if rng.chance(300) => {
            server = format!("api{}.example.com", rng.below(CATALOG_HOSTS));
            let (area, resource) =
                (rng.below(AREAS.len() as u64), rng.below(RESOURCES.len() as u64));
            // Each word pair has one method and one shape, so a host has AREAS × RESOURCES
            // endpoints.
            let shape = (area * RESOURCES.len() as u64 + resource) as usize;
            let (area, resource) = (AREAS[area as usize], RESOURCES[resource as usize]);
            let path = if shape % 3 == 0 {
                format!("/{area}/{resource}")
            } else {
                format!("/{area}/{resource}/{}", 1 + rng.below(10_000))
            };
            (["GET", "GET", "POST", "PUT", "DELETE"][shape % 5], path, &[])
        }
        None | Some(Bot::Flood) => {
            let endpoint = rng.pick(&ENDPOINTS);
            let path = endpoint.path.replace("{}", &(1 + rng.below(50_000)).to_string());
            (endpoint.method, path, endpoint.flows)
        }
        Some(Bot::CredentialStuffer) => {
            user_agent = AGENTS[3];
            if rng.chance(40) {
                user = Some(format!("user{:05}", rng.below(100_000)));
            } else {
                status = Some(401);
            }
            ("POST", "/api/v1/login".into(), &["auth"])
        }
        Some(Bot::ContentScanner) => {
            user_agent = "gobuster/3.6";
            status = Some(if rng.chance(950) { 404 } else { 403 });
            ("GET", format!("/{}/{}", rng.pick(&SCANNED), rng.pick(&RESOURCES)), &[])
        }
        Some(Bot::Enumerator) => {
            status =
                Some([200, 200, 200, 200, 200, 200, 200, 403, 404, 404][rng.below(10) as usize]);
            ("GET", format!("/api/v1/orders/{}", 100_000 + k), &[])
        }
        Some(Bot::SmsPumper) => {
            user_agent = AGENTS[1];
            ("POST", "/api/v1/otp/send".into(), &["sms_gateway"])
        }
        Some(Bot::Scraper) => {
            user_agent = AGENTS[0];
            ("GET", format!("/api/v1/products/{}", 1 + rng.below(50_000)), &[])
        }
    };
    let malicious = rng.chance(if plan.bot.is_some() { 20 } else { 3 });
    let (status, attack) = if malicious {
        let (kind, target) = *rng.pick(&ATTACKS);
        let request = AttackRequest {
            line: format!("{method} {target} HTTP/1.1"),
            headers: vec![
                ("Host".into(), "shop.example.com".into()),
                ("User-Agent".into(), AGENTS[3].into()),
                ("Cookie".into(), format!("sid={}", hex(plan.actor, 7))),
            ],
            body: if method == "GET" { String::new() } else { "{\"q\":\"' OR 1=1--\"}".into() },
            body_truncated: false,
        };
        (403, Some(Attack { kind: kind.into(), request }))
    } else if let Some(status) = status {
        (status, None)
    } else {
        let status = match rng.below(100) {
            0..=84 => 200,
            85..=89 => 201,
            90..=93 => 404,
            94..=96 => 401,
            97..=98 => 302,
            _ => 500,
        };
        (status, None)
    };
    let mut params = vec![Param {
        name: "token".into(),
        source: "response_body:/token".into(),
        kind: ParamKind::Context,
        value: format!("hmac-sha256:{}", hex(plan.actor, 3)),
        hashed: true,
    }];
    if path.contains("orders") || path.contains("payments") {
        params.push(Param {
            name: "order_id".into(),
            source: "request_body:/order/id".into(),
            kind: ParamKind::Context,
            value: format!("ord-{}", rng.below(1_000_000)),
            hashed: false,
        });
    }
    if let Some(user) = &user {
        params.push(Param {
            name: "user".into(),
            source: "$upstream_http_x_user".into(),
            kind: ParamKind::User,
            value: user.clone(),
            hashed: false,
        });
    }
    Record {
        v: SCHEMA_VERSION,
        ts: Millis(ts),
        request_id: hex(((s as u64) << 32) | k as u64, 1),
        node: NODES[plan.node].into(),
        pid: plan.pid,
        seq,
        session_id: hex(s as u64, 2),
        session_key: if plan.bot.is_some() { "ip+ua".into() } else { "cookie:sid".into() },
        session_key_builtin: true,
        key_hash: hex(plan.actor, 4),
        session_start: Millis(plan.start),
        server,
        method: method.into(),
        path,
        status,
        duration_ms: (1 + rng.below(300_000)) as f64 / 1000.0,
        request_bytes: 200 + rng.below(2000),
        response_bytes: 300 + rng.below(20_000),
        ip: plan.ip.clone(),
        user_agent: Some(user_agent.into()),
        role: user.as_ref().filter(|_| !plan.role.is_empty()).map(|_| plan.role.to_owned()),
        user,
        flows: flows.iter().map(|f| f.to_string()).collect(),
        params,
        attack,
        truncated: vec![],
        blocked: None,
    }
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(binary: &Path, db: &Path, store: &Target) -> Server {
    let mut command = Command::new(binary);
    command.args(["serve", "--listen", "127.0.0.1:0", "--db"]).arg(db);
    if let Target::ClickHouse { url, .. } = store {
        command.arg("--store").arg(format!("clickhouse={url}"));
    }
    let mut child = command.stderr(Stdio::piped()).spawn().expect("start api-sessions serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines.next().expect("api-sessions exited").expect("read stderr");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .expect("address")
                .trim_end_matches('/')
                .to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, base }
}

/// Where `serve` keeps the records.
enum Target {
    Sqlite,
    ClickHouse { url: String, _server: Option<ClickHouseServer> },
}

/// A `clickhouse-server` of the benchmark's own, stopped when dropped.
struct ClickHouseServer {
    child: Child,
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `clickhouse-server` on a free loopback port with its configuration and data in
/// `dir`, emptied first unless `reuse`; the URL of its database `bench`.
fn start_clickhouse(dir: &Path, reuse: bool) -> (String, ClickHouseServer) {
    let program = std::env::var_os("API_SESSIONS_CLICKHOUSE_SERVER")
        .map_or_else(|| PathBuf::from("/usr/sbin/clickhouse-server"), PathBuf::from);
    if !reuse {
        let _ = std::fs::remove_dir_all(dir);
    }
    std::fs::create_dir_all(dir).expect("create the ClickHouse directory");
    let dir = std::fs::canonicalize(dir).expect("ClickHouse directory");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let path = dir.display();
    let config = clickhouse_config::config(&dir, port, "bench");
    std::fs::write(dir.join("config.xml"), config).expect("write the ClickHouse configuration");
    let child = Command::new(&program)
        .arg(format!("--config-file={path}/config.xml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("start {}: {err}", program.display()));
    let server = ClickHouseServer { child };
    let base = format!("http://127.0.0.1:{port}/");
    let agent = agent();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = agent.get(&format!("{base}?query=SELECT%201")).call();
        if answer.is_ok_and(|response| response.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "clickhouse-server did not answer; see {path}");
        std::thread::sleep(Duration::from_millis(100));
    }
    (format!("{base}?database=bench"), server)
}

/// The answer of one statement to ClickHouse at `url` (a `--store clickhouse=` URL).
fn clickhouse_answer(url: &str, sql: &str) -> String {
    let mut response = agent().post(url).send(sql).expect("ClickHouse");
    let body = response.body_mut().read_to_string().expect("ClickHouse answer");
    assert_eq!(response.status(), 200, "{sql}: {body}");
    body.trim().to_owned()
}

/// The server and the database of a `--store clickhouse=` URL (the explorer takes only plain
/// identifiers as database names).
fn clickhouse_database(url: &str) -> (&str, String) {
    let database = url
        .split("database=")
        .nth(1)
        .map_or("default", |rest| rest.split('&').next().unwrap_or("default"));
    let plain = database.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    (url.split('?').next().unwrap_or(url), plain)
}

/// A figure of the active parts of the database of `url`: 0 before the explorer created it.
fn clickhouse_parts(url: &str, figure: &str) -> u64 {
    let (server, database) = clickhouse_database(url);
    let sql = format!("SELECT {figure} FROM system.parts WHERE active AND database = '{database}'");
    clickhouse_answer(server, &sql).parse().unwrap_or(0)
}

/// The `INSERT` statements the server at `url` has run since it started: all of them, so only
/// the explorer's when the server is the benchmark's own.
fn clickhouse_inserts(url: &str) -> u64 {
    let (server, _) = clickhouse_database(url);
    let sql = "SELECT sum(value) FROM system.events WHERE event = 'InsertQuery'";
    clickhouse_answer(server, sql).parse().unwrap_or(0)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

fn post_all(base: &str, path: &Path, senders: usize) -> usize {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).expect("open records"));
    let batches = Arc::new(Mutex::new(std::iter::from_fn(move || {
        let mut body = Vec::with_capacity(BATCH * 1024);
        let mut count = 0;
        while count < BATCH {
            match reader.read_until(b'\n', &mut body) {
                Ok(0) => break,
                Ok(_) => count += 1,
                Err(err) => panic!("read records: {err}"),
            }
        }
        (count > 0).then_some((body, count))
    })));
    let url = format!("{base}/v1/records");
    let workers: Vec<_> = (0..senders)
        .map(|_| {
            let (batches, url) = (batches.clone(), url.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let mut sent = 0;
                loop {
                    let Some((body, count)) = batches.lock().unwrap().next() else {
                        return sent;
                    };
                    let mut response = agent
                        .post(&url)
                        .header("Content-Type", "application/x-ndjson")
                        .send(&body[..])
                        .expect("POST /v1/records");
                    let text = response.body_mut().read_to_string().expect("read response");
                    assert_eq!(response.status(), 200, "{text}");
                    sent += count;
                }
            })
        })
        .collect();
    workers.into_iter().map(|worker| worker.join().expect("sender")).sum()
}

fn get(agent: &ureq::Agent, url: &str) -> (Duration, serde_json::Value) {
    let started = Instant::now();
    let mut response = agent.get(url).call().expect("GET");
    let body = response.body_mut().with_config().limit(256 << 20).read_to_vec().expect("read body");
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 200, "{url}: {}", String::from_utf8_lossy(&body));
    (elapsed, serde_json::from_slice(&body).expect("JSON"))
}

/// The signals the generated bots raise, one kind of bot each (see [`Bot`]).
const SIGNALS: [&str; 7] = [
    "rate",
    "auth_failures",
    "path_scan",
    "enumeration",
    "flow_abuse",
    "regular_timing",
    "automation_client",
];

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|line| line.strip_prefix("VmHWM:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Runs a command to its end: its wall time in seconds and its peak resident memory in KiB,
/// sampled from /proc while it runs.
fn run_measured(command: &mut Command) -> (f64, Option<u64>) {
    let started = Instant::now();
    let mut child = command.spawn().expect("start api-sessions");
    let mut peak = None;
    loop {
        peak = peak_rss_kib(child.id()).or(peak);
        if let Some(status) = child.try_wait().expect("wait for api-sessions") {
            assert!(status.success(), "api-sessions failed: {status}");
            return (started.elapsed().as_secs_f64(), peak);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `api-sessions ingest FILE` as it is (detection and endpoint statistics on), with
/// `--detect off`, and with a baseline binary if given (built from a revision without
/// endpoint statistics); each into a fresh database, `rounds` times in turn, the best round of
/// each reported. Then the detector's stored state, read from the default run's database.
fn ingest_variants(
    binary: &Path,
    baseline: Option<&Path>,
    dir: &Path,
    data: &Path,
    records: usize,
    rounds: usize,
) {
    let mut variants: Vec<(&str, &Path, &[&str])> = vec![
        ("detection on (default)", binary, &[]),
        ("--detect off", binary, &["--detect", "off"]),
    ];
    if let Some(baseline) = baseline {
        variants.push(("baseline binary", baseline, &[]));
    }
    let mut best = vec![(0.0f64, 0u64); variants.len()];
    let mut all = vec![Vec::new(); variants.len()];
    let mut state = None;
    for round in 0..rounds {
        // Alternate the order so that neither variant always runs on a warmer machine.
        let mut order: Vec<usize> = (0..variants.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let (_, program, args) = variants[index];
            let db = dir.join(format!("ingest-{index}.db"));
            let (elapsed, peak) = run_measured(
                Command::new(program).arg("ingest").args(args).arg("--db").arg(&db).arg(data),
            );
            let rate = records as f64 / elapsed;
            all[index].push(rate);
            if rate > best[index].0 {
                best[index] = (rate, peak.unwrap_or(0));
            }
            if index == 0 && state.is_none() {
                state = Some(detector_state(&db));
            }
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
            }
        }
    }
    println!("ingest (api-sessions ingest FILE): {:.0} records/s", best[0].0);
    println!(
        "\n{:<26} {:>10} {:>8} {:>14}  every round (records/s)",
        "api-sessions ingest", "records/s", "vs off", "peak RSS MiB"
    );
    for (index, (name, _, _)) in variants.iter().enumerate() {
        let rounds: Vec<String> = all[index].iter().map(|rate| format!("{rate:.0}")).collect();
        println!(
            "{name:<26} {:>10.0} {:>7.0}% {:>14.0}  {}",
            best[index].0,
            100.0 * best[index].0 / best[1].0,
            best[index].1 as f64 / 1024.0,
            rounds.join(" ")
        );
    }
    if let Some(state) = state {
        println!("{state}");
    }
    println!();
}

/// What the detector keeps in a SQLite database: one state per session and one per actor and
/// hour, each as the store encodes it (see `store::signals::encode_state`).
fn detector_state(db: &Path) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open database");
    let figures = |table: &str| -> (i64, i64, i64) {
        conn.query_row(
            &format!(
                "SELECT count(*), coalesce(sum(length(state)), 0), coalesce(max(length(state)), 0)
                 FROM {table}"
            ),
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .expect("read detector state")
    };
    let (sessions, session_bytes, session_max) = figures("session_detect");
    let (actors, actor_bytes, actor_max) = figures("detect_actors");
    let mib = |bytes: i64| bytes as f64 / (1 << 20) as f64;
    format!(
        "detector state (stored): {sessions} session states, {:.1} MiB (mean {} B, largest {} B); \
         {actors} actor-hour states, {:.1} MiB (largest {} B)",
        mib(session_bytes),
        session_bytes / sessions.max(1),
        session_max,
        mib(actor_bytes),
        actor_max
    )
}

/// How many sessions the detector flagged, so that the risk and signal lines measure lists
/// that hold something.
fn risk_census(agent: &ureq::Agent, base: &str) {
    let total = |query: &str| get(agent, &format!("{base}?{query}&limit=1")).1["total"].as_u64();
    let all = total("sort=last").unwrap_or(0);
    let risky = total("risk_min=50").unwrap_or(0);
    let signals: Vec<String> = SIGNALS
        .iter()
        .map(|signal| format!("{signal} {}", total(&format!("signal={signal}")).unwrap_or(0)))
        .collect();
    println!(
        "\nsessions: {all}, with risk >= 50: {risky}; with each signal: {}",
        signals.join(", ")
    );
    if risky == 0 {
        println!("warning: no session has risk >= 50, so the risk lines measure empty lists");
    }
}

/// Latency of `GET /api/endpoints` with the sorts and filters of the endpoints page.
fn endpoint_latency(
    agent: &ureq::Agent,
    base: &str,
    records: usize,
    queries: usize,
    now: i64,
    rng: &mut Rng,
) {
    let url = format!("{base}/api/endpoints");
    // The first list after the start reads every day; the others reuse what it kept.
    let (cold, all) = get(agent, &format!("{url}?limit=1"));
    let endpoints = all["total"].as_u64().expect("total");
    let window = |rng: &mut Rng, hours: i64| {
        let from = now - 6 * DAY_MS + rng.below((6 * DAY_MS - hours * 3_600_000) as u64) as i64;
        format!("from={}&to={}", Millis(from), Millis(from + hours * 3_600_000))
    };
    let servers: Vec<String> = std::iter::once("shop.example.com".to_owned())
        .chain((0..CATALOG_HOSTS).map(|host| format!("api{host}.example.com")))
        .collect();
    let words = ["orders", "items", "admin", "reports", "login", "no-such-word"];
    type Make<'a> = Box<dyn Fn(&mut Rng) -> String + 'a>;
    let mut cases: Vec<(&str, Make)> = vec![
        ("no filter (sort=requests)", Box::new(|_| String::new())),
        ("sort=requests&order=asc", Box::new(|_| "sort=requests&order=asc".to_owned())),
    ];
    for sort in ["sessions", "attacks", "errors", "duration", "size", "last", "endpoint"] {
        let name: &'static str = Box::leak(format!("sort={sort}").into_boxed_str());
        cases.push((name, Box::new(move |_| format!("sort={sort}"))));
    }
    let filters: Vec<(&str, Make)> = vec![
        ("server", Box::new(|rng| format!("server={}", rng.pick(&servers)))),
        ("method=POST", Box::new(|_| "method=POST".to_owned())),
        ("q (template text)", Box::new(|rng| format!("q={}", rng.pick(&words)))),
        ("flow=auth", Box::new(|_| "flow=auth".to_owned())),
        ("flow=billing", Box::new(|_| "flow=billing".to_owned())),
        ("time range (1 h)", Box::new(|rng| window(rng, 1))),
        ("time range (24 h)", Box::new(|rng| window(rng, 24))),
        (
            "server + sort=duration",
            Box::new(|rng| format!("server={}&sort=duration", rng.pick(&servers))),
        ),
        ("limit=1000", Box::new(|_| "limit=1000".to_owned())),
    ];
    cases.extend(filters);
    println!(
        "\nGET /api/endpoints at {records} records and {endpoints} endpoints, {queries} queries \
         each (first page, 100 endpoints):"
    );
    println!(
        "first list after the start (nothing kept yet): {:.1} ms",
        cold.as_secs_f64() * 1000.0
    );
    println!(
        "{:<28} {:>9} {:>9} {:>10} {:>9}",
        "case", "p50 ms", "p95 ms", "page 2 p95", "total p50"
    );
    for (name, make) in &cases {
        let mut first_pages = Vec::new();
        let mut next_pages = Vec::new();
        let mut totals = Vec::new();
        for _ in 0..queries {
            let query = make(rng);
            let (elapsed, body) = get(agent, &format!("{url}?{query}"));
            first_pages.push(elapsed);
            totals.push(body["total"].as_u64().expect("total"));
            if let Some(cursor) = body["next_cursor"].as_str() {
                next_pages.push(get(agent, &format!("{url}?{query}&cursor={cursor}")).0);
            }
        }
        first_pages.sort();
        next_pages.sort();
        totals.sort();
        let next = if next_pages.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.1}", percentile(&next_pages, 0.95))
        };
        println!(
            "{name:<28} {:>9.1} {:>9.1} {:>10} {:>9}",
            percentile(&first_pages, 0.5),
            percentile(&first_pages, 0.95),
            next,
            totals[totals.len() / 2]
        );
    }
    let mut pages = Vec::new();
    for _ in 0..queries {
        let started = Instant::now();
        let mut response = agent.get(&format!("{base}/endpoints")).call().expect("GET page");
        let _ = response.body_mut().with_config().limit(256 << 20).read_to_vec().expect("page");
        pages.push(started.elapsed());
    }
    pages.sort();
    println!(
        "{:<28} {:>9.1} {:>9.1}",
        "UI /endpoints",
        percentile(&pages, 0.5),
        percentile(&pages, 0.95)
    );
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

fn main() {
    let mut records = 1_000_000usize;
    let mut queries = 40usize;
    let mut senders = 8usize;
    let mut binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("api-sessions")))
        .expect("binary path");
    let mut dir: Option<PathBuf> = None;
    let mut skip_cli = false;
    let mut reuse = false;
    let mut baseline: Option<PathBuf> = None;
    let mut rounds = 1usize;
    let mut store = "sqlite".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--records" => records = value().parse().expect("--records N"),
            "--queries" => queries = value().parse().expect("--queries N"),
            "--senders" => senders = value().parse().expect("--senders N"),
            "--binary" => binary = PathBuf::from(value()),
            "--dir" => dir = Some(PathBuf::from(value())),
            "--skip-cli" => skip_cli = true,
            "--reuse" => reuse = true,
            "--baseline" => baseline = Some(PathBuf::from(value())),
            "--rounds" => rounds = value().parse::<usize>().expect("--rounds N").max(1),
            "--store" => store = value(),
            other => panic!("unknown argument {other}; see the comment at the top of this file"),
        }
    }
    let temp;
    let dir = match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).expect("create --dir");
            dir
        }
        None => {
            temp = tempfile::tempdir().expect("temp dir");
            temp.path().to_owned()
        }
    };
    let now = Millis::now().0;

    let data = dir.join("records.ndjson");
    let started = Instant::now();
    let (users, sessions) = generate(&data, records, now);
    let size = std::fs::metadata(&data).expect("records file").len();
    println!(
        "generated {records} records in {sessions} sessions ({:.0} MiB) in {:.1}s",
        size as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );

    let target = match store.as_str() {
        "sqlite" => Target::Sqlite,
        "clickhouse" => {
            let (url, server) = start_clickhouse(&dir.join("clickhouse"), reuse);
            Target::ClickHouse { url, _server: Some(server) }
        }
        other => match other.strip_prefix("clickhouse=") {
            Some(url) => Target::ClickHouse { url: url.to_owned(), _server: None },
            None => panic!("--store sqlite, clickhouse or clickhouse=URL"),
        },
    };
    if let Target::ClickHouse { url, .. } = &target {
        println!("store: ClickHouse {url}");
        if !reuse {
            // The explorer creates the database; one left with records would skew everything.
            let rows = clickhouse_parts(url, "sum(rows)");
            assert_eq!(rows, 0, "the ClickHouse database holds rows; use --reuse or another");
        }
    }

    // 1. `api-sessions ingest FILE`, with and without detection (and with a baseline binary).
    if !skip_cli && matches!(target, Target::Sqlite) {
        ingest_variants(&binary, baseline.as_deref(), &dir, &data, records, rounds);
    }

    // 2. `POST /v1/records`.
    let db = dir.join("served.db");
    let server = serve(&binary, &db, &target);
    if !reuse {
        let inserts = match &target {
            Target::ClickHouse { url, .. } => clickhouse_inserts(url),
            Target::Sqlite => 0,
        };
        let started = Instant::now();
        let sent = post_all(&server.base, &data, senders);
        let elapsed = started.elapsed().as_secs_f64();
        assert_eq!(sent, records);
        println!(
            "ingest (POST /v1/records, {BATCH}-record batches, {senders} senders): {:.0} records/s ({elapsed:.1}s)",
            records as f64 / elapsed
        );
        if let Target::ClickHouse { url, .. } = &target {
            let batches = records.div_ceil(BATCH);
            let inserts = clickhouse_inserts(url) - inserts;
            println!("ClickHouse: {inserts} inserts for {batches} batches");
        }
    }
    let db_size: u64 = match &target {
        Target::Sqlite => ["", "-wal"]
            .iter()
            .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", db.display())).ok())
            .map(|meta| meta.len())
            .sum(),
        Target::ClickHouse { url, .. } => clickhouse_parts(url, "sum(bytes_on_disk)"),
    };
    println!("database: {:.0} MiB", db_size as f64 / (1 << 20) as f64);
    if let Target::ClickHouse { url, .. } = &target {
        println!("ClickHouse: {} active parts", clickhouse_parts(url, "count()"));
    }
    if let Some(kib) = peak_rss_kib(server.child.id()) {
        println!("serve: peak resident memory {:.0} MiB", kib as f64 / 1024.0);
    }

    // 3. Query latency.
    if queries == 0 {
        return;
    }
    let agent = agent();
    let base = format!("{}/api/sessions", server.base);
    let (_, first) = get(&agent, &base);
    let sample: Vec<(String, String)> = first["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| {
            (s["session_id"].as_str().unwrap().to_owned(), s["ips"][0].as_str().unwrap().to_owned())
        })
        .collect();
    let mut rng = Rng::new(42);
    let window = |rng: &mut Rng, hours: i64| {
        let from = now - 6 * DAY_MS + rng.below((6 * DAY_MS - hours * 3_600_000) as u64) as i64;
        format!("from={}&to={}", Millis(from), Millis(from + hours * 3_600_000))
    };
    // Common words, rare identifiers, an attack fragment, and a term that is nowhere.
    let terms =
        ["orders", "payments", "assistant", "ord-12345", "user00042", "passwd", "no-such-term"];
    let flows = ["auth", "billing", "account_management", "sms_gateway", "ai_llm", "admin"];
    type Make<'a> = Box<dyn Fn(&mut Rng) -> String + 'a>;
    let cases: Vec<(&str, Make)> = vec![
        ("no filter", Box::new(|_| String::new())),
        ("time range (1 h)", Box::new(|rng| window(rng, 1))),
        ("time range (24 h)", Box::new(|rng| window(rng, 24))),
        ("user", Box::new(|rng| format!("user={}", rng.pick(&users)))),
        ("flow", Box::new(|rng| format!("flow={}", rng.pick(&flows)))),
        ("user (upper case)", Box::new(|rng| format!("user={}", rng.pick(&users).to_uppercase()))),
        (
            "ua (a part)",
            Box::new(|rng| format!("ua={}", rng.pick(&["iPhone", "OKHTTP", "chrome/"]))),
        ),
        ("ip", Box::new(|rng| format!("ip={}", rng.pick(&sample).1))),
        ("q (free text)", Box::new(|rng| format!("q={}", rng.pick(&terms)))),
        ("attack=any", Box::new(|_| "attack=any".to_owned())),
        ("status=500", Box::new(|_| "status=500".to_owned())),
        (
            "flow + time range (24 h)",
            Box::new(|rng| format!("flow={}&{}", rng.pick(&flows), window(rng, 24))),
        ),
        (
            "user + time range (24 h)",
            Box::new(|rng| format!("user={}&{}", rng.pick(&users), window(rng, 24))),
        ),
        (
            "q + time range (24 h)",
            Box::new(|rng| format!("q={}&{}", rng.pick(&terms), window(rng, 24))),
        ),
        ("sort=first", Box::new(|_| "sort=first".to_owned())),
        ("sort=requests", Box::new(|_| "sort=requests".to_owned())),
        ("sort=duration", Box::new(|_| "sort=duration".to_owned())),
        ("sort=attacks", Box::new(|_| "sort=attacks".to_owned())),
        ("sort=last&order=asc", Box::new(|_| "sort=last&order=asc".to_owned())),
        ("sort=requests&order=asc", Box::new(|_| "sort=requests&order=asc".to_owned())),
        (
            "sort=requests + flow",
            Box::new(|rng| format!("sort=requests&flow={}", rng.pick(&flows))),
        ),
        (
            "sort=requests + time (24 h)",
            Box::new(|rng| format!("sort=requests&{}", window(rng, 24))),
        ),
        ("sort=duration + time (1 h)", Box::new(|rng| format!("sort=duration&{}", window(rng, 1)))),
        ("sort=attacks + attack=any", Box::new(|_| "sort=attacks&attack=any".to_owned())),
        ("sort=risk", Box::new(|_| "sort=risk".to_owned())),
        ("sort=risk&order=asc", Box::new(|_| "sort=risk&order=asc".to_owned())),
        ("risk_min=50", Box::new(|_| "risk_min=50".to_owned())),
        ("sort=risk + risk_min=50", Box::new(|_| "sort=risk&risk_min=50".to_owned())),
        ("risk_min=50 + time (24 h)", Box::new(|rng| format!("risk_min=50&{}", window(rng, 24)))),
        ("sort=risk + time (24 h)", Box::new(|rng| format!("sort=risk&{}", window(rng, 24)))),
        ("sort=risk + flow", Box::new(|rng| format!("sort=risk&flow={}", rng.pick(&flows)))),
    ];
    let mut cases = cases;
    for signal in SIGNALS {
        let name: &'static str = Box::leak(format!("signal={signal}").into_boxed_str());
        cases.push((name, Box::new(move |_| format!("signal={signal}"))));
    }
    cases.push((
        "sort=risk + signal",
        Box::new(|rng| format!("sort=risk&signal={}", rng.pick(&SIGNALS))),
    ));
    risk_census(&agent, &base);
    println!("\nGET /api/sessions at {records} records, {queries} queries each (first page, 50 sessions):");
    // Every answer carries the exact total, so each line measures it too; "prev p95" goes
    // back from page 2 with its prev_cursor.
    println!(
        "{:<28} {:>9} {:>9} {:>10} {:>9} {:>9}",
        "filter", "p50 ms", "p95 ms", "page 2 p95", "prev p95", "total p50"
    );
    for (name, make) in &cases {
        let mut first_pages = Vec::new();
        let mut next_pages = Vec::new();
        let mut prev_pages = Vec::new();
        let mut totals = Vec::new();
        for _ in 0..queries {
            let query = make(&mut rng);
            let (elapsed, body) = get(&agent, &format!("{base}?{query}"));
            first_pages.push(elapsed);
            totals.push(body["total"].as_u64().expect("total"));
            if let Some(cursor) = body["next_cursor"].as_str() {
                let (elapsed, body) = get(&agent, &format!("{base}?{query}&cursor={cursor}"));
                next_pages.push(elapsed);
                if let Some(cursor) = body["prev_cursor"].as_str() {
                    let (elapsed, _) = get(&agent, &format!("{base}?{query}&cursor={cursor}"));
                    prev_pages.push(elapsed);
                }
            }
        }
        first_pages.sort();
        totals.sort();
        let p95 = |mut pages: Vec<Duration>| {
            pages.sort();
            if pages.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.1}", percentile(&pages, 0.95))
            }
        };
        println!(
            "{name:<28} {:>9.1} {:>9.1} {:>10} {:>9} {:>9}",
            percentile(&first_pages, 0.5),
            percentile(&first_pages, 0.95),
            p95(next_pages),
            p95(prev_pages),
            totals[totals.len() / 2]
        );
    }

    let mut details = Vec::new();
    for (id, _) in sample.iter().cycle().take(queries) {
        details.push(get(&agent, &format!("{base}/{id}?limit=200")).0);
    }
    details.sort();
    println!(
        "{:<28} {:>9.1} {:>9.1}",
        "GET /api/sessions/{id}",
        percentile(&details, 0.5),
        percentile(&details, 0.95)
    );
    let mut pages = Vec::new();
    for (id, _) in sample.iter().cycle().take(queries) {
        let started = Instant::now();
        let mut response =
            agent.get(&format!("{}/sessions/{id}", server.base)).call().expect("GET page");
        let _ = response.body_mut().with_config().limit(256 << 20).read_to_vec().expect("page");
        pages.push(started.elapsed());
    }
    pages.sort();
    println!(
        "{:<28} {:>9.1} {:>9.1}",
        "UI /sessions/{id}",
        percentile(&pages, 0.5),
        percentile(&pages, 0.95)
    );

    endpoint_latency(&agent, &server.base, records, queries, now, &mut rng);
}
