//! What `api_sessions_status` serves: the counters of every worker, their total and the
//! session zone's figures, as JSON or as Prometheus text.

use core::fmt::Write;

use serde::Serialize;

use super::{CounterValues, Snapshot};
use crate::denylist::DenylistStats;
use crate::session_table::TableStats;

/// `{"workers":[{"pid":N,<counters>}...],"total":{<counters>},"zone":{...}|null}`, and with a
/// denylist its figures after `zone`.
#[derive(Serialize)]
struct Document<'a> {
    workers: Vec<WorkerEntry<'a>>,
    total: &'a CounterValues,
    zone: Option<Zone>,
    #[serde(flatten)]
    denylist: Option<Block>,
}

/// What blocking did and the list in use, for every worker of the node.
#[derive(Serialize)]
struct Block {
    blocked: u64,
    block_dry_run: u64,
    denylist_entries: u64,
    denylist_version: u64,
    denylist_errors: u64,
}

#[derive(Serialize)]
struct WorkerEntry<'a> {
    pid: u32,
    #[serde(flatten)]
    counters: &'a CounterValues,
}

#[derive(Serialize)]
struct Zone {
    entries: u64,
    evictions: u64,
    capacity: u64,
}

/// The JSON document, with a final newline.
pub fn json(
    snapshot: &Snapshot,
    zone: Option<TableStats>,
    denylist: Option<DenylistStats>,
) -> String {
    let document = Document {
        workers: snapshot
            .workers
            .iter()
            .map(|(pid, counters)| WorkerEntry { pid: *pid, counters })
            .collect(),
        total: &snapshot.total,
        zone: zone.map(|z| Zone {
            entries: z.entries,
            evictions: z.evictions,
            capacity: z.capacity,
        }),
        denylist: denylist.map(|d| Block {
            blocked: d.blocked,
            block_dry_run: d.dry_run,
            denylist_entries: d.entries,
            denylist_version: d.version,
            denylist_errors: d.errors,
        }),
    };
    // Plain structs of numbers: serialising them cannot fail.
    let mut out = serde_json::to_string(&document).expect("status serialisation");
    out.push('\n');
    out
}

/// Prometheus text format: the node's totals (per-pid series would churn on every reload).
pub fn prometheus(
    snapshot: &Snapshot,
    zone: Option<TableStats>,
    denylist: Option<DenylistStats>,
) -> String {
    let mut out = String::new();
    for ((name, value), help) in snapshot.total.named().into_iter().zip(HELP) {
        // Every counter is a `_total` but `queued`, a gauge; `spooled` keeps its `_total` name
        // but goes down as the spool is replayed, so it is typed a gauge.
        let (metric, kind) = match name {
            "queued" => (format!("api_sessions_{name}"), "gauge"),
            "spooled" => (format!("api_sessions_{name}_total"), "gauge"),
            _ => (format!("api_sessions_{name}_total"), "counter"),
        };
        let _ = write!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}\n{metric} {value}\n");
    }
    if let Some(z) = zone {
        let _ = write!(
            out,
            "# HELP api_sessions_zone_entries Keys in the session zone.\n\
             # TYPE api_sessions_zone_entries gauge\napi_sessions_zone_entries {}\n\
             # HELP api_sessions_zone_evictions_total Keys evicted from the full session zone.\n\
             # TYPE api_sessions_zone_evictions_total counter\n\
             api_sessions_zone_evictions_total {}\n",
            z.entries, z.evictions
        );
    }
    if let Some(d) = denylist {
        for (metric, kind, help, value) in [
            ("blocked_total", "counter", "Requests answered with the block status.", d.blocked),
            (
                "block_dry_run_total",
                "counter",
                "Requests that would have been blocked (dry run).",
                d.dry_run,
            ),
            ("denylist_entries", "gauge", "Entries of the denylist in use.", d.entries),
            ("denylist_version", "gauge", "Version of the denylist in use.", d.version),
            (
                "denylist_errors_total",
                "counter",
                "Denylist fetches that failed or were refused.",
                d.errors,
            ),
        ] {
            let _ = write!(
                out,
                "# HELP api_sessions_{metric} {help}\n# TYPE api_sessions_{metric} {kind}\n\
                 api_sessions_{metric} {value}\n"
            );
        }
    }
    out
}

