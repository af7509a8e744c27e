//! Endpoints in ClickHouse: each `requests` row names its endpoint (`endpoint_server` and
//! `METHOD TEMPLATE` in `endpoint`), and `endpoint_hours` keeps the encoded [`Stats`] of each
//! endpoint and hour.
//!
//! `endpoint_hours` is a `ReplacingMergeTree`: a batch reads the hours it touches, merges what
//! it adds and inserts the sums with a higher version, and readers take the row of the highest
//! version (`argMax`), merged away or not. The one writer keeps the hours it wrote last in
//! memory, so a batch of the current hour reads nothing back.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::http::Client;
use super::sql::literal;
use crate::endpoints::registry::{Limits, Registry};
use crate::endpoints::stats::{Observation, Stats};
use crate::store::endpoints::{EndpointKey, HourPlan, HourStats, Measured, Merged};
use crate::store::{Cursor, EndpointRange, Result, StoreError};

/// The schema's migration for endpoints (see `schema`). Partitioned by day like `requests`
/// (`intDiv(hour, 24)` is its `intDiv(ts, 86400000)`), so the purge drops them together.
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS endpoint_hours (
        server   String,
        endpoint String,
        hour     Int64,
        counted  UInt8,
        version  Int64,
        stats    String
    ) ENGINE = ReplacingMergeTree(version)
    PARTITION BY intDiv(hour, 24)
    ORDER BY (server, endpoint, hour)",
    // Last, and one statement: the releases in distributions have no `ADD COLUMN IF NOT
    // EXISTS`, so this is the one statement a migration cut short cannot run again.
    "ALTER TABLE requests
        ADD COLUMN endpoint_server String DEFAULT '',
        ADD COLUMN endpoint String DEFAULT '',
        ADD COLUMN duration_ms Float64 DEFAULT 0,
        ADD COLUMN response_bytes UInt64 DEFAULT 0",
];

/// Hours kept in memory behind the newest one written.
const CACHED_HOURS: i64 = 2;

/// The writer's view of the endpoints.
#[derive(Default)]
pub struct Writer {
    pub registry: Registry,
    /// The last stats written of recent endpoint-hours, with whether they count against the cap.
    cache: HashMap<(EndpointKey, i64), (Stats, bool)>,
}

#[derive(Serialize)]
struct HourRow {
    server: String,
    endpoint: String,
    hour: i64,
    counted: u8,
    version: i64,
    stats: String,
}

fn split(endpoint: &str) -> Option<(String, String)> {
    crate::endpoints::parse_key(endpoint).map(|(m, t)| (m.to_owned(), t.to_owned()))
}

fn decode(text: &str) -> Result<Stats> {
    BASE64
        .decode(text)
        .ok()
        .and_then(|bytes| Stats::decode(&bytes).ok())
        .ok_or_else(|| StoreError::new("unreadable endpoint statistics"))
}

impl Writer {
    pub fn load(client: &Client) -> Result<Writer> {
        let mut writer = Writer::default();
        writer.reload(client)?;
        Ok(writer)
    }

    /// Rebuilds the registry from the stored endpoints and forgets the cached hours.
    pub fn reload(&mut self, client: &Client) -> Result<()> {
        #[derive(Deserialize)]
        struct Known {
            server: String,
            endpoint: String,
            counted: u8,
        }
        let rows: Vec<Known> = client.rows(
            "SELECT server, endpoint, max(counted) AS counted FROM endpoint_hours \
             GROUP BY server, endpoint",
        )?;
        self.registry = Registry::new(Limits::default());
        self.cache.clear();
        for row in rows {
            if let Some((method, template)) = split(&row.endpoint) {
                self.registry.restore(&row.server, &method, &template, row.counted != 0);
            }
        }
        Ok(())
    }

