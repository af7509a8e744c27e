//! What `api_sessions_export` configures: where records go and how they are batched, queued,
//! retried and spooled.

use std::fmt;
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
    /// CPUs the exporter threads run on (`cpu=`), or wherever the worker runs.
    pub cpus: Option<CpuList>,
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
            cpus: None,
        }
    }
}

/// CPU numbers, as `cpu=` lists them: `3`, `2-3`, `0,4-7`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

impl CpuList {
    /// The most CPUs an affinity mask of the C library holds (`CPU_SETSIZE`, which a test
    /// holds this to).
    pub const LIMIT: usize = 1024;

    /// Reads a list of CPU numbers and ranges separated by commas; the error is the reason.
    pub fn parse(text: &str) -> Result<CpuList, &'static str> {
        // Digits only: `parse` would take a leading `+` too.
        let number = |n: &str| match n.parse::<usize>() {
            _ if !n.bytes().all(|b| b.is_ascii_digit()) => Err("invalid CPU list"),
            Ok(n) if n < Self::LIMIT => Ok(n),
            Ok(_) => Err("CPU number too large"),
            Err(_) => Err("invalid CPU list"),
        };
        let mut cpus = Vec::new();
        for item in text.split(',') {
            let (first, last) = match item.split_once('-') {
                Some((first, last)) => (number(first)?, number(last)?),
                None => (number(item)?, number(item)?),
            };
            if first > last {
                return Err("invalid CPU range");
            }
            cpus.extend(first..=last);
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(CpuList(cpus))
    }

    pub fn cpus(&self) -> &[usize] {
        &self.0
    }
}

/// The list with its runs of CPUs as ranges, `0,4-6`.
impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0.as_slice();
        let mut separator = "";
        while let Some(&first) = rest.first() {
            let run = rest.iter().zip(first..).take_while(|(&cpu, n)| cpu == *n).count();
            match run {
                1 => write!(f, "{separator}{first}")?,
                _ => write!(f, "{separator}{first}-{}", first + run - 1)?,
            }
            rest = &rest[run..];
            separator = ",";
        }
        Ok(())
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

    #[cfg(target_os = "linux")]
    #[test]
    fn cpu_numbers_fit_the_c_library_mask() {
        assert_eq!(CpuList::LIMIT, libc::CPU_SETSIZE as usize);
    }

    #[test]
    fn cpu_lists_are_numbers_and_ranges() {
        let cpus = |text| CpuList::parse(text).map(|list| list.cpus().to_vec());
        assert_eq!(cpus("3"), Ok(vec![3]));
        assert_eq!(cpus("2-3"), Ok(vec![2, 3]));
        assert_eq!(cpus("6,0,4-5,5"), Ok(vec![0, 4, 5, 6]));
        assert_eq!(cpus("1023"), Ok(vec![1023]));
        let shown = |text| CpuList::parse(text).unwrap().to_string();
        assert_eq!(
            (shown("3"), shown("6,0,4-5,5"), shown("1,2,3,7-8")),
            ("3".into(), "0,4-6".into(), "1-3,7-8".into())
        );
        for (bad, reason) in [
            ("", "invalid CPU list"),
            ("a", "invalid CPU list"),
            ("1,", "invalid CPU list"),
            ("-1", "invalid CPU list"),
            ("1-", "invalid CPU list"),
            ("1-2-3", "invalid CPU list"),
            (" 1", "invalid CPU list"),
            ("+1", "invalid CPU list"),
            ("1-+2", "invalid CPU list"),
            ("3-2", "invalid CPU range"),
            ("1024", "CPU number too large"),
            ("0-99999999999999999999", "invalid CPU list"),
        ] {
            assert_eq!(cpus(bad), Err(reason), "{bad}");
        }
    }
}
