//! The explorer reads every record line the module writes as the record it stands for.

use api_sessions::batch::{Batch, RecordRef};
use api_sessions_core::record::Record;
use api_sessions_core::testing;
use proptest::prelude::*;

/// What `q` searches in a record, as the documentation of [`RecordRef::search`] describes it.
fn search_text(record: &Record) -> String {
    let mut text = record.path.clone();
    if let Some(user) = &record.user {
        text.push('\n');
        text.push_str(user);
    }
    for param in &record.params {
        text.push_str(&format!("\n{}={}", param.name, param.value));
    }
    if let Some(attack) = &record.attack {
        text.push('\n');
        text.push_str(&attack.request.line);
    }
    text.to_ascii_lowercase()
}

fn check(got: RecordRef<'_>, line: &[u8], record: &Record) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.json().as_bytes(), line, "the line is kept as received");
    prop_assert_eq!(&serde_json::from_str::<Record>(got.json())?, record);
    prop_assert_eq!((got.ts(), got.session_start()), (record.ts.0, record.session_start.0));
    prop_assert_eq!(got.request_id(), &record.request_id);
    prop_assert_eq!(got.node(), &record.node);
    prop_assert_eq!((got.pid(), got.seq()), (record.pid, record.seq));
    prop_assert_eq!(got.session_id(), &record.session_id);
    prop_assert_eq!(got.session_key(), &record.session_key);
    prop_assert_eq!(got.key_hash(), &record.key_hash);
    prop_assert_eq!(got.method(), &record.method);
    prop_assert_eq!(got.status(), record.status);
    prop_assert_eq!(got.ip(), &record.ip);
    prop_assert_eq!(got.user(), record.user.as_deref());
    prop_assert_eq!(got.role(), record.role.as_deref());
    prop_assert_eq!(got.attack(), record.attack.as_ref().map(|a| a.kind.as_str()));
    prop_assert_eq!(got.flows().collect::<Vec<_>>(), record.flows.clone());
    prop_assert_eq!(got.search(), search_text(record));
    prop_assert_eq!(got.blocked(), record.blocked);
    Ok(())
}

proptest! {
    #[test]
    fn reads_back_every_record_the_module_writes(written in testing::written()) {
        let lines: Vec<&[u8]> = written
            .lines
            .split_inclusive(|&b| b == b'\n')
            .map(|line| line.strip_suffix(b"\n").unwrap_or(line))
            .collect();
        prop_assert_eq!(lines.len(), written.records.len());
        let mut batch = Batch::default();
        for line in &lines {
            batch.push_line(line).map_err(TestCaseError::fail)?;
        }
        prop_assert_eq!(batch.len(), written.records.len());
        for ((got, line), record) in batch.iter().zip(&lines).zip(&written.records) {
            check(got, line, record)?;
        }
    }
}
