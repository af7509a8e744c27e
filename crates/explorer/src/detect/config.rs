//! The detector's thresholds, read from a TOML file; every value has a default that works
//! untuned, and a key the detector does not know is an error that names it.
//!
//! Thresholds only shape the scores: the state kept per session does not depend on them, so
//! sessions can be rescored under a changed file without their records.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// A score that rises linearly from 0 where the measured figure is `start` to 1 where it is
/// `full`; halfway, it is a finding. `full` below `start` scores figures that fall (spread).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    pub start: f64,
    pub full: f64,
}

impl Ramp {
    pub const fn new(start: f64, full: f64) -> Ramp {
        Ramp { start, full }
    }

    pub fn score(&self, figure: f64) -> f64 {
        if figure.is_nan() {
            return 0.0;
        }
        ((figure - self.start) / (self.full - self.start)).clamp(0.0, 1.0)
    }

    fn check(&self, key: &str) -> Result<(), ConfigError> {
        if !self.start.is_finite() || !self.full.is_finite() || self.start < 0.0 || self.full < 0.0
        {
            return Err(ConfigError::invalid(key, "\"start\" and \"full\" must be numbers >= 0"));
        }
        if self.start == self.full {
            return Err(ConfigError::invalid(key, "\"start\" and \"full\" must differ"));
        }
        Ok(())
    }
}

/// Every setting of the detector; see docs/detection.md.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub rate: Rate,
    pub regular_timing: RegularTiming,
    pub low_diversity: LowDiversity,
    pub path_scan: PathScan,
    pub enumeration: Enumeration,
    pub auth_failures: AuthFailures,
    pub errors: Errors,
    pub automation_client: AutomationClient,
    pub attacks: Attacks,
    pub flow_abuse: FlowAbuse,
    pub identity_churn: IdentityChurn,
}

/// Peak requests in one minute.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rate {
    pub enabled: bool,
    pub start: f64,
    pub full: f64,
}

impl Default for Rate {
    fn default() -> Self {
        Rate { enabled: true, start: 200.0, full: 1000.0 }
    }
}

/// Spread of the intervals between the session's first requests.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegularTiming {
    pub enabled: bool,
    /// Intervals needed before timing is judged at all.
    pub min_intervals: usize,
    pub start: f64,
    pub full: f64,
}

impl Default for RegularTiming {
    fn default() -> Self {
        RegularTiming { enabled: true, min_intervals: 8, start: 0.5, full: 0.1 }
    }
}

/// Share of the requests on the busiest endpoint.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LowDiversity {
    pub enabled: bool,
    pub min_requests: u64,
    pub start: f64,
    pub full: f64,
}

impl Default for LowDiversity {
    fn default() -> Self {
        LowDiversity { enabled: true, min_requests: 30, start: 0.5, full: 0.9 }
    }
}

/// Distinct endpoints answered 404 or 410.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathScan {
    pub enabled: bool,
    pub start: f64,
    pub full: f64,
}

impl Default for PathScan {
    fn default() -> Self {
        PathScan { enabled: true, start: 8.0, full: 48.0 }
    }
}

/// Distinct object ids under one endpoint template.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Enumeration {
    pub enabled: bool,
    pub start: f64,
    pub full: f64,
    /// Roles whose sessions go through objects by design (bulk administration).
    pub trusted_roles: Vec<String>,
}

impl Default for Enumeration {
    fn default() -> Self {
        Enumeration { enabled: true, start: 20.0, full: 100.0, trusted_roles: vec!["admin".into()] }
    }
}

/// Refused requests on the `auth` flow.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthFailures {
    pub enabled: bool,
    /// The statuses that mean the credentials or the attempt were refused.
    pub statuses: Vec<u16>,
    pub start: f64,
    pub full: f64,
}

impl Default for AuthFailures {
    fn default() -> Self {
        AuthFailures {
            enabled: true,
            statuses: vec![400, 401, 403, 422, 429],
            start: 3.0,
            full: 15.0,
        }
    }
}

/// Share of 4xx and 5xx answers.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Errors {
    pub enabled: bool,
    pub min_requests: u64,
    pub start: f64,
    pub full: f64,
}

impl Default for Errors {
    fn default() -> Self {
        Errors { enabled: true, min_requests: 10, start: 0.25, full: 0.75 }
    }
}

