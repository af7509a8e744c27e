//! Per-detector behaviour, and the properties every detector keeps: bounded, monotone in its
//! figure, no panic on any sequence of records, the same result whatever the arrival order and
//! however the records were split between partial states.

use proptest::prelude::*;

use super::*;
use crate::store::signals::{decode_state, encode_state};

/// An owned record for tests.
#[derive(Clone, Debug)]
struct Rec {
    ts: i64,
    request_id: String,
    session_id: String,
    session_key: String,
    builtin: bool,
    method: String,
    path: String,
    status: u16,
    ip: String,
    user_agent: Option<String>,
    user: Option<String>,
    role: Option<String>,
    flows: Vec<&'static str>,
    attack: Option<String>,
}

const T0: i64 = 1_795_341_600_000;
const BROWSER: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36";

impl Rec {
    fn new(n: u64, ts: i64, method: &str, path: &str, status: u16) -> Rec {
        Rec {
            ts,
            request_id: format!("{n:032x}"),
            session_id: "s1".into(),
            session_key: "token".into(),
            builtin: false,
            method: method.into(),
            path: path.into(),
            status,
            ip: "203.0.113.7".into(),
            user_agent: Some(BROWSER.into()),
            user: None,
            role: None,
            flows: Vec::new(),
            attack: None,
        }
    }

    fn request(&self) -> Request<'_> {
        Request {
            ts: self.ts,
            request_id: &self.request_id,
            session_id: &self.session_id,
            session_key: &self.session_key,
            session_key_builtin: self.builtin,
            method: &self.method,
            path: &self.path,
            status: self.status,
            ip: &self.ip,
            user_agent: self.user_agent.as_deref(),
            user: self.user.as_deref(),
            role: self.role.as_deref(),
            flows: Flows::from_names(self.flows.iter().copied()),
            attack: self.attack.as_deref(),
        }
    }

    fn flow(mut self, flow: &'static str) -> Rec {
        self.flows.push(flow);
        self
    }
}

fn state_of(records: &[Rec]) -> SessionState {
    let mut state = SessionState::default();
    for record in records {
        state.observe(&record.request());
    }
    state
}

fn actor_of(records: &[Rec]) -> ActorState {
    let mut state = ActorState::default();
    for record in records {
        state.observe(&record.request());
    }
    state
}

fn signal_in(records: &[Rec], name: SignalName) -> Option<Signal> {
    score(&state_of(records), None, &Config::default()).into_iter().find(|s| s.name == name)
}

fn score_of(records: &[Rec], name: SignalName) -> f64 {
    signal_in(records, name).map_or(0.0, |s| s.score)
}

/// Requests `gap_ms` apart from T0.
fn paced(n: u64, gap_ms: i64, make: impl Fn(u64) -> (String, String, u16)) -> Vec<Rec> {
    (0..n)
        .map(|i| {
            let (method, path, status) = make(i);
            Rec::new(i, T0 + i as i64 * gap_ms, &method, &path, status)
        })
        .collect()
}

fn get(path: &str, status: u16) -> (String, String, u16) {
    ("GET".into(), path.into(), status)
}

#[test]
fn rate_counts_the_busiest_minute() {
    let flood = paced(600, 50, |_| get("/api/products", 200));
    let signal = signal_in(&flood, SignalName::Rate).unwrap();
    assert_eq!(signal.detail, "600 requests in one minute (10:00 UTC)");
    assert_eq!(signal.score, 0.5);
    assert_eq!(signal.evidence.len(), MAX_EVIDENCE);
    assert_eq!(signal.evidence[0], format!("{:032x}", 0));
    // The same requests over ten minutes.
    let spread = paced(600, 1000, |_| get("/api/products", 200));
    assert_eq!(score_of(&spread, SignalName::Rate), 0.0);
}

