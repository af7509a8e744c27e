//! The built-in key scan: request headers, cookies among them.
#![no_main]

use api_sessions_core::keys::BuiltinScanner;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Headers are `name: value` lines; the last line is the User-Agent.
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let mut scanner = BuiltinScanner::new();
    for line in &lines {
        let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        let value = line.get(colon + 1..).unwrap_or_default();
        scanner.header(&line[..colon], value);
        scanner.header(b"Cookie", line);
    }
    let user_agent = lines.last().copied();
    if let Some(key) = scanner.finish(b"192.0.2.1", user_agent) {
        // A header or cookie key borrows from what was offered; the address keys are built.
        assert!(!key.value.is_empty());
        let found = data.windows(key.value.len()).any(|w| w == &key.value[..]);
        assert!(found || key.value.starts_with(b"192.0.2.1"), "{:?}", key);
    }
});
