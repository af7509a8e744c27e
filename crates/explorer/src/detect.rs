//! Session intelligence: what makes a session look like a bot or an abuse, scored from its
//! requests and explained.
//!
//! A store feeds every request it keeps to [`SessionState::observe`] (and to the
//! [`ActorState`] of its [`ActorKey`]), in any order and on any number of instances: states are
//! mergeable, so the result does not depend on how the records came. [`score`] turns a state
//! into [`Signal`]s under a [`Config`], and [`risk`] turns the signals into one figure from 0 to
//! 100. Nothing here knows a store. The method, defaults and blind spots of each signal are in
//! docs/detection.md.
//!
//! Signals come in two tiers. Primary signals are harm in themselves (a flood, a scan,
//! enumeration, refused logins, attacks, flow abuse, identity churn): one at score 0.5 makes
//! the risk 50. Supporting signals (machine-like timing, few endpoints, errors, a tool's
//! User-Agent) say how machine-like a session is; alone, they keep it below 50, since
//! dashboards, monitors and integrations have them and do no harm.

mod clients;
mod config;
mod diversity;
mod endpoint;
mod enumeration;
mod failures;
mod identity;
pub mod sketch;
mod state;
mod timing;
mod volume;

use serde::{Deserialize, Serialize};

pub use config::{Config, ConfigError, Ramp};
pub use endpoint::{endpoint_of, Endpoint};
pub use state::{keyed_by_address, ActorKey, ActorRef, ActorState, Origin, SessionState};

/// What the detector reads of one record.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Request start, milliseconds since the epoch.
    pub ts: i64,
    pub request_id: &'a str,
    pub session_id: &'a str,
    pub session_key: &'a str,
    pub session_key_builtin: bool,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub ip: &'a str,
    pub user_agent: Option<&'a str>,
    pub user: Option<&'a str>,
    pub role: Option<&'a str>,
    pub flows: Flows,
    /// The attack type when `api_sessions_attack` flagged the request.
    pub attack: Option<&'a str>,
}

/// The business flows the detector knows (`api_sessions_flow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Auth,
    AccountCreation,
    AccountManagement,
    Admin,
    Billing,
    SmsGateway,
    AiLlm,
}

impl Flow {
    pub const ALL: [Flow; 7] = [
        Flow::Auth,
        Flow::AccountCreation,
        Flow::AccountManagement,
        Flow::Admin,
        Flow::Billing,
        Flow::SmsGateway,
        Flow::AiLlm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Flow::Auth => "auth",
            Flow::AccountCreation => "account_creation",
            Flow::AccountManagement => "account_management",
            Flow::Admin => "admin",
            Flow::Billing => "billing",
            Flow::SmsGateway => "sms_gateway",
            Flow::AiLlm => "ai_llm",
        }
    }

    pub fn parse(name: &str) -> Option<Flow> {
        Flow::ALL.into_iter().find(|flow| flow.as_str() == name)
    }
}

/// The flows whose volume is abuse: each costs money or guards an account.
pub const ABUSE_FLOWS: [Flow; 5] =
    [Flow::SmsGateway, Flow::AccountCreation, Flow::Auth, Flow::Billing, Flow::AiLlm];

/// A set of known flows; custom flows are not the detector's business.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flows(u8);

impl Flows {
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Flows {
        let mut flows = Flows::default();
        for flow in names.into_iter().filter_map(Flow::parse) {
            flows.insert(flow);
        }
        flows
    }

    pub fn insert(&mut self, flow: Flow) {
        self.0 |= 1 << flow as u8;
    }

    pub fn contains(self, flow: Flow) -> bool {
        self.0 & (1 << flow as u8) != 0
    }
}

/// The signals, in the order they are listed when their scores tie.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SignalName {
    Attacks,
    AuthFailures,
    Enumeration,
    PathScan,
    FlowAbuse,
    IdentityChurn,
    Rate,
    RegularTiming,
    LowDiversity,
    Errors,
    AutomationClient,
}

