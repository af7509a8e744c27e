//! What `api_sessions_export` configures: where records go and how they are batched, queued,
//! retried and spooled.

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use url::{ParseError, Url};

/// Where records go.
pub enum Destination {
    /// NDJSON appended to a file opened by nginx.
    File(File),
    /// NDJSON POSTed to a URL with extra headers.
    Http { url: String, headers: Vec<(String, String)> },
}

/// `api_sessions_export` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSettings {
    pub batch: usize,
    pub flush: Duration,
    pub queue: usize,
    /// In-flight capture bytes allowed in the queue.
    pub queue_memory: usize,
    pub timeout: Duration,
    pub spool: Option<PathBuf>,
    pub spool_max: u64,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            batch: 512,
            flush: Duration::from_secs(1),
            queue: 65_536,
            queue_memory: 256 << 20,
            timeout: Duration::from_secs(5),
            spool: None,
            spool_max: 1 << 30,
        }
    }
}

/// Checks an `api_sessions_export url=` as the HTTP client will read it; the error is worded
/// like nginx's URL errors (`no host`, `invalid port`, `invalid URL prefix`).
pub fn validate_url(text: &str) -> Result<(), &'static str> {
    let url = Url::parse(text).map_err(|e| match e {
        ParseError::EmptyHost => "no host",
        ParseError::InvalidPort => "invalid port",
        ParseError::RelativeUrlWithoutBase => "invalid URL prefix",
        _ => "invalid URL",
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("invalid URL prefix");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host");
    }
    // The client sends to the text as configured: it must take it too.
    text.parse::<ureq::http::Uri>().map_err(|_| "invalid URL")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_like_the_client_would() {
        for good in [
            "http://127.0.0.1:8707/v1/records",
            "https://collector.example.com/v1/records?x=1",
            "http://[::1]:8123/?query=INSERT%20INTO%20t%20FORMAT%20JSONEachRow",
            "http://localhost",
            // An empty port is the scheme's default, for the URL standard and the client alike.
            "http://host:/x",
        ] {
            assert_eq!(validate_url(good), Ok(()), "{good}");
        }
        for (bad, reason) in [
            ("http://", "no host"),
            ("http://127.0.0.1:port/v1", "invalid port"),
            ("http://host:99999/x", "invalid port"),
            ("ftp://example.com/", "invalid URL prefix"),
            ("/v1/records", "invalid URL prefix"),
            ("127.0.0.1:8707", "invalid URL prefix"),
            ("localhost:8707", "invalid URL prefix"),
            ("http://[::1", "invalid URL"),
            ("https://a b", "invalid URL"),
            ("http://h/a b", "invalid URL"),
        ] {
            assert_eq!(validate_url(bad), Err(reason), "{bad}");
        }
    }
}