/// Tools, scripting libraries and crawlers, matched case-insensitively anywhere in the
/// User-Agent.
pub const AUTOMATION_USER_AGENTS: &[&str] = &[
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "go-http-client",
    "java/",
    "apache-httpclient",
    "libwww-perl",
    "lwp::",
    "httpie",
    "postmanruntime",
    "insomnia",
    "node-fetch",
    "axios/",
    "undici",
    "ruby",
    "faraday",
    "guzzlehttp",
    "scrapy",
    "headlesschrome",
    "phantomjs",
    "selenium",
    "puppeteer",
    "playwright",
    "sqlmap",
    "hydra",
    "nikto",
    "nmap",
    "masscan",
    "zgrab",
    "nuclei",
    "fuzz faster u fool",
    "ffuf",
    "gobuster",
    "wfuzz",
    "dirbuster",
    "feroxbuster",
    "siege",
    "wrk",
    "apachebench",
    "jmeter",
    "locust",
    "k6/",
    "vegeta",
    "burp",
    "zaproxy",
    "acunetix",
    "netsparker",
    "wpscan",
    "commix",
    "bot/",
    "crawler",
    "spider",
];

/// Tool or scripting User-Agents, a missing one, or many in one session.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutomationClient {
    pub enabled: bool,
    /// Substrings (case-insensitive) of the User-Agents of tools.
    pub user_agents: Vec<String>,
    /// Substrings that clear a User-Agent even when it matches `user_agents`.
    pub allow: Vec<String>,
    /// The score of requests without a User-Agent, 0 to 1.
    pub missing: f64,
    /// Distinct User-Agents in one session: score 0 at `agents_start`, 1 at `agents_full`.
    pub agents_start: f64,
    pub agents_full: f64,
}

impl Default for AutomationClient {
    fn default() -> Self {
        AutomationClient {
            enabled: true,
            user_agents: AUTOMATION_USER_AGENTS.iter().map(|&s| s.to_owned()).collect(),
            allow: Vec::new(),
            missing: 1.0,
            agents_start: 2.0,
            agents_full: 6.0,
        }
    }
}

/// Requests flagged by `api_sessions_attack`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Attacks {
    pub enabled: bool,
    pub start: f64,
    pub full: f64,
}

impl Default for Attacks {
    fn default() -> Self {
        Attacks { enabled: true, start: 0.0, full: 4.0 }
    }
}

/// Requests on costly or sensitive business flows, one ramp per flow.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowAbuse {
    pub enabled: bool,
    pub sms_gateway: Ramp,
    pub account_creation: Ramp,
    pub auth: Ramp,
    pub billing: Ramp,
    pub ai_llm: Ramp,
}

impl Default for FlowAbuse {
    fn default() -> Self {
        FlowAbuse {
            enabled: true,
            sms_gateway: Ramp::new(3.0, 15.0),
            account_creation: Ramp::new(2.0, 10.0),
            auth: Ramp::new(10.0, 50.0),
            billing: Ramp::new(10.0, 40.0),
            ai_llm: Ramp::new(100.0, 500.0),
        }
    }
}

/// Many users in one session, or one actor over many short sessions.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityChurn {
    pub enabled: bool,
    /// Distinct users in one session.
    pub users_start: f64,
    pub users_full: f64,
    /// Short sessions of one actor (IP and User-Agent) around the session.
    pub sessions_start: f64,
    pub sessions_full: f64,
    /// A session of at most this many requests is short; it takes its actor's figures.
    pub short_session: u64,
    /// Hours on each side of a session in which its actor's sessions count.
    pub window_hours: u32,
}

impl Default for IdentityChurn {
    fn default() -> Self {
        IdentityChurn {
            enabled: true,
            users_start: 2.0,
            users_full: 8.0,
            sessions_start: 5.0,
            sessions_full: 25.0,
            short_session: 5,
            window_hours: 1,
        }
    }
}

/// Why a detection file was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(String);

