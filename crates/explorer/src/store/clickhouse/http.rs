//! ClickHouse's HTTP interface: where the server is, and one statement per request.

use std::time::Duration;

use serde::de::DeserializeOwned;
use ureq::tls::{TlsConfig, TlsProvider};
use ureq::Agent;

use crate::store::{Result, StoreError};

/// Longest part of an error answer quoted in a message.
const ERROR_QUOTE: usize = 300;

/// Bounds every exchange, so a stuck server turns into an error instead of a hung request.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Settings sent with every statement: 64-bit numbers as JSON numbers, not strings.
const SETTINGS: &[(&str, &str)] = &[("output_format_json_quote_64bit_integers", "0")];

/// ClickHouse's default `max_query_size`, the longest statement it parses.
const DEFAULT_MAX_QUERY_SIZE: usize = 256 * 1024;

/// A parsed `--store clickhouse=URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `scheme://host:port/`, without credentials or query.
    pub endpoint: String,
    pub database: String,
    /// From the URL's userinfo, sent as HTTP basic authentication.
    pub credentials: Option<(String, String)>,
    /// The rest of the URL's query (`user=`, `password=`, settings), sent as given.
    pub query: Vec<(String, String)>,
}

impl Config {
    /// Parses `http[s]://[user[:password]@]host[:port][/][?database=NAME&...]`.
    pub fn parse(url: &str) -> Result<Config, String> {
        let invalid = |why: &str| format!("invalid ClickHouse URL \"{}\": {why}", redact(url));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("no scheme"))?;
        if scheme != "http" && scheme != "https" {
            return Err(invalid("the scheme must be http or https"));
        }
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        if !path.is_empty() && path != "/" {
            return Err(invalid("the path must be /"));
        }
        let credentials = match userinfo {
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let decode = |text: &str| percent_decode(text).ok_or_else(|| invalid("bad escape"));
                Some((decode(user)?, decode(password)?))
            }
            None => None,
        };
        let mut database = "default".to_owned();
        let mut rest = Vec::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "database" => database = value.into_owned(),
                "query" => return Err(invalid("the explorer writes its own queries")),
                _ => rest.push((name.into_owned(), value.into_owned())),
            }
        }
        // The name goes into CREATE DATABASE, so only plain identifiers are taken.
        if database.is_empty()
            || !database.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || database.as_bytes()[0].is_ascii_digit()
        {
            return Err(invalid("the database name must be letters, digits and _"));
        }
        Ok(Config { endpoint: format!("{scheme}://{host}/"), database, credentials, query: rest })
    }

    /// The server and database, for messages (no credentials).
    pub fn describe(&self) -> String {
        format!("ClickHouse {} database {}", self.endpoint, self.database)
    }
}

/// The URL with the userinfo and query left out, for messages.
fn redact(url: &str) -> String {
    let url = url.split('?').next().unwrap_or(url);
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            format!("{}://…@{}", &url[..start], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Sends statements to one server.
pub struct Client {
    agent: Agent,
    config: Config,
    authorization: Option<String>,
}

impl Client {
    pub fn new(config: Config) -> Client {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("api-sessions/", env!("CARGO_PKG_VERSION")))
            .timeout_global(Some(TIMEOUT))
            .tls_config(TlsConfig::builder().provider(TlsProvider::NativeTls).build())
            .build()
            .new_agent();
        let authorization = config.credentials.as_ref().map(|(user, password)| {
            use base64::Engine;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {token}")
        });
        Client { agent, config, authorization }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The URL of a request: the operator's settings, ours, and `extra` (name, value) pairs.
    fn url(&self, database: bool, extra: &[(&str, &str)]) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.config.query {
            query.append_pair(name, value);
        }
        if database {
            query.append_pair("database", &self.config.database);
        }
        for (name, value) in SETTINGS.iter().chain(extra) {
            query.append_pair(name, value);
        }
        format!("{}?{}", self.config.endpoint, query.finish())
    }

    fn post(&self, url: &str, body: &[u8]) -> Result<String> {
        let mut request = self.agent.post(url);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let fail = |err: &dyn std::fmt::Display| {
            StoreError::new(format!("ClickHouse at {}: {err}", self.config.endpoint))
        };
        let mut response = request.send(body).map_err(|err| fail(&err))?;
        let status = response.status();
        let text = response.body_mut().read_to_string().map_err(|err| fail(&err))?;
        if !status.is_success() {
            let quote: String = text.trim().chars().take(ERROR_QUOTE).collect();
            return Err(fail(&format!("{status}: {quote}")));
        }
        Ok(text)
    }

    /// Runs one statement; its answer as text.
    pub fn execute(&self, sql: &str) -> Result<String> {
        // Captured values (ids, request ids) have no length limit of their own, and a statement
        // naming long ones may outgrow the server's default parse limit.
        if sql.len() >= DEFAULT_MAX_QUERY_SIZE {
            let size = (sql.len() + 1024).to_string();
            return self.post(&self.url(true, &[("max_query_size", &size)]), sql.as_bytes());
        }
        self.post(&self.url(true, &[]), sql.as_bytes())
    }

    /// Runs one statement outside the database (which may not exist yet).
    pub fn execute_on_server(&self, sql: &str) -> Result<String> {
        self.post(&self.url(false, &[]), sql.as_bytes())
    }

    /// Runs a SELECT and parses its `JSONEachRow` answer.
    pub fn rows<T: DeserializeOwned>(&self, sql: &str) -> Result<Vec<T>> {
        let text = self.execute(&format!("{sql} FORMAT JSONEachRow"))?;
        text.lines()
            .filter(|line| !line.is_empty())
            .map(|line| {
                serde_json::from_str(line).map_err(|err| {
                    StoreError::new(format!("unexpected answer from ClickHouse: {err}"))
                })
            })
            .collect()
    }

    /// Inserts `JSONEachRow` lines into `table`.
    pub fn insert(&self, table: &str, rows: &[u8]) -> Result<()> {
        let statement = format!("INSERT INTO {table} FORMAT JSONEachRow");
        self.post(&self.url(true, &[("query", &statement)]), rows).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_server_database_credentials_and_settings() {
        let config =
            Config::parse("http://u%40x:p%3Aw+d@127.0.0.1:8123/?database=api_sessions&async=1")
                .unwrap();
        assert_eq!(config.endpoint, "http://127.0.0.1:8123/");
        assert_eq!(config.database, "api_sessions");
        assert_eq!(config.credentials, Some(("u@x".into(), "p:w+d".into())));
        assert_eq!(config.query, [("async".to_owned(), "1".to_owned())]);

        let plain = Config::parse("https://ch.example").unwrap();
        assert_eq!(
            (plain.endpoint.as_str(), plain.database.as_str()),
            ("https://ch.example/", "default")
        );
        assert_eq!(plain.credentials, None);

        for (bad, why) in [
            ("127.0.0.1:8123", "no scheme"),
            ("tcp://127.0.0.1:9000", "http or https"),
            ("http:///?database=x", "no host"),
            ("http://h/db", "path must be /"),
            ("http://h/?database=a;DROP", "letters, digits and _"),
            ("http://h/?database=", "letters, digits and _"),
            ("http://h/?query=SELECT+1", "its own queries"),
            ("http://u:%zz@h/", "bad escape"),
        ] {
            let err = Config::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        // Credentials never appear in messages.
        let err = Config::parse("ftp://user:secret@h/?password=secret").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }
}