    /// Adds what a batch counted to the stored hours; `counted` tells which endpoints count
    /// against the cap.
    pub fn save_hours(
        &mut self,
        client: &Client,
        version: i64,
        added: HourStats<EndpointKey>,
        counted: &HashSet<EndpointKey>,
    ) -> Result<()> {
        if added.hours.is_empty() {
            return Ok(());
        }
        let missing: Vec<&(EndpointKey, i64)> =
            added.hours.keys().filter(|key| !self.cache.contains_key(*key)).collect();
        let mut stored: HashMap<(EndpointKey, i64), Stats> = HashMap::new();
        for chunk in missing.chunks(2000) {
            let mut keys = String::new();
            for (endpoint, hour) in chunk {
                if !keys.is_empty() {
                    keys.push_str(", ");
                }
                let _ = write!(
                    keys,
                    "({}, {}, {hour})",
                    literal(&endpoint.server),
                    literal(&endpoint.key())
                );
            }
            #[derive(Deserialize)]
            struct Stored {
                server: String,
                endpoint: String,
                hour: i64,
                last: String,
            }
            let rows: Vec<Stored> = client.rows(&format!(
                "SELECT server, endpoint, hour, argMax(stats, version) AS last
                 FROM endpoint_hours WHERE (server, endpoint, hour) IN ({keys})
                 GROUP BY server, endpoint, hour"
            ))?;
            for row in rows {
                let Some((method, template)) = split(&row.endpoint) else { continue };
                let key = EndpointKey { server: row.server, method, template };
                stored.insert((key, row.hour), decode(&row.last)?);
            }
        }
        let mut body = Vec::new();
        let newest = added.hours.keys().map(|(_, hour)| *hour).max().unwrap_or(0);
        for (key, stats) in added.hours {
            let mut total = self
                .cache
                .remove(&key)
                .map(|(stats, _)| stats)
                .or_else(|| stored.remove(&key))
                .unwrap_or_default();
            total.merge(&stats);
            let is_counted = counted.contains(&key.0);
            let row = HourRow {
                server: key.0.server.clone(),
                endpoint: key.0.key(),
                hour: key.1,
                counted: u8::from(is_counted),
                version,
                stats: BASE64.encode(total.encode()),
            };
            serde_json::to_writer(&mut body, &row)
                .map_err(|err| StoreError::new(err.to_string()))?;
            body.push(b'\n');
            self.cache.insert(key, (total, is_counted));
        }
        client.insert("endpoint_hours", &body)?;
        self.cache.retain(|(_, hour), _| *hour >= newest - CACHED_HOURS);
        Ok(())
    }
}

pub fn measure(client: &Client, range: &EndpointRange, floor: i64) -> Result<Vec<Measured>> {
    let from = range.from.map_or(floor, |from| from.0.max(floor));
    let plan = HourPlan::new(from, range.to.map(|to| to.0));
    let only = |server: &str, endpoint: &str| match &range.only {
        None => String::new(),
        Some(keys) if keys.is_empty() => " AND 0".to_owned(),
        Some(keys) => {
            let list: Vec<String> = keys
                .iter()
                .map(|k| format!("({}, {})", literal(&k.server), literal(&k.key())))
                .collect();
            format!(" AND ({server}, {endpoint}) IN ({})", list.join(", "))
        }
    };
    let mut merged = Merged::default();
    if let Some((first, last)) = plan.hours {
        let last = last.map_or(String::new(), |last| format!(" AND hour <= {last}"));
        #[derive(Deserialize)]
        struct Row {
            server: String,
            endpoint: String,
            last: String,
        }
        let rows: Vec<Row> = client.rows(&format!(
            "SELECT server, endpoint, argMax(stats, version) AS last FROM endpoint_hours
             WHERE hour >= {first}{last}{} GROUP BY server, endpoint, hour",
            only("server", "endpoint")
        ))?;
        for row in rows {
            let Some((method, template)) = split(&row.endpoint) else { continue };
            merged.add(EndpointKey { server: row.server, method, template }, &decode(&row.last)?);
        }
    }
    for (start, end) in &plan.edges {
        #[derive(Deserialize)]
        struct Row {
            server: String,
            endpoint: String,
            ts: i64,
            status: u16,
            duration_ms: f64,
            response_bytes: u64,
            attack: u8,
            flows: Vec<String>,
            session_id: String,
        }
        let rows: Vec<Row> = client.rows(&format!(
            "SELECT endpoint_server AS server, endpoint, ts, status, duration_ms, response_bytes,
                    attack IS NOT NULL AS attack, flows, session_id
             FROM requests WHERE ts BETWEEN {start} AND {end} AND endpoint != ''{}",
            only("endpoint_server", "endpoint")
        ))?;
        for row in rows {
            let Some((method, template)) = split(&row.endpoint) else { continue };
            let request = Observation {
                ts: row.ts,
                status: row.status,
                duration_ms: row.duration_ms,
                response_bytes: row.response_bytes,
                session_id: &row.session_id,
                attack: row.attack != 0,
            };
            let flows: Vec<&str> = row.flows.iter().map(String::as_str).collect();
            merged.add_request(
                EndpointKey { server: row.server, method, template },
                &request,
                &flows,
            );
        }
    }
    Ok(merged.finish())
}

pub fn of_requests(
    client: &Client,
    session_id: &str,
    requests: &[Cursor],
) -> Result<Vec<Option<EndpointKey>>> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    #[derive(Deserialize)]
    struct Row {
        rid: i64,
        server: String,
        endpoint: String,
    }
    let rids: Vec<String> = requests.iter().map(|r| r.id.to_string()).collect();
    let rows: Vec<Row> = client.rows(&format!(
        "SELECT rid, endpoint_server AS server, endpoint FROM requests
         WHERE session_id = {} AND rid IN ({}) AND endpoint != ''",
        literal(session_id),
        rids.join(", ")
    ))?;
    let found: HashMap<i64, EndpointKey> = rows
        .into_iter()
        .filter_map(|row| {
            let (method, template) = split(&row.endpoint)?;
            Some((row.rid, EndpointKey { server: row.server, method, template }))
        })
        .collect();
    Ok(requests.iter().map(|r| found.get(&r.id).cloned()).collect())
}