#[test]
fn regular_timing_tells_a_metronome_from_a_person() {
    let bot = paced(40, 2000, |i| get(&format!("/api/products/{i}"), 200));
    let signal = signal_in(&bot, SignalName::RegularTiming).unwrap();
    assert_eq!(signal.score, 1.0);
    assert_eq!(signal.detail, "39 intervals of about 2.0 s within ±0%");

    // Pages of four requests loaded together, read for 2 to 40 seconds.
    let thinks = [4_100, 12_000, 2_300, 38_000, 7_500, 3_100, 19_000, 5_200, 9_900, 2_700, 26_000];
    let mut person = Vec::new();
    let mut at = T0;
    for (page, think) in thinks.iter().enumerate() {
        for asset in 0..4 {
            person.push(Rec::new(
                person.len() as u64,
                at + asset * 15,
                "GET",
                &format!("/p{page}/{asset}"),
                200,
            ));
        }
        at += think;
    }
    assert_eq!(score_of(&person, SignalName::RegularTiming), 0.0);
    // Too few intervals to judge.
    assert!(signal_of_len(5).is_none());
}

fn signal_of_len(n: u64) -> Option<Signal> {
    signal_in(&paced(n, 1000, |_| get("/a", 200)), SignalName::RegularTiming)
}

#[test]
fn low_diversity_and_its_minimum() {
    let hammer =
        paced(60, 3000, |i| get(if i % 20 == 0 { "/api/account" } else { "/api/login" }, 200));
    let signal = signal_in(&hammer, SignalName::LowDiversity).unwrap();
    assert!(signal.detail.starts_with("95% of 60 requests on GET /api/login"), "{}", signal.detail);
    assert_eq!(signal.score, 1.0);
    let few = paced(20, 3000, |_| get("/api/login", 200));
    assert!(signal_in(&few, SignalName::LowDiversity).is_none());
}

#[test]
fn path_scan_counts_templates_not_paths() {
    let scan = paced(60, 10, |i| get(&format!("/word{i}"), 404));
    let signal = signal_in(&scan, SignalName::PathScan).unwrap();
    assert_eq!(signal.score, 1.0);
    assert_eq!(signal.detail, "60 distinct endpoints answered 404");
    // Missing avatars of sixty users are one endpoint.
    let avatars = paced(60, 10, |i| get(&format!("/api/users/{i}/avatar"), 404));
    assert_eq!(score_of(&avatars, SignalName::PathScan), 0.0);
    let saturated = paced(1000, 10, |i| get(&format!("/w{i}"), 404));
    assert_eq!(
        signal_in(&saturated, SignalName::PathScan).unwrap().detail,
        "more than 100 distinct endpoints answered 404"
    );
}

#[test]
fn enumeration_and_trusted_roles() {
    let walk = paced(240, 500, |i| {
        get(&format!("/orders/{}", 1000 + i), if i % 7 == 0 { 200 } else { 404 })
    });
    let signal = signal_in(&walk, SignalName::Enumeration).unwrap();
    assert_eq!(signal.detail, "more than 100 distinct ids under GET /orders/{id}");
    assert_eq!(signal.score, 1.0);
    let sixty = paced(60, 500, |i| get(&format!("/orders/{i}"), 200));
    assert_eq!(signal_in(&sixty, SignalName::Enumeration).unwrap().score, 0.5);
    let mut admin = sixty.clone();
    admin[0].role = Some("admin".into());
    assert!(signal_in(&admin, SignalName::Enumeration).is_none());
}

