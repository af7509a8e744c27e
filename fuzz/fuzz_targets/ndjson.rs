//! The explorer's NDJSON ingest: lines as the module, a spool replay or anyone else sends them.
#![no_main]

use api_sessions::batch::Batch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut batch = Batch::default();
    for line in data.split(|&b| b == b'\n') {
        let before = batch.len();
        let pushed = batch.push_line(line).is_ok();
        assert_eq!(batch.len(), before + usize::from(pushed));
    }
    for record in batch.iter() {
        // Every field of an accepted record reads back from the batch's text.
        assert!(!record.json().is_empty());
        assert!(!record.request_id().is_empty() && !record.node().is_empty());
        let _ = (record.ts(), record.session_start(), record.pid(), record.seq());
        let _ = (record.session_id(), record.session_key(), record.key_hash(), record.method());
        let _ = (record.status(), record.ip(), record.user(), record.role(), record.attack());
        assert!(record.flows().all(|flow| record.json().len() + flow.len() > 0));
        let search = record.search();
        assert_eq!(search, search.to_ascii_lowercase());
    }
});