/// Help texts, in the order of [`CounterValues::named`].
const HELP: [&str; 6] = [
    "Records captured by the module.",
    "Records delivered to the export destination.",
    "Records lost: queue full, refused by the receiver, spool full.",
    "Records waiting in the exporter queues.",
    "Records waiting in the disk spool.",
    "Failed delivery attempts.",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let values = |n| CounterValues {
            captured: n,
            exported: n + 1,
            dropped: n + 2,
            queued: n + 3,
            spooled: n + 4,
            export_errors: n + 5,
        };
        Snapshot { workers: vec![(41, values(10)), (42, values(20))], total: values(30) }
    }

    #[test]
    fn json_document() {
        let zone = TableStats { entries: 7, evictions: 1, capacity: 80_107 };
        assert_eq!(
            json(&snapshot(), Some(zone), None),
            concat!(
                r#"{"workers":[{"pid":41,"captured":10,"exported":11,"dropped":12,"queued":13,"#,
                r#""spooled":14,"export_errors":15},{"pid":42,"captured":20,"exported":21,"#,
                r#""dropped":22,"queued":23,"spooled":24,"export_errors":25}],"total":"#,
                r#"{"captured":30,"exported":31,"dropped":32,"queued":33,"spooled":34,"#,
                r#""export_errors":35},"zone":{"entries":7,"evictions":1,"capacity":80107}}"#,
                "\n"
            )
        );
        let empty = json(&Snapshot::default(), None, None);
        assert_eq!(
            empty,
            concat!(
                r#"{"workers":[],"total":{"captured":0,"exported":0,"dropped":0,"queued":0,"#,
                r#""spooled":0,"export_errors":0},"zone":null}"#,
                "\n"
            )
        );
    }

    #[test]
    fn denylist_figures() {
        let d = DenylistStats {
            entries: 4,
            version: 9,
            errors: 2,
            capacity: 100,
            blocked: 5,
            dry_run: 6,
        };
        let doc = json(&Snapshot::default(), None, Some(d));
        assert!(doc.ends_with(
            r#""zone":null,"blocked":5,"block_dry_run":6,"denylist_entries":4,"denylist_version":9,"denylist_errors":2}
"#
        ));
        let text = prometheus(&Snapshot::default(), None, Some(d));
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).skip(6).collect();
        assert_eq!(
            samples,
            [
                "api_sessions_blocked_total 5",
                "api_sessions_block_dry_run_total 6",
                "api_sessions_denylist_entries 4",
                "api_sessions_denylist_version 9",
                "api_sessions_denylist_errors_total 2",
            ]
        );
        assert!(text.contains("# TYPE api_sessions_denylist_version gauge\n"));
    }

    #[test]
    fn prometheus_text() {
        let zone = TableStats { entries: 7, evictions: 1, capacity: 80_107 };
        let text = prometheus(&snapshot(), Some(zone), None);
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "api_sessions_captured_total 30",
                "api_sessions_exported_total 31",
                "api_sessions_dropped_total 32",
                "api_sessions_queued 33",
                "api_sessions_spooled_total 34",
                "api_sessions_export_errors_total 35",
                "api_sessions_zone_entries 7",
                "api_sessions_zone_evictions_total 1",
            ]
        );
        assert!(text.contains(
            "# HELP api_sessions_spooled_total Records waiting in the disk spool.\n\
             # TYPE api_sessions_spooled_total gauge\n"
        ));
        assert!(text.contains("# TYPE api_sessions_queued gauge\n"));
        assert!(text.contains(
            "# HELP api_sessions_export_errors_total Failed delivery attempts.\n\
             # TYPE api_sessions_export_errors_total counter\n"
        ));
        assert!(!prometheus(&snapshot(), None, None).contains("zone"));
    }
}