#[test]
fn auth_failures_in_the_session_and_from_the_actor() {
    let brute: Vec<Rec> = paced(15, 200, |_| ("POST".into(), "/login".into(), 401))
        .into_iter()
        .map(|r| r.flow("auth"))
        .collect();
    let signal = signal_in(&brute, SignalName::AuthFailures).unwrap();
    assert_eq!(signal.detail, "15 refused logins (401 ×15)");
    assert_eq!(signal.score, 1.0);
    // 404 on a login is not a refused login; a few mistakes are nothing.
    let typos: Vec<Rec> = paced(3, 5000, |_| ("POST".into(), "/login".into(), 401))
        .into_iter()
        .map(|r| r.flow("auth"))
        .collect();
    assert_eq!(score_of(&typos, SignalName::AuthFailures), 0.0);

    // The login that worked after the actor's failures, in a session of its own.
    let mut failures = brute.clone();
    for r in &mut failures {
        r.session_key = "ip+ua".into();
        r.builtin = true;
        r.session_id = "address".into();
    }
    let mut success = Rec::new(99, T0 + 4000, "POST", "/login", 200).flow("auth");
    success.session_id = "fresh".into();
    let actor = actor_of(&[failures.clone(), vec![success.clone()]].concat());
    let state = state_of(&[success]);
    let signals = score(&state, Some(&actor), &Config::default());
    let inherited = signals.iter().find(|s| s.name == SignalName::AuthFailures).unwrap();
    assert!(inherited.detail.ends_with("from this IP address and User-Agent around this session"));
    assert_eq!(inherited.score, 1.0);
    assert!(risk(&signals) >= 50);
    // A long session does not take its actor's figures.
    let long: Vec<Rec> = paced(20, 1000, |i| get(&format!("/page/{}", i % 7), 200));
    let signals = score(&state_of(&long), Some(&actor), &Config::default());
    assert!(signals.iter().all(|s| s.name != SignalName::AuthFailures));
}

#[test]
fn errors_share() {
    let mostly_failing = paced(20, 1000, |i| get("/x", if i < 15 { 503 } else { 200 }));
    let signal = signal_in(&mostly_failing, SignalName::Errors).unwrap();
    assert_eq!(signal.detail, "75% of 20 requests failed (0 4xx, 15 5xx)");
    assert_eq!(signal.score, 1.0);
    let short = paced(5, 1000, |_| get("/x", 503));
    assert!(signal_in(&short, SignalName::Errors).is_none());
}

#[test]
fn automation_clients() {
    let mut tool = paced(10, 100, |_| get("/", 200));
    for r in &mut tool {
        r.user_agent = Some("sqlmap/1.7.2#stable (https://sqlmap.org)".into());
    }
    let signal = signal_in(&tool, SignalName::AutomationClient).unwrap();
    assert_eq!(signal.score, 1.0);
    assert!(signal.detail.contains("of a tool on 10 of 10 requests"));
    let mut none = tool.clone();
    for r in &mut none {
        r.user_agent = None;
    }
    assert_eq!(
        signal_in(&none, SignalName::AutomationClient).unwrap().detail,
        "no User-Agent on 10 of 10 requests"
    );
    let browser = paced(10, 100, |_| get("/", 200));
    assert_eq!(score_of(&browser, SignalName::AutomationClient), 0.0);
    let mut rotating = browser.clone();
    for (i, r) in rotating.iter_mut().enumerate() {
        r.user_agent = Some(format!("Mozilla/5.0 Build/{i}"));
    }
    assert_eq!(
        signal_in(&rotating, SignalName::AutomationClient).unwrap().detail,
        "10 different User-Agents in one session"
    );
    let mut config = Config::default();
    config.automation_client.allow = vec!["sqlmap".into()];
    let signals = score(&state_of(&tool), None, &config);
    assert!(signals.iter().all(|s| s.name != SignalName::AutomationClient));
}

#[test]
fn attacks_and_flows() {
    let mut probes = paced(6, 100, |_| get("/api/search", 403));
    for (i, r) in probes.iter_mut().enumerate() {
        r.attack = Some(if i < 4 { "sqli" } else { "xss" }.into());
    }
    let signal = signal_in(&probes, SignalName::Attacks).unwrap();
    assert_eq!(signal.detail, "6 requests flagged as attacks (sqli ×4, xss ×2)");
    assert_eq!(signal.score, 1.0);
    let pumping: Vec<Rec> = paced(9, 2000, |_| ("POST".into(), "/sms/send".into(), 202))
        .into_iter()
        .map(|r| r.flow("sms_gateway"))
        .collect();
    let signal = signal_in(&pumping, SignalName::FlowAbuse).unwrap();
    assert_eq!(signal.detail, "9 requests on the sms_gateway flow");
    assert_eq!(signal.score, 0.5);
}

