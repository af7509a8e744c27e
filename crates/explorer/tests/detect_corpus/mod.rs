//! Scores a corpus of records whose requests name their actor, and measures the detector on
//! it: precision and recall of `risk >= 50` per actor, the signal each attacker must raise, and
//! the risk of every legitimate session.
//!
//! The corpus comes from t/api_sessions_detect.t: real tools and scripted actors through nginx
//! with the module. Each request carries its actor in the parameter `actor` (`tool:sqlmap`,
//! `bot:scraper`, `human:dashboard`, ...) and, for actors whose time was compressed, the
//! moment it stands for in the parameter `at` (milliseconds), used as its time.

#![allow(dead_code)] // The example and the test each use their own part.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

use api_sessions::detect::{
    self, ActorKey, ActorState, Config, Flows, Request, SessionState, Signal, SignalName,
};
use api_sessions_core::record::Record;
use serde_json::{json, Value};

/// A session at or above this risk is flagged.
pub const ALARM: u8 = 50;
pub const MIN_PRECISION: f64 = 0.95;
pub const MIN_RECALL: f64 = 0.90;

/// What an attacking actor's sessions must show (one of these at 0.5 or more); `None` for a
/// legitimate actor.
pub fn expected(label: &str) -> Option<&'static [SignalName]> {
    use SignalName::*;
    Some(match label {
        "tool:sqlmap" => &[Attacks],
        // The web form answers a refused login with 200 and the form again: only the volume
        // of logins shows.
        "tool:hydra" => &[AuthFailures, FlowAbuse],
        "tool:ffuf" | "tool:gobuster" => &[PathScan],
        "tool:wrk" | "tool:siege" => &[Rate],
        "bot:enumeration" | "bot:scraper" => &[Enumeration],
        "bot:sms_pumping" => &[FlowAbuse],
        "bot:credential_stuffing" | "bot:slow_stuffing" => &[AuthFailures, IdentityChurn],
        "bot:signup_abuse" => &[IdentityChurn, FlowAbuse],
        _ if label.starts_with("human:") => return None,
        _ => &[],
    })
}

pub struct Scored {
    pub session_id: String,
    pub label: String,
    pub requests: u64,
    pub risk: u8,
    pub signals: Vec<Signal>,
}

pub struct Summary {
    pub label: String,
    pub attack: bool,
    pub sessions: usize,
    pub flagged: usize,
    /// Sessions showing one of the expected signals at 0.5 or more.
    pub with_expected: usize,
    pub min_risk: u8,
    pub max_risk: u8,
    /// How many of the sessions show each signal at 0.5 or more.
    pub signals: BTreeMap<&'static str, usize>,
}

pub struct Evaluation {
    pub records: usize,
    pub sessions: Vec<Scored>,
    pub labels: Vec<Summary>,
    pub precision: f64,
    pub recall: f64,
    pub session_bytes_min: usize,
    pub session_bytes_max: usize,
    pub session_bytes_mean: usize,
    /// The state of a session as JSON, as a store would keep it.
    pub session_json_mean: usize,
    pub actor_bytes_max: usize,
}

fn param<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
    record.params.iter().find(|p| p.name == name).map(|p| p.value.as_str())
}

fn request_of<'a>(record: &'a Record, ts: i64) -> Request<'a> {
    Request {
        ts,
        request_id: &record.request_id,
        session_id: &record.session_id,
        session_key: &record.session_key,
        session_key_builtin: record.session_key_builtin,
        method: &record.method,
        path: &record.path,
        status: record.status,
        ip: &record.ip,
        user_agent: record.user_agent.as_deref(),
        user: record.user.as_deref(),
        role: record.role.as_deref(),
        flows: Flows::from_names(record.flows.iter().map(String::as_str)),
        attack: record.attack.as_ref().map(|attack| attack.kind.as_str()),
    }
}

