//! Clients: `automation_client` (a tool's or a library's User-Agent, none, or many) and
//! `attacks` (requests flagged by `api_sessions_attack`).

use super::config::{Attacks, AutomationClient, Ramp};
use super::state::SessionState;
use super::{Signal, SignalName};

/// How much a User-Agent says "tool": 1 for a known tool, `missing` for none, else 0.
fn tool_score(user_agent: Option<&str>, config: &AutomationClient) -> f64 {
    let Some(user_agent) = user_agent else { return config.missing };
    let lower = user_agent.to_ascii_lowercase();
    let matches = |patterns: &[String]| {
        patterns.iter().any(|pattern| lower.contains(&pattern.to_ascii_lowercase()))
    };
    if matches(&config.user_agents) && !matches(&config.allow) {
        1.0
    } else {
        0.0
    }
}

/// The share of requests from tools (weighted by [`tool_score`]), or the number of distinct
/// User-Agents when one session keeps changing it, whichever scores higher.
pub(super) fn automation_client(state: &SessionState, config: &AutomationClient) -> Option<Signal> {
    if !config.enabled {
        return None;
    }
    let counted: u64 = state.agents.values().map(|agent| agent.requests).sum();
    let mut tool = None;
    let mut weighted = 0.0;
    for agent in state.agents.values() {
        let score = tool_score(agent.user_agent.as_deref(), config);
        weighted += score * agent.requests as f64;
        if score > 0.0 && tool.is_none_or(|(_, requests)| agent.requests > requests) {
            tool = Some((agent, agent.requests));
        }
    }
    let share = if counted == 0 { 0.0 } else { weighted / counted as f64 };
    let agents = state.agent_count.count() as f64;
    let rotation = Ramp::new(config.agents_start, config.agents_full).score(agents);
    if rotation > share {
        let evidence = || {
            let firsts = state.agents.values().map(|agent| agent.first.stamps().first());
            firsts.flatten().map(|stamp| stamp.request_id.to_string()).collect()
        };
        return Signal::new(
            SignalName::AutomationClient,
            rotation,
            || format!("{} different User-Agents in one session", state.agent_count.describe()),
            evidence,
        );
    }
    let (agent, requests) = tool?;
    let detail = || match &agent.user_agent {
        Some(user_agent) => {
            format!(
                "User-Agent \"{user_agent}\" of a tool on {requests} of {} requests",
                state.requests
            )
        }
        None => format!("no User-Agent on {requests} of {} requests", state.requests),
    };
    Signal::new(SignalName::AutomationClient, share, detail, || agent.first.ids())
}

pub(super) fn attacks(state: &SessionState, config: &Attacks) -> Option<Signal> {
    if !config.enabled {
        return None;
    }
    let detail = || {
        let mut kinds: Vec<_> = state.attack_kinds.values().collect();
        kinds.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.name.cmp(&b.name)));
        let kinds: Vec<String> =
            kinds.iter().map(|kind| format!("{} ×{}", kind.name, kind.requests)).collect();
        format!("{} requests flagged as attacks ({})", state.attacks, kinds.join(", "))
    };
    Signal::new(
        SignalName::Attacks,
        Ramp::new(config.start, config.full).score(state.attacks as f64),
        detail,
        || state.attacks_first.ids(),
    )
}