#[test]
fn identity_churn_users_and_actors() {
    let mut stuffing = paced(12, 300, |_| ("POST".into(), "/login".into(), 401));
    for (i, r) in stuffing.iter_mut().enumerate() {
        r.user = Some(format!("user{i}@example.com"));
    }
    let signal = signal_in(&stuffing, SignalName::IdentityChurn).unwrap();
    assert_eq!(signal.detail, "12 users in one session");
    assert_eq!(signal.score, 1.0);

    // A new token at every login: thirty sessions of two requests.
    let mut records = Vec::new();
    for s in 0..30 {
        for step in 0..2 {
            let mut r = Rec::new(
                s * 2 + step,
                T0 + s as i64 * 60_000 + step as i64 * 400,
                "GET",
                "/api/account",
                200,
            );
            r.session_id = format!("session-{s}");
            records.push(r);
        }
    }
    let actor = actor_of(&records);
    let one = state_of(&records[..2]);
    let signals = score(&one, Some(&actor), &Config::default());
    let churn = signals.iter().find(|s| s.name == SignalName::IdentityChurn).unwrap();
    assert_eq!(
        churn.detail,
        "30 sessions of this IP address and User-Agent around this one, 2.0 requests each"
    );
    assert_eq!(churn.score, 1.0);
    assert!(risk(&signals) >= 50);

    // Thirty colleagues behind one address with the same browser, forty requests each.
    let mut office = Vec::new();
    for s in 0..30 {
        for step in 0..40 {
            let mut r =
                Rec::new(s * 40 + step, T0 + step as i64 * 30_000, "GET", "/api/account", 200);
            r.session_id = format!("colleague-{s}");
            office.push(r);
        }
    }
    let actor = actor_of(&office);
    let short = state_of(&office[..2]);
    let signals = score(&short, Some(&actor), &Config::default());
    assert!(signals.iter().all(|s| s.name != SignalName::IdentityChurn));
}

#[test]
fn actor_keys_cover_the_window() {
    let records = [Rec::new(1, T0 + 90 * 60_000, "GET", "/", 200)];
    let state = state_of(&records);
    let keys = state.actor_keys(1);
    let hour = state::hour_of(T0 + 90 * 60_000);
    assert_eq!(keys.iter().map(|k| k.hour).collect::<Vec<_>>(), vec![hour - 1, hour, hour + 1]);
    assert_eq!(keys[1], ActorKey::of(&records[0].request()));
    assert!(SessionState::default().actor_keys(1).is_empty());
}

#[test]
fn stored_pieces_are_rebuilt_within_their_bounds() {
    use sketch::{Distinct, Earliest};
    let earliest: Earliest<2> = serde_json::from_str(
        r#"[{"ts":9,"request_id":"c"},{"ts":1,"request_id":"b"},{"ts":1,"request_id":"a"},{"ts":1,"request_id":"a"}]"#,
    )
    .unwrap();
    assert_eq!(earliest.ids(), ["a", "b"]);
    let distinct: Distinct<2> = serde_json::from_str("[5, 3, 5, 9]").unwrap();
    assert!(distinct.is_saturated());
    let distinct: Distinct<2> = serde_json::from_str("[5, 3, 5]").unwrap();
    assert_eq!(distinct.count(), 2);
    assert_eq!(serde_json::to_string(&distinct).unwrap(), "[3,5]");
    let saturated: Distinct<2> = serde_json::from_str("null").unwrap();
    assert!(saturated.is_saturated());
    assert_eq!(serde_json::to_string(&saturated).unwrap(), "null");
}