impl SignalName {
    pub const ALL: [SignalName; 11] = [
        SignalName::Attacks,
        SignalName::AuthFailures,
        SignalName::Enumeration,
        SignalName::PathScan,
        SignalName::FlowAbuse,
        SignalName::IdentityChurn,
        SignalName::Rate,
        SignalName::RegularTiming,
        SignalName::LowDiversity,
        SignalName::Errors,
        SignalName::AutomationClient,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SignalName::Rate => "rate",
            SignalName::RegularTiming => "regular_timing",
            SignalName::LowDiversity => "low_diversity",
            SignalName::PathScan => "path_scan",
            SignalName::Enumeration => "enumeration",
            SignalName::AuthFailures => "auth_failures",
            SignalName::Errors => "errors",
            SignalName::AutomationClient => "automation_client",
            SignalName::Attacks => "attacks",
            SignalName::FlowAbuse => "flow_abuse",
            SignalName::IdentityChurn => "identity_churn",
        }
    }

    pub fn parse(name: &str) -> Option<SignalName> {
        SignalName::ALL.into_iter().find(|signal| signal.as_str() == name)
    }

    /// Whether the signal is harm in itself, rather than a sign of a machine.
    pub fn is_primary(self) -> bool {
        !matches!(
            self,
            SignalName::RegularTiming
                | SignalName::LowDiversity
                | SignalName::Errors
                | SignalName::AutomationClient
        )
    }
}

/// One finding about a session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Signal {
    pub name: SignalName,
    /// 0 to 1, in hundredths; 0.5 and above is a finding.
    pub score: f64,
    /// A sentence with the measured figure.
    pub detail: String,
    /// Up to five request ids that show it, oldest first.
    pub evidence: Vec<String>,
}

/// Evidence listed per signal.
pub const MAX_EVIDENCE: usize = 5;

impl Signal {
    /// The signal at `score`, or none when it rounds to 0. Its detail and evidence are only
    /// built for a signal that scores: every rescored session runs every detector, and most
    /// score 0 on most of them.
    fn new(
        name: SignalName,
        score: f64,
        detail: impl FnOnce() -> String,
        evidence: impl FnOnce() -> Vec<String>,
    ) -> Option<Signal> {
        let score = (score.clamp(0.0, 1.0) * 100.0).round() / 100.0;
        (score > 0.0).then(|| Signal {
            name,
            score,
            detail: detail(),
            evidence: evidence().into_iter().take(MAX_EVIDENCE).collect(),
        })
    }
}

/// The signals of a session, highest score first; signals scoring 0 are left out.
///
/// `actor` is the merge of the [`ActorState`]s of the session's
/// [`SessionState::actor_keys`]: a short session takes its actor's figures for
/// `identity_churn` and `auth_failures` (a session whose login succeeded after the same actor's
/// failures, one of many one-login sessions).
pub fn score(state: &SessionState, actor: Option<&ActorState>, config: &Config) -> Vec<Signal> {
    if state.requests() == 0 {
        return Vec::new();
    }
    let actor = actor.filter(|_| state.requests() <= config.identity_churn.short_session);
    let mut signals: Vec<Signal> = [
        volume::rate(state, &config.rate),
        timing::regular_timing(state, &config.regular_timing),
        diversity::low_diversity(state, &config.low_diversity),
        diversity::path_scan(state, &config.path_scan),
        enumeration::enumeration(state, &config.enumeration),
        failures::auth_failures(state, actor, &config.auth_failures),
        failures::errors(state, &config.errors),
        clients::automation_client(state, &config.automation_client),
        clients::attacks(state, &config.attacks),
        volume::flow_abuse(state, &config.flow_abuse),
        identity::identity_churn(state, actor, &config.identity_churn),
    ]
    .into_iter()
    .flatten()
    .collect();
    signals.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.name.cmp(&b.name)));
    signals
}

/// How much of the risk supporting signals can make without a primary one: below 50.
const SUPPORT: f64 = 0.45;

/// The risk of a session from 0 to 100: the primary signals combined as independent
/// findings (`1 - Π(1 - score)`), and what is left raised by the supporting signals, which
/// alone stay below 50. It never falls when a score rises.
pub fn risk(signals: &[Signal]) -> u8 {
    let (mut primary, mut support) = (1.0, 1.0);
    for signal in signals {
        let keep = 1.0 - signal.score.clamp(0.0, 1.0);
        if signal.name.is_primary() {
            primary *= keep;
        } else {
            support *= keep;
        }
    }
    let primary = 1.0 - primary;
    let support = 1.0 - support;
    let risk = 100.0 * (primary + (1.0 - primary) * SUPPORT * support);
    // Scores are in hundredths: round away the float noise before the integer.
    (risk + 1e-9).round().clamp(0.0, 100.0) as u8
}

/// A duration in milliseconds, for details.
fn describe_ms(ms: f64) -> String {
    if ms >= 60_000.0 {
        format!("{:.1} min", ms / 60_000.0)
    } else if ms >= 1_000.0 {
        format!("{:.1} s", ms / 1_000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

#[cfg(test)]
mod tests;