/// Reads NDJSON records, builds every session's and actor's state, and scores them.
pub fn evaluate(input: impl BufRead, config: &Config) -> Result<Evaluation, String> {
    let mut sessions: BTreeMap<String, (SessionState, BTreeMap<String, usize>)> = BTreeMap::new();
    let mut actors: HashMap<ActorKey, ActorState> = HashMap::new();
    let mut records = 0;
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| format!("line {}: {e}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record =
            serde_json::from_str(&line).map_err(|e| format!("line {}: {e}", n + 1))?;
        let label = param(&record, "actor")
            .ok_or_else(|| format!("line {}: a record without an actor", n + 1))?;
        let ts = match param(&record, "at") {
            Some(at) => at.parse().map_err(|_| format!("line {}: bad \"at\" {at}", n + 1))?,
            None => record.ts.0,
        };
        let request = request_of(&record, ts);
        let (state, labels) = sessions.entry(record.session_id.clone()).or_default();
        state.observe(&request);
        *labels.entry(label.to_owned()).or_default() += 1;
        actors.entry(ActorKey::of(&request)).or_default().observe(&request);
        records += 1;
    }

    let mut scored = Vec::new();
    let mut session_bytes = Vec::new();
    let mut session_json = 0;
    for (session_id, (state, labels)) in &sessions {
        if labels.len() > 1 {
            return Err(format!("session {session_id} mixes actors: {labels:?}"));
        }
        let label = labels.keys().next().cloned().unwrap_or_default();
        let mut actor = ActorState::default();
        for key in state.actor_keys(config.identity_churn.window_hours) {
            if let Some(part) = actors.get(&key) {
                actor.merge(part);
            }
        }
        let signals = detect::score(state, Some(&actor), config);
        session_bytes.push(state.bytes());
        session_json += serde_json::to_string(state).map_err(|e| e.to_string())?.len();
        scored.push(Scored {
            session_id: session_id.clone(),
            label,
            requests: state.requests(),
            risk: detect::risk(&signals),
            signals,
        });
    }

    let mut labels: BTreeMap<&str, Summary> = BTreeMap::new();
    for session in &scored {
        let summary = labels.entry(&session.label).or_insert_with(|| Summary {
            label: session.label.clone(),
            attack: expected(&session.label).is_some(),
            sessions: 0,
            flagged: 0,
            with_expected: 0,
            min_risk: u8::MAX,
            max_risk: 0,
            signals: BTreeMap::new(),
        });
        summary.sessions += 1;
        summary.flagged += usize::from(session.risk >= ALARM);
        summary.min_risk = summary.min_risk.min(session.risk);
        summary.max_risk = summary.max_risk.max(session.risk);
        let found: Vec<SignalName> =
            session.signals.iter().filter(|s| s.score >= 0.5).map(|s| s.name).collect();
        for name in &found {
            *summary.signals.entry(name.as_str()).or_default() += 1;
        }
        let wanted = expected(&session.label).unwrap_or(&[]);
        summary.with_expected += usize::from(found.iter().any(|name| wanted.contains(name)));
    }
    let labels: Vec<Summary> = labels.into_values().collect();
    let flagged: usize = labels.iter().map(|l| l.flagged).sum();
    let true_flags: usize = labels.iter().filter(|l| l.attack).map(|l| l.flagged).sum();
    let attacks: usize = labels.iter().filter(|l| l.attack).map(|l| l.sessions).sum();
    Ok(Evaluation {
        records,
        precision: if flagged == 0 { 0.0 } else { true_flags as f64 / flagged as f64 },
        recall: if attacks == 0 { 0.0 } else { true_flags as f64 / attacks as f64 },
        session_bytes_min: session_bytes.iter().copied().min().unwrap_or(0),
        session_bytes_max: session_bytes.iter().copied().max().unwrap_or(0),
        session_bytes_mean: session_bytes.iter().sum::<usize>() / session_bytes.len().max(1),
        session_json_mean: session_json / session_bytes.len().max(1),
        actor_bytes_max: actors.values().map(ActorState::bytes).max().unwrap_or(0),
        sessions: scored,
        labels,
    })
}

impl Evaluation {
    /// What falls short of the targets, one line each; empty when all are met.
    pub fn shortfalls(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.precision < MIN_PRECISION {
            out.push(format!("precision {:.3} < {MIN_PRECISION}", self.precision));
        }
        if self.recall < MIN_RECALL {
            out.push(format!("recall {:.3} < {MIN_RECALL}", self.recall));
        }
        for label in &self.labels {
            if label.attack {
                let recall = label.flagged as f64 / label.sessions as f64;
                if recall < MIN_RECALL {
                    out.push(format!("{}: recall {recall:.3} < {MIN_RECALL}", label.label));
                }
                let shown = label.with_expected as f64 / label.sessions as f64;
                if shown < MIN_RECALL {
                    out.push(format!(
                        "{}: expected {:?} in {} of {} sessions",
                        label.label,
                        expected(&label.label).unwrap_or(&[]),
                        label.with_expected,
                        label.sessions
                    ));
                }
            } else if label.max_risk >= ALARM {
                out.push(format!(
                    "{}: a legitimate session at risk {}",
                    label.label, label.max_risk
                ));
            }
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let labels: Vec<Value> = self
            .labels
            .iter()
            .map(|l| {
                json!({
                    "label": l.label,
                    "attack": l.attack,
                    "sessions": l.sessions,
                    "flagged": l.flagged,
                    "with_expected": l.with_expected,
                    "min_risk": l.min_risk,
                    "max_risk": l.max_risk,
                    "signals": l.signals,
                })
            })
            .collect();
        json!({
            "records": self.records,
            "sessions": self.sessions.len(),
            "precision": self.precision,
            "recall": self.recall,
            "session_bytes_min": self.session_bytes_min,
            "session_bytes_max": self.session_bytes_max,
            "session_bytes_mean": self.session_bytes_mean,
            "session_json_mean": self.session_json_mean,
            "actor_bytes_max": self.actor_bytes_max,
            "labels": labels,
        })
    }

    /// A table for people: one line per actor, then the totals.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<26} {:>8} {:>8} {:>7} {:>9} {:>9}  signals at 0.5 or more\n",
            "actor", "sessions", "flagged", "recall", "expected", "risk"
        );
        for l in &self.labels {
            let recall = if l.attack {
                format!("{:.2}", l.flagged as f64 / l.sessions as f64)
            } else {
                "-".into()
            };
            let expected =
                if l.attack { format!("{}/{}", l.with_expected, l.sessions) } else { "-".into() };
            let signals: Vec<String> = l.signals.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out += &format!(
                "{:<26} {:>8} {:>8} {:>7} {:>9} {:>4}-{:<4}  {}\n",
                l.label,
                l.sessions,
                l.flagged,
                recall,
                expected,
                l.min_risk,
                l.max_risk,
                signals.join(", ")
            );
        }
        out += &format!(
            "{} records, {} sessions: precision {:.3}, recall {:.3}; state per session {} bytes \
             on average, from {} to {} ({} as JSON); per actor-hour {} at most\n",
            self.records,
            self.sessions.len(),
            self.precision,
            self.recall,
            self.session_bytes_mean,
            self.session_bytes_min,
            self.session_bytes_max,
            self.session_json_mean,
            self.actor_bytes_max
        );
        out
    }
}
