//! ClickHouse's HTTP interface: where the server is, and one statement per request.

use std::time::Duration;

use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;
use ureq::tls::{TlsConfig, TlsProvider};
use ureq::Agent;
use url::Url;

use crate::store::{Result, StoreError};

/// Longest part of an error answer quoted in a message.
const ERROR_QUOTE: usize = 300;

/// Bounds every exchange, so a stuck server turns into an error instead of a hung request.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Settings sent with every statement: 64-bit numbers as JSON numbers, not strings.
const SETTINGS: &[(&str, &str)] = &[("output_format_json_quote_64bit_integers", "0")];

/// The longest answer read: answers are held whole, and the endpoints of a week at a fleet's
/// scale run to tens of megabytes (ureq's own default stops at 10 MB).
const ANSWER_LIMIT: u64 = 1 << 30;

/// ClickHouse's default `max_query_size`, the longest statement it parses.
const DEFAULT_MAX_QUERY_SIZE: usize = 256 * 1024;

/// A parsed `--store clickhouse=URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `scheme://host:port/`, without credentials or query.
    pub endpoint: Url,
    pub database: String,
    /// From the URL's userinfo, sent as HTTP basic authentication.
    pub credentials: Option<(String, String)>,
    /// The rest of the URL's query (`user=`, `password=`, settings), sent as given.
    pub query: Vec<(String, String)>,
}

impl Config {
    /// Parses `http[s]://[user[:password]@]host[:port][/][?database=NAME&...]`.
    pub fn parse(text: &str) -> Result<Config, String> {
        let parsed = Url::parse(text);
        let invalid = |why: &str| {
            format!("invalid ClickHouse URL \"{}\": {why}", without_secrets(text, &parsed))
        };
        let url = parsed.as_ref().map_err(|err| match err {
            url::ParseError::RelativeUrlWithoutBase => invalid("no scheme"),
            url::ParseError::EmptyHost => invalid("no host"),
            err => invalid(&err.to_string()),
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(invalid("the scheme must be http or https"));
        }
        if !url.has_host() {
            return Err(invalid("no host"));
        }
        if url.path() != "/" {
            return Err(invalid("the path must be /"));
        }
        if url.fragment().is_some() {
            return Err(invalid("a #fragment has no meaning here"));
        }
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            (user, password) => {
                let decode = |text: &str| {
                    percent_decode_str(text)
                        .decode_utf8()
                        .map(|text| text.into_owned())
                        .map_err(|_| invalid("the user name and password must be UTF-8"))
                };
                Some((decode(user)?, decode(password.unwrap_or(""))?))
            }
        };
        let mut database = "default".to_owned();
        let mut query = Vec::new();
        for (name, value) in url.query_pairs() {
            match &*name {
                "database" => database = value.into_owned(),
                "query" => return Err(invalid("the explorer writes its own queries")),
                _ => query.push((name.into_owned(), value.into_owned())),
            }
        }
        // The name goes into CREATE DATABASE, so only plain identifiers are taken.
        if database.is_empty()
            || !database.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || database.as_bytes()[0].is_ascii_digit()
        {
            return Err(invalid("the database name must be letters, digits and _"));
        }
        Ok(Config { endpoint: server(url), database, credentials, query })
    }

    /// The server and database, for messages (no credentials).
    pub fn describe(&self) -> String {
        format!("ClickHouse {} database {}", self.endpoint, self.database)
    }
}

