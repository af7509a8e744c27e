//! `--auto-block RISK`: a store that, once a batch is stored, puts the keys of the batch's
//! sessions whose risk reached RISK on the denylist, audited as `auto-block`.
//!
//! It wraps the store every ingest path goes through (`POST /v1/records` and `--follow`), so a
//! session is blocked as soon as the records that raised its risk are in. A key already on the
//! list is left as it is, and a key a person unblocked is never blocked again automatically:
//! the analyst's decision stands.

use std::sync::Arc;

use api_sessions_core::time::Millis;

use crate::batch::Batch;
use crate::store::denylist::{self, Action, AuditEntry, Change, Changed, Denylist, Entry};
use crate::store::endpoints::{EndpointKey, Measured, Rank};
use crate::store::values::ValueKind;
use crate::store::{
    Cursor, EndpointRange, Filter, FollowPosition, IngestCounts, ListQuery, PurgeCounts,
    RequestPage, Result, SessionDetail, SessionPage, Store,
};

/// Who the audit log names for automatic blocks.
pub const ACTOR: &str = "auto-block";

/// What `--auto-block` and `--auto-block-ttl` say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoBlock {
    /// Sessions whose risk is at least this are blocked.
    pub risk: u8,
    /// How long; `None` until unblocked.
    pub ttl_ms: Option<i64>,
}

pub struct AutoBlocking {
    inner: Arc<dyn Store>,
    settings: AutoBlock,
}

impl AutoBlocking {
    pub fn new(inner: Arc<dyn Store>, settings: AutoBlock) -> AutoBlocking {
        AutoBlocking { inner, settings }
    }

    /// Blocks the keys of `sessions` that reached the risk. Failures are logged: the records
    /// are stored either way, and the next batch of the session tries again.
    fn block_risky(&self, sessions: Vec<String>) {
        let risky = match self.inner.session_risks(&sessions) {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!("auto-block: cannot read the sessions' risk: {err}");
                return;
            }
        };
        let risky: Vec<_> =
            risky.into_iter().filter(|(_, _, risk)| *risk >= self.settings.risk).collect();
        if risky.is_empty() {
            return;
        }
        let listed = match self.inner.denylist() {
            Ok(list) => list,
            Err(err) => {
                tracing::warn!("auto-block: cannot read the denylist: {err}");
                return;
            }
        };
        let now = Millis::now();
        let mut done: Vec<String> = Vec::new();
        for (session_id, key_hash, risk) in risky {
            let on_list = listed.entries.iter().any(|e| e.key_hash == key_hash && !e.expired(now));
            if on_list || done.contains(&key_hash) || !denylist::is_key_hash(&key_hash) {
                continue;
            }
            match self.inner.denylist_audit(Some(&key_hash), 1000) {
                Ok(history) if unblocked_by_a_person(&history) => continue,
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!("auto-block: cannot read the audit log: {err}");
                    continue;
                }
            }
            let change = Change::Block(Entry {
                key_hash: key_hash.clone(),
                expires: self.settings.ttl_ms.map(|ttl| Millis(now.0 + ttl)),
                reason: format!("risk {risk} reached --auto-block {}", self.settings.risk),
                created_by: ACTOR.to_owned(),
                created_at: now,
                session_id: Some(session_id.clone()),
            });
            match self.inner.change_denylist(&change) {
                Ok(_) => {
                    tracing::info!(
                        "auto-block: blocked the key of session {session_id} (risk {risk})"
                    );
                    done.push(key_hash);
                }
                Err(err) => tracing::warn!("auto-block: cannot block session {session_id}: {err}"),
            }
        }
    }
}

fn unblocked_by_a_person(history: &[AuditEntry]) -> bool {
    history.iter().any(|line| line.action == Action::Unblock && line.by != ACTOR)
}

impl Store for AutoBlocking {
    fn ingest(&self, batch: Batch, position: Option<FollowPosition>) -> Result<IngestCounts> {
        let mut sessions: Vec<String> = batch.iter().map(|r| r.session_id().to_owned()).collect();
        sessions.sort_unstable();
        sessions.dedup();
        let counts = self.inner.ingest(batch, position)?;
        if counts.accepted > 0 {
            self.block_risky(sessions);
        }
        Ok(counts)
    }

    fn follow_position(&self, path: &str) -> Result<Option<FollowPosition>> {
        self.inner.follow_position(path)
    }

    fn retention_ms(&self) -> i64 {
        self.inner.retention_ms()
    }

    fn suggest(&self, kind: ValueKind, text: &str, limit: usize) -> Result<Vec<String>> {
        self.inner.suggest(kind, text, limit)
    }

    fn list_sessions(&self, query: &ListQuery) -> Result<SessionPage> {
        self.inner.list_sessions(query)
    }

    fn session(
        &self,
        session_id: &str,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Option<SessionDetail>> {
        self.inner.session(session_id, filter, after, limit)
    }

    fn session_requests(
        &self,
        session_id: &str,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Option<RequestPage>> {
        self.inner.session_requests(session_id, filter, after, limit)
    }

    fn session_ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        self.inner.session_ids_with_prefix(prefix, limit)
    }

    fn purge(&self) -> Result<PurgeCounts> {
        self.inner.purge()
    }

    fn endpoints(&self, range: &EndpointRange) -> Result<Vec<Measured>> {
        self.inner.endpoints(range)
    }

    fn endpoint_ranking(
        &self,
        range: &EndpointRange,
        rank: &mut dyn Rank,
    ) -> Result<Vec<Measured>> {
        self.inner.endpoint_ranking(range, rank)
    }

    fn request_endpoints(
        &self,
        session_id: &str,
        requests: &[Cursor],
    ) -> Result<Vec<Option<EndpointKey>>> {
        self.inner.request_endpoints(session_id, requests)
    }

    fn change_denylist(&self, change: &Change) -> Result<Changed> {
        self.inner.change_denylist(change)
    }

    fn denylist(&self) -> Result<Denylist> {
        self.inner.denylist()
    }

    fn denylist_audit(&self, key_hash: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>> {
        self.inner.denylist_audit(key_hash, limit)
    }

    fn session_risks(&self, session_ids: &[String]) -> Result<Vec<(String, String, u8)>> {
        self.inner.session_risks(session_ids)
    }
}