#[test]
fn stored_encoding_is_stable() {
    // The states of open sessions outlive a release: this one's bytes are what databases hold.
    let mut records = paced(4, 1_000, |i| match i {
        0 => get("/orders/7", 200),
        1 => get("/missing", 404),
        2 => ("POST".into(), "/login".into(), 401),
        _ => get("/orders/8", 500),
    });
    records[2].flows = vec!["auth"];
    records[3].attack = Some("sqli".into());
    let encoded = encode_state(&state_of(&records)).unwrap();
    let hex: String = encoded.iter().map(|byte| format!("{byte:02x}")).collect();
    const EXPECTED: &str = concat!(
        "0104809496abc068f0c296abc06801809496abc06800000000000000000000000000000000000b3230332e30",
        "2e3131332e37014d4d6f7a696c6c612f352e3020285831313b204c696e7578207838365f363429204170706c",
        "655765624b69742f3533372e3336204368726f6d652f3133312e30205361666172692f3533372e3336048094",
        "96abc0680000000000000000000000000000000000d0a396abc0680000000000000000000000000000000001",
        "a0b396abc0680000000000000000000000000000000002f0c296abc068000000000000000000000000000000",
        "000304809496abc068d0a396abc068a0b396abc068f0c296abc06801d80404020103d0a396abc06800000000",
        "00000000000000000000000001a0b396abc0680000000000000000000000000000000002f0c296abc0680000",
        "0000000000000000000000000000030101bff69ac1fe92dfc3d30101d0a396abc06800000000000000000000",
        "000000000000010191030101a0b396abc06800000000000000000000000000000000020000010000000001a0",
        "b396abc068000000000000000000000000000000000200000101b3dcb9d1be8197fa2e0473716c690101f0c2",
        "96abc068000000000000000000000000000000000303afabd3a884ddb8af8a0110474554202f6f7264657273",
        "2f7b69647d0202809496abc0680000000000000000000000000000000000f0c296abc0680000000000000000",
        "000000000000000003bff69ac1fe92dfc3d3010c474554202f6d697373696e670101d0a396abc06800000000",
        "00000000000000000000000001bffd92d7a2fbc4ccdf010b504f5354202f6c6f67696e0101a0b396abc06800",
        "000000000000000000000000000000020103afabd3a884ddb8af8a01bff69ac1fe92dfc3d301bffd92d7a2fb",
        "c4ccdf0101afabd3a884ddb8af8a0110474554202f6f72646572732f7b69647d020102a4ddb1d396f5c0b075",
        "bf9bb2f9e6cbbdf6ae0102809496abc0680000000000000000000000000000000000f0c296abc06800000000",
        "0000000000000000000000000301d5c5f4f9958894b2af01014d4d6f7a696c6c612f352e3020285831313b20",
        "4c696e7578207838365f363429204170706c655765624b69742f3533372e3336204368726f6d652f3133312e",
        "30205361666172692f3533372e33360404809496abc0680000000000000000000000000000000000d0a396ab",
        "c0680000000000000000000000000000000001a0b396abc0680000000000000000000000000000000002f0c2",
        "96abc06800000000000000000000000000000000030101d5c5f4f9958894b2af0101000000",
    );
    assert_eq!(hex, EXPECTED);
}

#[test]
fn stored_states_are_compact() {
    // A browsing session with errors, object ids and module request ids: a typical state.
    let records = paced(400, 4_000, |i| match i % 5 {
        0 => get(&format!("/orders/{}", 1000 + i), 200),
        1 => get(&format!("/products/{}", i % 37), 200),
        2 => get(&format!("/search/p{}", i % 13), 404),
        3 => ("POST".into(), format!("/api/v{}/cart", i % 3), 500),
        _ => get("/", 200),
    });
    let state = state_of(&records);
    let encoded = encode_state(&state).unwrap();
    let json = serde_json::to_string(&state).unwrap();
    assert!(
        encoded.len() * 2 < json.len(),
        "{} bytes encoded, {} as JSON",
        encoded.len(),
        json.len()
    );
    assert_eq!(decode_state::<SessionState>(&encoded), state);
    // What another version wrote, or a damaged row, starts over rather than failing.
    assert_eq!(
        decode_state::<SessionState>(&encoded[..encoded.len() / 2]),
        SessionState::default()
    );
    assert_eq!(decode_state::<SessionState>(b""), SessionState::default());
}