/// The URL without userinfo, query and fragment: scheme, host, port and path.
fn server(url: &Url) -> Url {
    let mut url = url.clone();
    // These fail only for URLs that cannot have userinfo, which then have none to remove.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// The URL as given, for messages, without what may hold a password: the userinfo and the
/// query of a URL that parses; a text that does not parse is shown only if it has neither.
fn without_secrets(text: &str, parsed: &Result<Url, url::ParseError>) -> String {
    match parsed {
        Ok(url) => server(url).into(),
        Err(_) if text.contains(['@', '?']) => "…".to_owned(),
        Err(_) => text.to_owned(),
    }
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
    fn url(&self, database: bool, extra: &[(&str, &str)]) -> Url {
        let mut url = self.config.endpoint.clone();
        {
            let mut query = url.query_pairs_mut();
            query.extend_pairs(&self.config.query);
            if database {
                query.append_pair("database", &self.config.database);
            }
            query.extend_pairs(SETTINGS.iter().chain(extra));
        }
        url
    }

    fn post(&self, url: &Url, body: &[u8]) -> Result<String> {
        let mut request = self.agent.post(url.as_str());
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let fail = |err: &dyn std::fmt::Display| {
            StoreError::new(format!("ClickHouse at {}: {err}", self.config.endpoint))
        };
        let mut response = request.send(body).map_err(|err| fail(&err))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(ANSWER_LIMIT)
            .read_to_string()
            .map_err(|err| fail(&err))?;
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
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn long_answers_are_read_whole() {
        // Over ureq's default limit of 10 MB.
        let rows = 400_000;
        let line = "{\"n\":\"0123456789012345678901234567890\"}\n";
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
                if header == "\r\n" {
                    break;
                }
            }
            reader.read_exact(&mut vec![0; length]).unwrap();
            let body = line.repeat(rows);
            let mut stream = stream;
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
            stream.write_all(body.as_bytes()).unwrap();
        });
        #[derive(serde::Deserialize)]
        struct Row {
            n: String,
        }
        let client = Client::new(Config::parse(&format!("http://127.0.0.1:{port}/")).unwrap());
        let answer: Vec<Row> = client.rows("SELECT n FROM t").unwrap();
        assert_eq!(answer.len(), rows);
        assert!(answer.iter().all(|row| row.n.len() == 31));
        server.join().unwrap();
    }

    #[test]
    fn urls_give_server_database_credentials_and_settings() {
        let config =
            Config::parse("http://u%40x:p%3Aw+d@127.0.0.1:8123/?database=api_sessions&async=1")
                .unwrap();
        assert_eq!(config.endpoint.as_str(), "http://127.0.0.1:8123/");
        assert_eq!(config.database, "api_sessions");
        assert_eq!(config.credentials, Some(("u@x".into(), "p:w+d".into())));
        assert_eq!(config.query, [("async".to_owned(), "1".to_owned())]);

        let plain = Config::parse("https://ch.example").unwrap();
        assert_eq!(
            (plain.endpoint.as_str(), plain.database.as_str()),
            ("https://ch.example/", "default")
        );
        assert_eq!(plain.credentials, None);
        let ipv6 = Config::parse("http://user@[::1]:8123").unwrap();
        assert_eq!(ipv6.endpoint.as_str(), "http://[::1]:8123/");
        assert_eq!(ipv6.credentials, Some(("user".into(), String::new())));
        let client = Client::new(config);
        assert_eq!(
            client.url(true, &[("query", "INSERT INTO t FORMAT JSONEachRow")]).as_str(),
            "http://127.0.0.1:8123/?async=1&database=api_sessions\
             &output_format_json_quote_64bit_integers=0&query=INSERT+INTO+t+FORMAT+JSONEachRow"
        );

        for (bad, why) in [
            ("127.0.0.1:8123", "no scheme"),
            ("tcp://127.0.0.1:9000", "http or https"),
            ("http:///?database=x", "no host"),
            ("http://h:99999/", "invalid port"),
            ("http://h/db", "path must be /"),
            ("http://h/#x", "fragment"),
            ("http://h/?database=a;DROP", "letters, digits and _"),
            ("http://h/?database=", "letters, digits and _"),
            ("http://h/?query=SELECT+1", "its own queries"),
            ("http://u:%ff@h/", "UTF-8"),
        ] {
            let err = Config::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let err = Config::parse("127.0.0.1:8123").unwrap_err();
        assert_eq!(err, "invalid ClickHouse URL \"127.0.0.1:8123\": no scheme");
        // Credentials never appear in messages.
        for (bad, shown) in [
            ("ftp://user:secret@h/?password=secret", "\"ftp://h/\""),
            ("http://user:secret@h/?database=1", "\"http://h/\""),
            ("http://user:secret@h:x/", "\"…\""),
            ("h:1/?password=secret", "\"h:1/\""),
            ("127.0.0.1:1/?password=secret", "\"…\""),
        ] {
            let err = Config::parse(bad).unwrap_err();
            assert!(err.contains(shown) && !err.contains("secret"), "{err}");
        }
    }
}
