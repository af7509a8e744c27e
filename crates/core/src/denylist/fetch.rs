//! The fetch of the denylist document, on a thread of each worker's own.
//!
//! Every worker runs the thread; the fetch lock and the time of the next fetch live in the
//! zone, so one worker at a time fetches, once per interval, whichever it is. A URL is asked
//! with `If-None-Match`, a file is read again only when its modification time or size
//! changed. A failure or a refused document leaves the list in use as it is: blocking fails
//! open to the last good list. The thread never calls nginx; its messages wait in a channel
//! the worker's event loop drains into the error log.

use core::hash::Hasher;
use std::io::Read;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use siphasher::sip::SipHasher13;
use ureq::tls::{TlsConfig, TlsProvider};
use ureq::Agent;

use super::{Denylist, FetchGuard, List};
use crate::export::{os_error, Level, LogLine};
use crate::time::Millis;

/// Where the document comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Url { url: String, headers: Vec<(String, String)> },
    File(PathBuf),
}

impl Source {
    /// Tells sources apart across reloads, for the validator kept in the zone.
    fn id(&self) -> u64 {
        let mut h = SipHasher13::new();
        match self {
            Source::Url { url, headers } => {
                h.write(b"url\0");
                h.write(url.as_bytes());
                for (name, value) in headers {
                    h.write(b"\0");
                    h.write(name.as_bytes());
                    h.write(b"\0");
                    h.write(value.as_bytes());
                }
            }
            Source::File(path) => {
                h.write(b"file\0");
                h.write(path.as_os_str().as_encoded_bytes());
            }
        }
        h.finish().max(1)
    }

    /// How the source is named in messages: a URL without its query string, which may hold
    /// credentials.
    fn name(&self) -> String {
        match self {
            Source::Url { url, .. } => url.split('?').next().unwrap_or(url).to_string(),
            Source::File(path) => path.display().to_string(),
        }
    }
}

/// What one fetch did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new list is in use: its version and entries.
    Replaced { version: u64, entries: usize },
    /// The source has not changed since the list in use was fetched.
    Unchanged,
}

/// Longest document read: generous for a full zone (an entry with a long reason is a few
/// hundred bytes), and bounded whatever the source sends.
pub fn document_limit(capacity: usize) -> u64 {
    (1 << 20) + 512 * capacity as u64
}

/// Fetches the document once and, when it changed and is good, puts it in use.
pub struct Fetch {
    source: Source,
    source_id: u64,
    agent: Agent,
    timeout: Duration,
}

impl Fetch {
    pub fn new(source: Source, timeout: Duration) -> Fetch {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("nginx-api-sessions/", env!("CARGO_PKG_VERSION")))
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .tls_config(TlsConfig::builder().provider(TlsProvider::NativeTls).build())
            .build()
            .new_agent();
        Fetch { source_id: source.id(), source, agent, timeout }
    }

    /// One fetch, under the fetch lock. The error is the message to log.
    pub fn run(&self, guard: &FetchGuard<'_>, capacity: usize) -> Result<Outcome, String> {
        let limit = document_limit(capacity);
        let known = guard.validator(self.source_id);
        let fetched = match &self.source {
            Source::Url { url, headers } => self.get(url, headers, known.as_deref(), limit)?,
            Source::File(path) => read_file(path, known.as_deref(), limit)?,
        };
        let Some((document, validator)) = fetched else {
            return Ok(Outcome::Unchanged);
        };
        let list = List::parse(&document)
            .map_err(|e| format!("denylist from \"{}\" refused, {e}", self.source.name()))?;
        guard
            .replace(&list)
            .map_err(|e| format!("denylist from \"{}\" refused, {e}", self.source.name()))?;
        guard.set_validator(self.source_id, validator.as_deref());
        Ok(Outcome::Replaced { version: list.version, entries: list.entries.len() })
    }

    #[allow(clippy::type_complexity)]
    fn get(
        &self,
        url: &str,
        headers: &[(String, String)],
        etag: Option<&[u8]>,
        limit: u64,
    ) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>, String> {
        let target = self.source.name();
        let mut request = self.agent.get(url).config().timeout_global(Some(self.timeout)).build();
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(etag) = etag {
            request = request.header("If-None-Match", etag);
        }
        let mut response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Io(e)) => {
                return Err(format!("GET \"{target}\" failed ({})", os_error(&e)))
            }
            Err(ureq::Error::Timeout(_)) => return Err(format!("GET \"{target}\" timed out")),
            Err(e) => return Err(format!("GET \"{target}\" failed ({e})")),
        };
        let status = response.status().as_u16();
        if status == 304 && etag.is_some() {
            return Ok(None);
        }
        if status != 200 {
            return Err(format!("GET \"{target}\" answered {status}"));
        }
        let etag = response.headers().get("etag").map(|v| v.as_bytes().to_vec());
        let body =
            response.body_mut().with_config().limit(limit).read_to_vec().map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => {
                    format!("denylist from \"{target}\" refused, it is larger than {limit} bytes")
                }
                e => format!("GET \"{target}\" failed ({e})"),
            })?;
        Ok(Some((body, etag)))
    }
}

