//! Times, durations, counts and captured values as the pages show them.

use std::borrow::Cow;

use api_sessions_core::time::Millis;
use percent_encoding::percent_decode_str;

use super::html::Html;

/// `2026-11-22 10:00:00.123` (UTC), as shown in tables.
pub fn time(ts: Millis) -> String {
    let mut text = ts.to_rfc3339();
    text.replace_range(10..11, " ");
    text.pop();
    text
}

/// A time as a `<time>` element: the text is UTC, as [`time`] writes it; the script shows it
/// in the browser's time zone instead when the reader chose local time.
pub fn time_tag(html: &mut Html, ts: Millis) {
    html.element(
        "time",
        &[("datetime", &ts.to_rfc3339()), ("data-ts", &ts.0.to_string())],
        &time(ts),
    );
}

/// `7 days`, `36 hours`: a retention in the largest unit that divides it.
pub fn period(ms: i64) -> String {
    let units = [(86_400_000, "day"), (3_600_000, "hour"), (60_000, "minute"), (1000, "second")];
    for (size, unit) in units {
        if ms >= size && ms % size == 0 {
            let n = ms / size;
            return format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
        }
    }
    format!("{ms} ms")
}

/// A captured parameter value as a reader wants it: percent-escapes decoded (as UTF-8, with
/// U+FFFD for what is not), and `+` as a space in query arguments (`$arg_NAME`, `$args`, which
/// nginx leaves encoded). Hashed values and values without escapes come back as they are.
pub fn decoded<'a>(value: &'a str, source: &str, hashed: bool) -> Cow<'a, str> {
    let plus = source.starts_with("$arg") && value.contains('+');
    if hashed || !(value.contains('%') || plus) {
        return Cow::Borrowed(value);
    }
    let spaced = if plus { Cow::Owned(value.replace('+', " ")) } else { Cow::Borrowed(value) };
    Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
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
        assert_eq!(period(7 * 86_400_000), "7 days");
        assert_eq!(period(36 * 3_600_000), "36 hours");
        assert_eq!(period(86_400_000), "1 day");
        assert_eq!(period(90_000), "90 seconds");
    }

    #[test]
    fn decodes_parameters_for_reading() {
        assert_eq!(decoded("%E6%97%A5%E6%9C%AC%E8%AA%9E", "$arg_q", false), "日本語");
        assert_eq!(decoded("a+b%20c%2Fd", "$arg_q", false), "a b c/d");
        assert_eq!(decoded("a+b", "$cookie_c", false), "a+b");
        assert_eq!(decoded("%FF%41", "$arg_q", false), "\u{FFFD}A");
        assert_eq!(decoded("100%", "$arg_q", false), "100%");
        assert_eq!(decoded("hmac-sha256:%41", "$arg_t", true), "hmac-sha256:%41");
        assert!(matches!(decoded("plain", "$arg_q", false), Cow::Borrowed(_)));
    }
}
