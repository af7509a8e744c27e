//! `--follow`: whole lines only, rotation by rename and by truncation, restarts.

mod fixtures;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use api_sessions::batch::Batch;
use api_sessions::follow::{Follower, Options};
use api_sessions::store::denylist;
use api_sessions::store::endpoints::{EndpointKey, Measured, Rank};
use api_sessions::store::{
    self, Cursor, Filter, FollowPosition, IngestCounts, ListQuery, PurgeCounts, RequestPage,
    SessionDetail, SessionPage, Store,
};
use fixtures::*;

fn options() -> Options {
    Options { poll: Duration::from_millis(10), drain_grace: Duration::from_millis(200) }
}

fn append(path: &Path, data: &[u8]) {
    OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(data).unwrap();
}

fn line(n: u64) -> Vec<u8> {
    ndjson(&[record("f", n, base() + n as i64)])
}

/// Request ids stored, in time order.
fn stored(store: &dyn Store) -> Vec<String> {
    let detail = store.session("f", &Filter::default(), None, 1000).unwrap();
    let Some(detail) = detail else { return Vec::new() };
    detail
        .requests
        .requests
        .iter()
        .map(|r| {
            let value: serde_json::Value = serde_json::from_str(&r.json).unwrap();
            value["request_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn ids(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
    range.map(|n| format!("f-req-{n}")).collect()
}

fn stores_whole_lines_once_and_waits_for_the_rest(kind: Kind) {
    let t = kind.store();
    let path = t.dir.path().join("records.ndjson");
    let mut follower = Follower::new(t.store.clone(), &path, options());
    follower.poll(); // no file yet: nothing, no panic

    append(&path, &line(1));
    let second = line(2);
    let (head, tail) = second.split_at(40);
    append(&path, head);
    follower.poll();
    assert_eq!(stored(&*t.store), ids(1..=1));
    follower.poll();
    assert_eq!(stored(&*t.store), ids(1..=1), "half a line waits");

    append(&path, tail);
    append(&path, b"garbage that is not JSON\n");
    append(&path, &line(3));
    follower.poll();
    assert_eq!(stored(&*t.store), ids(1..=3));
    let position = t.store.follow_position(&path.to_string_lossy()).unwrap().unwrap();
    assert_eq!(position.offset, fs::metadata(&path).unwrap().len());
}

fn survives_rename_rotation_and_reads_late_lines_of_the_old_file(kind: Kind) {
    let t = kind.store();
    let path = t.dir.path().join("records.ndjson");
    let rotated = t.dir.path().join("records.ndjson.1");
    let mut follower = Follower::new(t.store.clone(), &path, options());
    append(&path, &line(1));
    follower.poll();

    // logrotate renames; nginx keeps writing to the old file until it reopens.
    fs::rename(&path, &rotated).unwrap();
    append(&rotated, &line(2));
    follower.poll();
    assert_eq!(stored(&*t.store), ids(1..=2), "the renamed file is still read");
    append(&rotated, &line(3));
    append(&path, &line(4));
    follower.poll();
    append(&rotated, &line(5));
    append(&path, &line(6));
    follower.poll();
    assert_eq!(stored(&*t.store), ids(1..=6));

    // After the grace period the old file is let go; the new one goes on.
    std::thread::sleep(options().drain_grace + Duration::from_millis(50));
    follower.poll();
    append(&rotated, &line(7));
    append(&path, &line(8));
    follower.poll();
    let got = stored(&*t.store);
    assert!(
        got.contains(&"f-req-8".to_string()) && !got.contains(&"f-req-7".to_string()),
        "{got:?}"
    );
}

fn survives_truncation_in_place(kind: Kind) {
    let t = kind.store();
    let path = t.dir.path().join("records.ndjson");
    let mut follower = Follower::new(t.store.clone(), &path, options());
    append(&path, &[line(1), line(2), line(3)].concat());
    follower.poll();

    // copytruncate: the file is emptied and writing goes on from its start.
    fs::write(&path, b"").unwrap();
    append(&path, &line(4));
    follower.poll();
    assert_eq!(stored(&*t.store), ids(1..=4));

    // Truncated and refilled past the old offset before the next poll: the byte before the
    // offset is no longer a line end.
    fs::write(&path, [line(5), line(6), line(7), line(8)].concat()).unwrap();
    let longer = fs::metadata(&path).unwrap().len();
    follower.poll();
    assert_eq!(stored(&*t.store), ids(1..=8));
    let position = t.store.follow_position(&path.to_string_lossy()).unwrap().unwrap();
    assert_eq!(position.offset, longer);
}

/// Counts the records handed to the store, to tell a resumed read from a read from the start
/// (duplicates would be dropped either way).
struct Counting {
    inner: Arc<dyn Store>,
    records: AtomicU64,
}

impl Store for Counting {
    fn ingest(
        &self,
        batch: Batch,
        position: Option<FollowPosition>,
    ) -> store::Result<IngestCounts> {
        self.records.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.inner.ingest(batch, position)
    }
    fn follow_position(&self, path: &str) -> store::Result<Option<FollowPosition>> {
        self.inner.follow_position(path)
    }
    fn retention_ms(&self) -> i64 {
        self.inner.retention_ms()
    }
    fn list_sessions(&self, query: &ListQuery) -> store::Result<SessionPage> {
        self.inner.list_sessions(query)
    }
    fn session(
        &self,
        id: &str,
        f: &Filter,
        a: Option<Cursor>,
        l: usize,
    ) -> store::Result<Option<SessionDetail>> {
        self.inner.session(id, f, a, l)
    }
    fn session_requests(
        &self,
        id: &str,
        f: &Filter,
        a: Option<Cursor>,
        l: usize,
    ) -> store::Result<Option<RequestPage>> {
        self.inner.session_requests(id, f, a, l)
    }
    fn session_ids_with_prefix(&self, prefix: &str, limit: usize) -> store::Result<Vec<String>> {
        self.inner.session_ids_with_prefix(prefix, limit)
    }
    fn suggest(
        &self,
        kind: store::values::ValueKind,
        text: &str,
        limit: usize,
    ) -> store::Result<Vec<String>> {
        self.inner.suggest(kind, text, limit)
    }
    fn purge(&self) -> store::Result<PurgeCounts> {
        self.inner.purge()
    }
    fn endpoints(&self, range: &store::EndpointRange) -> store::Result<Vec<Measured>> {
        self.inner.endpoints(range)
    }
    fn endpoint_ranking(
        &self,
        range: &store::EndpointRange,
        rank: &mut dyn Rank,
    ) -> store::Result<Vec<Measured>> {
        self.inner.endpoint_ranking(range, rank)
    }
    fn request_endpoints(
        &self,
        id: &str,
        requests: &[Cursor],
    ) -> store::Result<Vec<Option<EndpointKey>>> {
        self.inner.request_endpoints(id, requests)
    }
    fn change_denylist(&self, change: &denylist::Change) -> store::Result<denylist::Changed> {
        self.inner.change_denylist(change)
    }
    fn denylist(&self) -> store::Result<denylist::Denylist> {
        self.inner.denylist()
    }
    fn denylist_audit(
        &self,
        key_hash: Option<&str>,
        limit: usize,
    ) -> store::Result<Vec<denylist::AuditEntry>> {
        self.inner.denylist_audit(key_hash, limit)
    }
    fn session_risks(&self, ids: &[String]) -> store::Result<Vec<(String, String, u8)>> {
        self.inner.session_risks(ids)
    }
}

fn a_restart_resumes_at_the_saved_offset(kind: Kind) {
    let t = kind.store();
    let path = t.dir.path().join("records.ndjson");
    append(&path, &[line(1), line(2)].concat());
    Follower::new(t.store.clone(), &path, options()).poll();
    append(&path, &line(3));

    let counting = Arc::new(Counting { inner: t.store.clone(), records: AtomicU64::new(0) });
    let mut restarted = Follower::new(counting.clone(), &path, options());
    restarted.poll();
    assert_eq!(stored(&*t.store), ids(1..=3));
    assert_eq!(counting.records.load(Ordering::Relaxed), 1, "only the new line was read");
}

fn a_restart_after_rotation_finishes_the_rotated_file_first(kind: Kind) {
    let t = kind.store();
    let path = t.dir.path().join("records.ndjson");
    append(&path, &line(1));
    Follower::new(t.store.clone(), &path, options()).poll();

    // While stopped: more lines, then rotation and a new file.
    append(&path, &line(2));
    fs::rename(&path, t.dir.path().join("records.ndjson-20261122")).unwrap();
    append(&path, &line(3));

    let store: Arc<dyn Store> = t.store.clone();
    let mut restarted = Follower::new(store, &path, options());
    restarted.poll();
    assert_eq!(stored(&*t.store), ids(1..=3));
}

fn the_thread_stops_when_told(kind: Kind) {
    let t = kind.store();
    let path = t.dir.path().join("records.ndjson");
    append(&path, &line(1));
    let (stop, stopped) = std::sync::mpsc::channel();
    let follower = Follower::new(t.store.clone(), &path, options());
    let thread = std::thread::spawn(move || follower.run(stopped));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stored(&*t.store).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the follower stored nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.send(()).unwrap();
    thread.join().unwrap();
}

on_every_store!(
    stores_whole_lines_once_and_waits_for_the_rest,
    survives_rename_rotation_and_reads_late_lines_of_the_old_file,
    survives_truncation_in_place,
    a_restart_resumes_at_the_saved_offset,
    a_restart_after_rotation_finishes_the_rotated_file_first,
    the_thread_stops_when_told,
);