#[allow(clippy::type_complexity)]
fn read_file(
    path: &std::path::Path,
    known: Option<&[u8]>,
    limit: u64,
) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>, String> {
    use std::os::unix::fs::MetadataExt;
    let name = path.display();
    let fail =
        |what: &str, e: std::io::Error| format!("{what} \"{name}\" failed ({})", os_error(&e));
    let mut file = std::fs::File::open(path).map_err(|e| fail("open()", e))?;
    let meta = file.metadata().map_err(|e| fail("fstat()", e))?;
    let validator =
        format!("{}.{}:{}:{}", meta.mtime(), meta.mtime_nsec(), meta.size(), meta.ino())
            .into_bytes();
    if known == Some(&validator[..]) {
        return Ok(None);
    }
    if meta.size() > limit {
        return Err(format!("denylist from \"{name}\" refused, it is larger than {limit} bytes"));
    }
    let mut document = Vec::with_capacity(meta.size() as usize);
    file.by_ref().take(limit + 1).read_to_end(&mut document).map_err(|e| fail("read()", e))?;
    if document.len() as u64 > limit {
        return Err(format!("denylist from \"{name}\" refused, it is larger than {limit} bytes"));
    }
    Ok(Some((document, Some(validator))))
}

/// How often the thread looks whether a fetch is due: several times per interval, so that
/// the worker that fetches next is not late by much.
fn tick(interval: Duration) -> Duration {
    (interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// A worker's fetch thread.
pub struct Fetcher {
    stop: Option<Sender<()>>,
    log: Receiver<LogLine>,
    thread: Option<JoinHandle<()>>,
}

impl Fetcher {
    /// Starts the thread of a worker of configuration `generation`.
    pub fn start(
        list: Denylist,
        generation: u64,
        source: Source,
        interval: Duration,
    ) -> std::io::Result<Fetcher> {
        let (stop_tx, stop_rx) = bounded::<()>(1);
        let (log_tx, log_rx) = bounded(64);
        // A fetch must be over before the next is due.
        let fetch =
            Fetch::new(source, interval.clamp(Duration::from_secs(1), Duration::from_secs(30)));
        let thread = std::thread::Builder::new()
            .name("api_sessions denylist".into())
            .spawn(move || run(list, generation, fetch, interval, stop_rx, log_tx))?;
        Ok(Fetcher { stop: Some(stop_tx), log: log_rx, thread: Some(thread) })
    }

    /// Hands the thread's messages to `f`.
    pub fn drain_log(&self, mut f: impl FnMut(LogLine)) {
        while let Ok(line) = self.log.try_recv() {
            f(line);
        }
    }

    /// Tells the thread to stop. It is not waited for: a fetch in progress may take up to
    /// its timeout, and the worker exits without it (a fetch lock it held is taken over
    /// when its process is gone).
    pub fn stop(mut self) {
        self.stop.take();
        drop(self.thread.take());
    }
}

fn run(
    list: Denylist,
    generation: u64,
    fetch: Fetch,
    interval: Duration,
    stop: Receiver<()>,
    log: Sender<LogLine>,
) {
    let say = |level, message| {
        let _ = log.try_send(LogLine { level, message });
    };
    loop {
        if let Some(guard) = list.try_fetch(Millis::now(), generation) {
            let outcome = fetch.run(&guard, list.capacity());
            let next = Millis::now().0.saturating_add(interval.as_millis() as i64);
            guard.schedule(Millis(next));
            drop(guard);
            match outcome {
                Ok(Outcome::Replaced { version, entries }) => say(
                    Level::Info,
                    format!("denylist version {version} with {entries} entries in use"),
                ),
                Ok(Outcome::Unchanged) => {}
                Err(message) => {
                    list.count_error();
                    let version = list.stats().version;
                    say(Level::Error, format!("{message}, version {version} stays in use"));
                }
            }
        }
        match stop.recv_timeout(tick(interval)) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm_testing::Region;

    const HASH: &str = "00112233445566778899aabbccddeeff";

    fn region() -> (Region, Denylist) {
        let mut region = Region::new(16 * 1024);
        // SAFETY: the region is returned with the list and outlives it in each test.
        let list = unsafe { Denylist::init(region.ptr(), region.len()) }.unwrap();
        (region, list)
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system and sockets")]
    fn a_file_is_read_again_only_when_it_changes() {
        let (_region, list) = region();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("denylist.json");
        let doc = format!(r#"{{"version":7,"entries":[{{"key_hash":"{HASH}","expires":null}}]}}"#);
        std::fs::write(&path, &doc).unwrap();
        let fetch = Fetch::new(Source::File(path.clone()), Duration::from_secs(1));
        let guard = list.try_fetch(Millis(0), 0).unwrap();
        let capacity = list.capacity();
        assert_eq!(fetch.run(&guard, capacity), Ok(Outcome::Replaced { version: 7, entries: 1 }));
        assert_eq!(fetch.run(&guard, capacity), Ok(Outcome::Unchanged));
        let key = super::super::parse_key_hash(HASH).unwrap();
        assert!(list.contains(&key, Millis::now()));

        // A bad document: refused, the list in use stays.
        std::fs::write(&path, r#"{"version":8,"entries":[{"key_hash":"nope","expires":null}]}"#)
            .unwrap();
        let err = fetch.run(&guard, capacity).unwrap_err();
        assert!(err.ends_with("refused, invalid key_hash \"nope\" in entry 0"), "{err}");
        assert_eq!(list.stats().version, 7);
        // Too large for the zone: refused whole.
        let many: Vec<String> = (0..=capacity)
            .map(|n| format!(r#"{{"key_hash":"{:032x}","expires":null}}"#, n + 1))
            .collect();
        std::fs::write(&path, format!(r#"{{"version":9,"entries":[{}]}}"#, many.join(",")))
            .unwrap();
        let err = fetch.run(&guard, capacity).unwrap_err();
        assert!(err.contains(&format!("refused, {} entries do not fit", capacity + 1)), "{err}");
        assert!(list.contains(&key, Millis::now()));

        std::fs::remove_file(&path).unwrap();
        let err = fetch.run(&guard, capacity).unwrap_err();
        assert!(err.starts_with("open() \"") && err.ends_with("(2: No such file or directory)"));
        assert_eq!(list.stats().version, 7);
    }

    /// Answers each connection with the next canned response, and keeps the requests.
    fn serve(answers: Vec<String>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/denylist?token=secret", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for answer in answers {
                let (mut conn, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = conn.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                requests.push(String::from_utf8_lossy(&request).to_lowercase());
                conn.write_all(answer.as_bytes()).unwrap();
            }
            requests
        });
        (url, server)
    }

    fn answer(status: &str, headers: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
            body.len()
        )
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system and sockets")]
    fn a_url_is_asked_for_changes_with_its_etag() {
        let (_region, list) = region();
        let doc = format!(r#"{{"version":3,"entries":[{{"key_hash":"{HASH}","expires":null}}]}}"#);
        let (url, server) = serve(vec![
            answer("200 OK", "ETag: \"v3\"\r\n", &doc),
            answer("304 Not Modified", "", ""),
            answer("503 Service Unavailable", "", "down"),
            answer("200 OK", "", "{\"version\":4,"),
        ]);
        let source =
            Source::Url { url, headers: vec![("Authorization".into(), "Bearer t".into())] };
        let fetch = Fetch::new(source, Duration::from_secs(5));
        let guard = list.try_fetch(Millis(0), 0).unwrap();
        let capacity = list.capacity();
        assert_eq!(fetch.run(&guard, capacity), Ok(Outcome::Replaced { version: 3, entries: 1 }));
        assert_eq!(fetch.run(&guard, capacity), Ok(Outcome::Unchanged));
        let err = fetch.run(&guard, capacity).unwrap_err();
        assert!(
            err.starts_with("GET \"http://127.0.0.1:")
                && err.ends_with("/v1/denylist\" answered 503"),
            "{err}"
        );
        let err = fetch.run(&guard, capacity).unwrap_err();
        assert!(err.contains("refused, invalid document: EOF while parsing"), "{err}");
        assert_eq!(list.stats().version, 3);
        let requests = server.join().unwrap();
        assert!(requests[0].contains("authorization: bearer t\r\n"));
        assert!(!requests[0].contains("if-none-match"));
        assert!(requests[1].contains("if-none-match: \"v3\"\r\n"));
    }
}