#[test]
fn risk_tiers() {
    let s = |name, score| Signal { name, score, detail: String::new(), evidence: Vec::new() };
    assert_eq!(risk(&[]), 0);
    assert_eq!(risk(&[s(SignalName::PathScan, 0.5)]), 50);
    assert_eq!(risk(&[s(SignalName::Attacks, 1.0)]), 100);
    let machine = [
        s(SignalName::RegularTiming, 1.0),
        s(SignalName::LowDiversity, 1.0),
        s(SignalName::Errors, 1.0),
        s(SignalName::AutomationClient, 1.0),
    ];
    assert_eq!(risk(&machine), 45);
    let mut both = machine.to_vec();
    both.push(s(SignalName::Enumeration, 0.3));
    assert_eq!(risk(&both), 62);
}

#[test]
fn config_switches_signals_off() {
    let flood = paced(1200, 10, |_| get("/", 200));
    let mut config = Config::default();
    config.rate.enabled = false;
    let signals = score(&state_of(&flood), None, &config);
    assert!(signals.iter().all(|s| s.name != SignalName::Rate));
    assert!(score(&state_of(&flood), None, &Config::default())
        .iter()
        .any(|s| s.name == SignalName::Rate));
}

// Properties.

/// Records drawn from small pools, so that endpoints, ids, users and minutes repeat and
/// collide, with hostile values mixed in.
fn arb_rec() -> impl Strategy<Value = Rec> {
    let methods = prop::sample::select(vec!["GET", "POST", "PATCH", "DELETE"]);
    let paths = prop_oneof![
        (0u32..400).prop_map(|i| format!("/orders/{i}")),
        (0u32..60).prop_map(|i| format!("/w{i}")),
        prop::sample::select(vec!["/login", "/sms/send", "/signup", "/", "/api/products"])
            .prop_map(String::from),
        ".{0,40}",
    ];
    let statuses = prop::sample::select(vec![
        200u16, 201, 302, 400, 401, 403, 404, 410, 429, 500, 503, 0, 999,
    ]);
    let flows = prop::sample::subsequence(
        vec!["auth", "sms_gateway", "account_creation", "billing", "ai_llm", "custom"],
        0..3,
    );
    let agents = prop::option::of(prop::sample::select(vec![
        BROWSER,
        "curl/8.5.0",
        "python-requests/2.31",
        "",
    ]));
    (
        (0i64..3 * 3_600_000, 0u64..1_000_000, 0u32..8, any::<bool>(), methods, paths),
        (
            statuses,
            0u32..4,
            agents,
            prop::option::of(0u32..40),
            prop::option::of(prop::sample::select(vec!["admin", "customer"])),
        ),
        (
            flows,
            prop::option::of(prop::sample::select(vec!["sqli", "xss"])),
            prop::option::of(".{0,200}"),
        ),
    )
        .prop_map(
            |(
                (ts, id, session, builtin, method, path),
                (status, ip, ua, user, role),
                (flows, attack, odd_id),
            )| Rec {
                ts: T0 + ts,
                request_id: odd_id.unwrap_or_else(|| format!("{id:032x}")),
                session_id: format!("s{session}"),
                session_key: if builtin { "ip+ua".into() } else { "token".into() },
                builtin,
                method: method.into(),
                path,
                status,
                ip: format!("198.51.100.{ip}"),
                user_agent: ua.map(String::from),
                user: user.map(|u| format!("user{u}")),
                role: role.map(String::from),
                flows,
                attack: attack.map(String::from),
            },
        )
}