impl ConfigError {
    fn invalid(key: &str, why: &str) -> ConfigError {
        ConfigError(format!("invalid value of \"{key}\": {why}"))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and checks a detection file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read \"{}\": {e}", path.display())))?;
        Config::parse(&text).map_err(|e| ConfigError(format!("in \"{}\": {e}", path.display())))
    }

    /// Parses and checks the text of a detection file.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let ramps = [
            ("rate", Ramp::new(self.rate.start, self.rate.full)),
            ("regular_timing", Ramp::new(self.regular_timing.start, self.regular_timing.full)),
            ("low_diversity", Ramp::new(self.low_diversity.start, self.low_diversity.full)),
            ("path_scan", Ramp::new(self.path_scan.start, self.path_scan.full)),
            ("enumeration", Ramp::new(self.enumeration.start, self.enumeration.full)),
            ("auth_failures", Ramp::new(self.auth_failures.start, self.auth_failures.full)),
            ("errors", Ramp::new(self.errors.start, self.errors.full)),
            ("attacks", Ramp::new(self.attacks.start, self.attacks.full)),
            ("flow_abuse.sms_gateway", self.flow_abuse.sms_gateway),
            ("flow_abuse.account_creation", self.flow_abuse.account_creation),
            ("flow_abuse.auth", self.flow_abuse.auth),
            ("flow_abuse.billing", self.flow_abuse.billing),
            ("flow_abuse.ai_llm", self.flow_abuse.ai_llm),
        ];
        for (key, ramp) in ramps {
            ramp.check(key)?;
        }
        let churn = &self.identity_churn;
        Ramp::new(churn.users_start, churn.users_full).check("identity_churn.users_*")?;
        Ramp::new(churn.sessions_start, churn.sessions_full).check("identity_churn.sessions_*")?;
        let client = &self.automation_client;
        Ramp::new(client.agents_start, client.agents_full).check("automation_client.agents_*")?;
        if !(0.0..=1.0).contains(&client.missing) {
            return Err(ConfigError::invalid(
                "automation_client.missing",
                "it must be between 0 and 1",
            ));
        }
        for pattern in client.user_agents.iter().chain(&client.allow) {
            if pattern.is_empty() {
                return Err(ConfigError::invalid(
                    "automation_client.user_agents",
                    "patterns must not be empty",
                ));
            }
        }
        if let Some(status) = self.auth_failures.statuses.iter().find(|s| !(100..=599).contains(*s))
        {
            return Err(ConfigError::invalid(
                "auth_failures.statuses",
                &format!("{status} is not an HTTP status"),
            ));
        }
        if self.regular_timing.min_intervals < 2 {
            return Err(ConfigError::invalid("regular_timing.min_intervals", "it must be >= 2"));
        }
        if self.regular_timing.min_intervals > crate::detect::state::TIMES {
            return Err(ConfigError::invalid(
                "regular_timing.min_intervals",
                &format!("it must be < {}", crate::detect::state::TIMES),
            ));
        }
        if !(0.0..=1.0).contains(&self.low_diversity.start)
            || !(0.0..=1.0).contains(&self.low_diversity.full)
            || !(0.0..=1.0).contains(&self.errors.start)
            || !(0.0..=1.0).contains(&self.errors.full)
        {
            return Err(ConfigError(
                "invalid value of \"low_diversity\" or \"errors\": shares are between 0 and 1"
                    .into(),
            ));
        }
        if churn.short_session == 0 {
            return Err(ConfigError::invalid("identity_churn.short_session", "it must be >= 1"));
        }
        if !(1..=24).contains(&churn.window_hours) {
            return Err(ConfigError::invalid(
                "identity_churn.window_hours",
                "it must be from 1 to 24",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn overrides() {
        let config = Config::parse(
            "[rate]\nstart = 100\nfull = 400\n\n[flow_abuse.sms_gateway]\nstart = 1\nfull = 5\n\n\
             [enumeration]\ntrusted_roles = []\n",
        )
        .unwrap();
        assert_eq!((config.rate.start, config.rate.full), (100.0, 400.0));
        assert_eq!(config.flow_abuse.sms_gateway, Ramp::new(1.0, 5.0));
        assert_eq!(config.flow_abuse.auth, FlowAbuse::default().auth);
        assert!(config.enumeration.trusted_roles.is_empty());
        assert_eq!(config.path_scan, PathScan::default());
    }

    #[test]
    fn unknown_keys_are_named() {
        let error = Config::parse("[rate]\nstrat = 5\n").unwrap_err().to_string();
        assert!(error.contains("unknown field `strat`"), "{error}");
        let error = Config::parse("[ratee]\nstart = 5\n").unwrap_err().to_string();
        assert!(error.contains("unknown field `ratee`"), "{error}");
        let error = Config::parse("[flow_abuse.sms]\nstart = 1\nfull = 2\n").unwrap_err();
        assert!(error.to_string().contains("unknown field `sms`"), "{error}");
    }

    #[test]
    fn values_are_checked() {
        let error = Config::parse("[path_scan]\nstart = 5\nfull = 5\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid value of \"path_scan\": \"start\" and \"full\" must differ"
        );
        let error = Config::parse("[auth_failures]\nstatuses = [401, 1000]\n").unwrap_err();
        assert!(error.to_string().contains("1000 is not an HTTP status"));
        let error = Config::parse("[automation_client]\nmissing = 2\n").unwrap_err();
        assert!(error.to_string().contains("automation_client.missing"));
        let error = Config::parse("[rate]\nstart = \"many\"\n").unwrap_err();
        assert!(error.to_string().contains("invalid type"), "{error}");
    }

    #[test]
    fn ramps() {
        let rising = Ramp::new(10.0, 20.0);
        assert_eq!(rising.score(5.0), 0.0);
        assert_eq!(rising.score(15.0), 0.5);
        assert_eq!(rising.score(25.0), 1.0);
        let falling = Ramp::new(0.5, 0.1);
        assert_eq!(falling.score(0.6), 0.0);
        assert!((falling.score(0.3) - 0.5).abs() < 1e-9);
        assert_eq!(falling.score(0.0), 1.0);
        assert_eq!(rising.score(f64::NAN), 0.0);
    }
}
