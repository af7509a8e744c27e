//! Benchmark of the explorer at scale; run by `scripts/bench-explorer`.
//!
//! 1. Generates N realistic records (default 1,000,000) over the last six days: tens of
//!    thousands of sessions of very different lengths (people and a few bots), users and
//!    roles, business flows, parameters, about one request in 200 malicious with its full
//!    content. The module's own writer (`Record::write_ndjson`) produces the NDJSON.
//! 2. Ingest through both real paths, each into a fresh database: `api-sessions ingest FILE`,
//!    and `POST /v1/records` to `api-sessions serve` in batches of 512 records (the module's
//!    default batch) from 8 concurrent senders (nginx workers of a few nodes).
//! 3. Latency of `GET /api/sessions` (first page, next and previous pages, each with its exact
//!    total) per filter and per sort, and of a session page, p50 and p95 over varied values,
//!    against the served database.
//!
//! Usage: bench-explorer [--records N] [--queries N] [--senders N] [--binary PATH] [--dir DIR]
//!                       [--skip-cli]
//!
//! `--skip-cli` leaves out step 1 and `--queries 0` step 3, to measure or profile one path alone.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_sessions_core::record::{Attack, AttackRequest, Param, ParamKind, Record};
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
    bot: bool,
}

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
        let bot = rng.chance(4);
        let requests = if bot {
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
        let mean_gap_ms = if bot { 200 + rng.below(800) } else { 2000 + rng.below(40_000) };
        let actor = rng.below(actors);
        let logged_in = !bot && rng.chance(700);
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
            ts += 1 + rng.below(plan.mean_gap_ms * 2) as i64;
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
    let endpoint = if k == 0 && plan.user.is_some() {
        &Endpoint { method: "POST", path: "/api/v1/login", flows: &["auth"] }
    } else {
        rng.pick(&ENDPOINTS)
    };
    let path = endpoint.path.replace("{}", &(1 + rng.below(50_000)).to_string());
    let malicious = rng.chance(if plan.bot { 20 } else { 3 });
    let (status, attack) = if malicious {
        let (kind, target) = *rng.pick(&ATTACKS);
        let request = AttackRequest {
            line: format!("{} {target} HTTP/1.1", endpoint.method),
            headers: vec![
                ("Host".into(), "shop.example.com".into()),
                ("User-Agent".into(), AGENTS[3].into()),
                ("Cookie".into(), format!("sid={}", hex(plan.actor, 7))),
            ],
            body: if endpoint.method == "GET" {
                String::new()
            } else {
                "{\"q\":\"' OR 1=1--\"}".into()
            },
            body_truncated: false,
        };
        (403, Some(Attack { kind: kind.into(), request }))
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
    let user = plan.user.filter(|_| k > 0).map(|u| format!("user{u:05}"));
    let mut params = vec![Param {
        name: "token".into(),
        source: "response_body:/token".into(),
        kind: ParamKind::Context,
        value: format!("hmac-sha256:{}", hex(plan.actor, 3)),
        hashed: true,
    }];
    if endpoint.path.contains("orders") || endpoint.path.contains("payments") {
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
        v: 1,
        ts: Millis(ts),
        request_id: hex(((s as u64) << 32) | k as u64, 1),
        node: NODES[plan.node].into(),
        pid: plan.pid,
        seq,
        session_id: hex(s as u64, 2),
        session_key: if plan.bot { "ip+ua".into() } else { "cookie:sid".into() },
        session_key_builtin: true,
        key_hash: hex(plan.actor, 4),
        session_start: Millis(plan.start),
        server: "shop.example.com".into(),
        method: endpoint.method.into(),
        path,
        status,
        duration_ms: (1 + rng.below(300_000)) as f64 / 1000.0,
        request_bytes: 200 + rng.below(2000),
        response_bytes: 300 + rng.below(20_000),
        ip: plan.ip.clone(),
        user_agent: Some(AGENTS[(plan.actor % 4) as usize].into()),
        role: user.as_ref().map(|_| plan.role.to_owned()),
        user,
        flows: endpoint.flows.iter().map(|f| f.to_string()).collect(),
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

fn serve(binary: &Path, db: &Path) -> Server {
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start api-sessions serve");
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
            other => panic!("unknown argument {other}; see the comment at the top of this file"),
        }
    }
    let temp;
    let dir = match dir {
        Some(dir) => dir,
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

    // 1. `api-sessions ingest FILE`.
    if !skip_cli {
        let cli_db = dir.join("cli.db");
        let started = Instant::now();
        let status =
            Command::new(&binary).arg("ingest").arg("--db").arg(&cli_db).arg(&data).status();
        let elapsed = started.elapsed().as_secs_f64();
        assert!(status.expect("run api-sessions ingest").success(), "api-sessions ingest failed");
        println!(
            "ingest (api-sessions ingest FILE): {:.0} records/s ({elapsed:.1}s)",
            records as f64 / elapsed
        );
        let _ = std::fs::remove_file(&cli_db);
    }

    // 2. `POST /v1/records`.
    let db = dir.join("served.db");
    let server = serve(&binary, &db);
    let started = Instant::now();
    let sent = post_all(&server.base, &data, senders);
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(sent, records);
    println!(
        "ingest (POST /v1/records, {BATCH}-record batches, {senders} senders): {:.0} records/s ({elapsed:.1}s)",
        records as f64 / elapsed
    );
    let db_size: u64 = ["", "-wal"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", db.display())).ok())
        .map(|meta| meta.len())
        .sum();
    println!("database: {:.0} MiB", db_size as f64 / (1 << 20) as f64);

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
    ];
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
}