/// Distinct request ids, as the store hands them (it drops duplicates first).
fn distinct(records: Vec<Rec>) -> Vec<Rec> {
    let mut seen = std::collections::HashSet::new();
    records.into_iter().filter(|r| seen.insert(r.request_id.clone())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn order_and_grouping_do_not_matter(
        records in prop::collection::vec(arb_rec(), 0..400).prop_map(distinct),
        seed in any::<u64>(),
        parts in 1usize..6,
    ) {
        let whole = state_of(&records);

        // Another arrival order.
        let mut shuffled = records.clone();
        let mut rng = fastrand::Rng::with_seed(seed);
        rng.shuffle(&mut shuffled);
        prop_assert_eq!(&state_of(&shuffled), &whole);

        // Observing is merging the state of one record.
        let mut merged = SessionState::default();
        for record in &shuffled {
            merged.merge(&SessionState::of(&record.request()));
        }
        prop_assert_eq!(&merged, &whole);

        // Random parts, built separately and merged in a random tree.
        let mut groups: Vec<Vec<Rec>> = vec![Vec::new(); parts];
        for record in shuffled {
            groups[rng.usize(..parts)].push(record);
        }
        let mut states: Vec<SessionState> = groups.iter().map(|g| state_of(g)).collect();
        while states.len() > 1 {
            let a = states.swap_remove(rng.usize(..states.len()));
            let i = rng.usize(..states.len());
            let mut b = states.swap_remove(i);
            if rng.bool() { b.merge(&a); states.push(b) } else { let mut a = a; a.merge(&b); states.push(a) }
        }
        let merged = states.pop().unwrap();
        prop_assert_eq!(&merged, &whole);

        let config = Config::default();
        prop_assert_eq!(score(&merged, None, &config), score(&whole, None, &config));

        // A store keeps it and reads it back unchanged, encoded or as JSON (older databases).
        let kept: SessionState = decode_state(&encode_state(&whole).unwrap());
        prop_assert_eq!(&kept, &whole);
        let kept: SessionState = decode_state(serde_json::to_string(&whole).unwrap().as_bytes());
        prop_assert_eq!(&kept, &whole);

        // The actor state too.
        let actor = actor_of(&records);
        let mut half = actor_of(&records[..records.len() / 2]);
        half.merge(&actor_of(&records[records.len() / 2..]));
        prop_assert_eq!(&half, &actor);
        let mut reversed = records.clone();
        reversed.reverse();
        prop_assert_eq!(&actor_of(&reversed), &actor);
        let kept: ActorState = decode_state(&encode_state(&actor).unwrap());
        prop_assert_eq!(&kept, &actor);
        let kept: ActorState = decode_state(serde_json::to_string(&actor).unwrap().as_bytes());
        prop_assert_eq!(&kept, &actor);
        prop_assert_eq!(score(&whole, Some(&actor), &config), score(&merged, Some(&half), &config));
    }

    #[test]
    fn scores_are_bounded_and_never_panic(records in prop::collection::vec(arb_rec(), 0..300), extreme in any::<i64>()) {
        let mut records = records;
        if let Some(first) = records.first_mut() {
            first.ts = extreme;
        }
        let state = state_of(&records);
        let actor = actor_of(&records);
        for signal in score(&state, Some(&actor), &Config::default()) {
            prop_assert!(signal.score > 0.0 && signal.score <= 1.0);
            prop_assert!(signal.evidence.len() <= MAX_EVIDENCE);
            prop_assert!(!signal.detail.is_empty());
        }
        let signals = score(&state, Some(&actor), &Config::default());
        prop_assert!(risk(&signals) <= 100);
        let keys = state.actor_keys(24);
        prop_assert!(keys.len() <= 24 + 2 * 24 + 1);
    }

    /// Every figure only grows as requests are added, and so does every score (the detectors
    /// whose figure is a share or a spread are monotone in that figure, checked on ramps).
    #[test]
    fn counting_signals_never_fall_as_requests_come(
        records in prop::collection::vec(arb_rec(), 1..300).prop_map(distinct),
        cut in 0usize..300,
    ) {
        let cut = cut.min(records.len());
        let config = Config::default();
        let before = score(&state_of(&records[..cut]), None, &config);
        let after = score(&state_of(&records), None, &config);
        for name in [SignalName::Rate, SignalName::PathScan, SignalName::Enumeration,
                     SignalName::AuthFailures, SignalName::Attacks, SignalName::FlowAbuse,
                     SignalName::IdentityChurn] {
            let of = |signals: &[Signal]| signals.iter().find(|s| s.name == name).map_or(0.0, |s| s.score);
            // Enumeration stops for a session once it shows a trusted role.
            if name == SignalName::Enumeration && records.iter().any(|r| r.role.as_deref() == Some("admin")) {
                continue;
            }
            prop_assert!(of(&after) >= of(&before), "{:?}: {} then {}", name, of(&before), of(&after));
        }
    }

    #[test]
    fn ramps_and_risk_are_monotone(a in 0.0f64..2000.0, b in 0.0f64..2000.0, scores in prop::collection::vec(0.0f64..=1.0, 11), bump in 0usize..11) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        for ramp in [Ramp::new(200.0, 1000.0), Ramp::new(0.5, 0.1)] {
            let rising = ramp.full > ramp.start;
            prop_assert!((ramp.score(hi) >= ramp.score(lo)) == rising || ramp.score(hi) == ramp.score(lo));
        }
        let signals: Vec<Signal> = SignalName::ALL.iter().zip(&scores)
            .map(|(&name, &score)| Signal { name, score, detail: String::new(), evidence: Vec::new() })
            .collect();
        let mut raised = signals.clone();
        raised[bump].score = 1.0;
        prop_assert!(risk(&raised) >= risk(&signals));
    }

    #[test]
    fn state_is_bounded(seed in any::<u64>()) {
        // Every request new in every way: paths, ids, users, agents, minutes, statuses.
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut state = SessionState::default();
        let mut actor = ActorState::default();
        let mut peak = 0;
        for i in 0..20_000u64 {
            let r = Rec {
                ts: T0 + rng.i64(0..30 * 3_600_000),
                request_id: format!("{:032x}", rng.u128(..)),
                session_id: format!("s{i}"),
                session_key: "token".into(),
                builtin: false,
                method: "GET".into(),
                path: format!("/{}/{}/{}", rng.u32(..), "x".repeat(rng.usize(0..300)), rng.u64(..)),
                status: rng.u16(..),
                ip: "x".repeat(1000),
                user_agent: Some(format!("{}{}", rng.u64(..), "y".repeat(rng.usize(0..2000)))),
                user: Some(rng.u64(..).to_string()),
                role: Some(format!("{}", rng.u64(..))),
                flows: vec!["auth", "sms_gateway", "account_creation", "billing", "ai_llm"],
                attack: Some("a".repeat(rng.usize(0..500))),
            };
            state.observe(&r.request());
            actor.observe(&r.request());
            if i == 10_000 {
                peak = state.bytes();
            }
        }
        prop_assert!(state.bytes() <= MAX_SESSION_BYTES, "{} bytes", state.bytes());
        prop_assert!(actor.bytes() <= MAX_ACTOR_BYTES, "{} bytes", actor.bytes());
        // Full long before the end: another 10,000 requests add nothing but the minutes of
        // the day not seen yet.
        prop_assert!(state.bytes() <= peak + 1440 * 8);
    }
}

/// The most a session state holds; see docs/detection.md.
const MAX_SESSION_BYTES: usize = 64 * 1024;
const MAX_ACTOR_BYTES: usize = 4 * 1024;
