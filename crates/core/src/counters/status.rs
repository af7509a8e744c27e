//! What `api_sessions_status` serves: the counters of every worker, their total and the
//! session zone's figures, as JSON or as Prometheus text.

use core::fmt::Write;

use serde::Serialize;

use super::{CounterValues, Snapshot};
use crate::session_table::TableStats;

/// `{"workers":[{"pid":N,<counters>}...],"total":{<counters>},"zone":{...}|null}`.
#[derive(Serialize)]
struct Document<'a> {
    workers: Vec<WorkerEntry<'a>>,
    total: &'a CounterValues,
    zone: Option<Zone>,
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
pub fn json(snapshot: &Snapshot, zone: Option<TableStats>) -> String {
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
    };
    // Plain structs of numbers: serialising them cannot fail.
    let mut out = serde_json::to_string(&document).expect("status serialisation");
    out.push('\n');
    out
}

/// Prometheus text format: the node's totals (per-pid series would churn on every reload).
pub fn prometheus(snapshot: &Snapshot, zone: Option<TableStats>) -> String {
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
            json(&snapshot(), Some(zone)),
            concat!(
                r#"{"workers":[{"pid":41,"captured":10,"exported":11,"dropped":12,"queued":13,"#,
                r#""spooled":14,"export_errors":15},{"pid":42,"captured":20,"exported":21,"#,
                r#""dropped":22,"queued":23,"spooled":24,"export_errors":25}],"total":"#,
                r#"{"captured":30,"exported":31,"dropped":32,"queued":33,"spooled":34,"#,
                r#""export_errors":35},"zone":{"entries":7,"evictions":1,"capacity":80107}}"#,
                "\n"
            )
        );
        let empty = json(&Snapshot::default(), None);
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
    fn prometheus_text() {
        let zone = TableStats { entries: 7, evictions: 1, capacity: 80_107 };
        let text = prometheus(&snapshot(), Some(zone));
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
        assert!(!prometheus(&snapshot(), None).contains("zone"));
    }
}
