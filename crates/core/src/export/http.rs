//! The HTTP sink: each batch is one `POST` of NDJSON.
//!
//! Works against the explorer's `/v1/records` and against ClickHouse's HTTP interface
//! (`...?query=INSERT INTO t FORMAT JSONEachRow`). Connection errors, timeouts, 429 and 5xx
//! are worth retrying; any other non-2xx answer means the receiver will never take this
//! batch.

use std::time::Duration;

use ureq::tls::{TlsConfig, TlsProvider};
use ureq::Agent;

use super::SendError;

pub struct HttpSink {
    agent: Agent,
    url: String,
    headers: Vec<(String, String)>,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Longest answer body quoted in an error message.
const ERROR_BODY_QUOTE: usize = 200;

impl HttpSink {
    pub fn new(url: String, headers: Vec<(String, String)>) -> HttpSink {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("nginx-api-sessions/", env!("CARGO_PKG_VERSION")))
            // One receiver, one connection kept alive between batches.
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .tls_config(TlsConfig::builder().provider(TlsProvider::NativeTls).build())
            .build()
            .new_agent();
        HttpSink { agent, url, headers }
    }

    /// The URL without its query string, for messages (the query may hold credentials).
    fn target(&self) -> &str {
        self.url.split('?').next().unwrap_or(&self.url)
    }

    /// Posts one batch; `timeout` bounds the whole exchange.
    pub fn send(&mut self, batch: &[u8], timeout: Duration) -> Result<(), SendError> {
        let mut request = self
            .agent
            .post(&self.url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Content-Type", "application/x-ndjson");
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let mut response = match request.send(batch) {
            Ok(response) => response,
            Err(ureq::Error::Io(e)) => {
                let reason = super::os_error(&e);
                return Err(SendError::Retryable(format!(
                    "POST to {} failed ({reason})",
                    self.target()
                )));
            }
            Err(ureq::Error::Timeout(_)) => {
                return Err(SendError::Retryable(format!("POST to {} timed out", self.target())));
            }
            Err(e) => {
                return Err(SendError::Retryable(format!(
                    "POST to {} failed ({e})",
                    self.target()
                )));
            }
        };
        let status = response.status().as_u16();
        // Read the answer so the connection can be reused, and to quote it in errors.
        let body = response.body_mut().with_config().limit(64 * 1024).read_to_vec();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let body = body.unwrap_or_default();
        let quote = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_QUOTE)]);
        let message = format!("{} answered {status} \"{}\"", self.target(), quote.trim());
        if status == 429 || status >= 500 {
            Err(SendError::Retryable(message))
        } else {
            Err(SendError::Permanent(message))
        }
    }
}
