//! Times and durations as the pages show them.

use api_sessions_core::time::Millis;

/// `2026-11-22 10:00:00.123` (UTC), as shown in tables.
pub fn time(ts: Millis) -> String {
    let mut text = ts.to_rfc3339();
    text.replace_range(10..11, " ");
    text.pop();
    text
}

/// `1h 02m`, `3m 07s`, `12.3s`, `45ms`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else if ms >= 1000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

/// `1,234,567`: counts with thousands separators.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_durations() {
        assert_eq!(time(Millis(1_795_341_600_123)), "2026-11-22 10:00:00.123");
        assert_eq!(duration(45), "45ms");
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(187_000), "3m 07s");
        assert_eq!(duration(3_720_000), "1h 02m");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }
}
