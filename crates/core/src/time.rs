//! UTC timestamps with millisecond precision, as records carry them.
//!
//! Records are written by the exporter thread at a high rate, so formatting writes straight
//! into the output buffer; parsing accepts what analysts type into filters as well.

use core::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

const MS_PER_DAY: i64 = 86_400_000;

/// The formatted date of the last day written by [`Millis::write_rfc3339_cached`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DateCache {
    day: Option<i64>,
    date: [u8; 11],
}

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub i64);

impl Millis {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let since =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Millis(since.as_millis() as i64)
    }

    /// The UTC midnight that starts this timestamp's day.
    pub fn day_start(self) -> Self {
        Millis(self.0.div_euclid(MS_PER_DAY) * MS_PER_DAY)
    }

    /// Appends `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        self.write_rfc3339_cached(&mut DateCache::default(), out);
    }

    /// [`Self::write_rfc3339`], with the date part kept in `cache` for the next timestamp of
    /// the same day (records come in time order, mostly from one day).
    pub fn write_rfc3339_cached(self, cache: &mut DateCache, out: &mut Vec<u8>) {
        let days = self.0.div_euclid(MS_PER_DAY);
        if cache.day != Some(days) {
            let (year, month, day) = civil_from_days(days);
            // Years outside 0..=9999 cannot be written in RFC 3339; clamp, not garbage.
            let year = year.clamp(0, 9999) as u32;
            let mut date = *b"0000-00-00T";
            for (pos, value) in
                [(0, year / 100), (2, year % 100), (5, month as u32), (8, day as u32)]
            {
                date[pos] = b'0' + (value / 10) as u8;
                date[pos + 1] = b'0' + (value % 10) as u8;
            }
            *cache = DateCache { day: Some(days), date };
        }
        let ms_of_day = self.0.rem_euclid(MS_PER_DAY);
        let secs = ms_of_day / 1000;
        let ms = ms_of_day % 1000;
        let mut time = *b"00:00:00.000Z";
        for (pos, value) in [(0, secs / 3600), (3, secs / 60 % 60), (6, secs % 60)] {
            time[pos] = b'0' + (value / 10) as u8;
            time[pos + 1] = b'0' + (value % 10) as u8;
        }
        time[9] = b'0' + (ms / 100) as u8;
        time[10] = b'0' + (ms / 10 % 10) as u8;
        time[11] = b'0' + (ms % 10) as u8;
        out.extend_from_slice(&cache.date);
        out.extend_from_slice(&time);
    }

    /// Formats as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn to_rfc3339(self) -> String {
        let mut out = Vec::with_capacity(24);
        self.write_rfc3339(&mut out);
        // SAFETY: write_rfc3339 only writes ASCII digits and punctuation.
        unsafe { String::from_utf8_unchecked(out) }
    }

    /// Parses a timestamp strictly as RFC 3339 has it: date, time and an offset (`Z` or
    /// `±HH:MM`), for documents machines write.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        let zoned = b.last().is_some_and(|c| matches!(c, b'Z' | b'z'))
            || (b.len() > 6 && matches!(b[b.len() - 6], b'+' | b'-'));
        if b.len() < 20 || !zoned || text.trim().len() != text.len() {
            return None;
        }
        Self::parse(text)
    }

    /// Parses an RFC 3339 timestamp (`Z` or `±HH:MM` offset, optional fraction), or the
    /// offset-less forms an HTML `datetime-local` input produces (`YYYY-MM-DDTHH:MM[:SS]`,
    /// read as UTC), or a plain date (`YYYY-MM-DD`, midnight UTC).
    pub fn parse(text: &str) -> Option<Self> {
        let b = text.trim().as_bytes();
        let num = |range: core::ops::Range<usize>| -> Option<i64> {
            let digits = b.get(range)?;
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(digits.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
        };

        let year = num(0..4)?;
        if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return None;
        }
        let month = num(5..7)?;
        let day = num(8..10)?;
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        let mut ms = days_from_civil(year, month, day) * MS_PER_DAY;
        if b.len() == 10 {
            return Some(Millis(ms));
        }
        if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
            return None;
        }
        let hour = num(11..13)?;
        let minute = num(14..16)?;
        let mut pos = 16;
        let mut second = 0;
        if b.get(pos) == Some(&b':') {
            second = num(17..19)?;
            pos = 19;
        }
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        ms += ((hour * 60 + minute) * 60 + second.min(59)) * 1000;

        if b.get(pos) == Some(&b'.') {
            pos += 1;
            let start = pos;
            while b.get(pos).is_some_and(u8::is_ascii_digit) {
                pos += 1;
            }
            if pos == start {
                return None;
            }
            // Only the first three fraction digits matter at millisecond precision.
            let frac = &b[start..pos.min(start + 3)];
            let scale = [100, 10, 1];
            for (i, d) in frac.iter().enumerate() {
                ms += i64::from(d - b'0') * scale[i];
            }
        }

        match b.get(pos) {
            None => {}
            Some(b'Z' | b'z') if pos + 1 == b.len() => {}
            Some(sign @ (b'+' | b'-')) if b.len() == pos + 6 && b[pos + 3] == b':' => {
                let oh = num(pos + 1..pos + 3)?;
                let om = num(pos + 4..pos + 6)?;
                if oh > 23 || om > 59 {
                    return None;
                }
                let offset = (oh * 60 + om) * 60_000;
                ms += if *sign == b'+' { -offset } else { offset };
            }
            _ => return None,
        }
        Some(Millis(ms))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Millis::parse(&text)
            .ok_or_else(|| de::Error::custom(format!("invalid RFC 3339 timestamp \"{text}\"")))
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Days since 1970-01-01 to and from a proleptic Gregorian date, after H. Hinnant's
// "chrono-Compatible Low-Level Date Algorithms".
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(Millis(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Millis(1_795_341_600_123).to_rfc3339(), "2026-11-22T10:00:00.123Z");
        assert_eq!(Millis(951_782_400_000).to_rfc3339(), "2000-02-29T00:00:00.000Z");
        assert_eq!(Millis(-1).to_rfc3339(), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_the_forms_analysts_type() {
        let t = Millis(1_795_341_600_123);
        assert_eq!(Millis::parse("2026-11-22T10:00:00.123Z"), Some(t));
        assert_eq!(Millis::parse("2026-11-22T19:00:00.123+09:00"), Some(t));
        assert_eq!(Millis::parse("2026-11-22T10:00:00.123456z"), Some(t));
        assert_eq!(Millis::parse("2026-11-22T10:00"), Some(Millis(1_795_341_600_000)));
        assert_eq!(Millis::parse("2026-11-22 10:00:00"), Some(Millis(1_795_341_600_000)));
        assert_eq!(Millis::parse("2026-11-22"), Some(Millis(1_795_305_600_000)));
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in [
            "",
            "2026",
            "2026-13-01",
            "2026-02-30",
            "2026-11-22T25:00",
            "2026-11-22T10:00:00.Z",
            "2026-11-22T10:00:00+0900",
            "2026-11-22T10:00:00Zjunk",
            "２０２６-11-22",
        ] {
            assert_eq!(Millis::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn day_start_is_utc_midnight() {
        assert_eq!(Millis(1_795_341_600_123).day_start(), Millis(1_795_305_600_000));
        assert_eq!(Millis(-1).day_start(), Millis(-MS_PER_DAY));
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(ms in -62_135_596_800_000i64..253_402_300_799_999) {
            let text = Millis(ms).to_rfc3339();
            prop_assert_eq!(Millis::parse(&text), Some(Millis(ms)));
        }

        #[test]
        fn the_date_cache_never_changes_the_text(days in proptest::collection::vec(0i64..40_000, 1..20), offsets in proptest::collection::vec(0i64..MS_PER_DAY, 1..20)) {
            let mut cache = DateCache::default();
            for (day, offset) in days.iter().zip(&offsets) {
                let ms = Millis(day * MS_PER_DAY + offset);
                let mut cached = Vec::new();
                ms.write_rfc3339_cached(&mut cache, &mut cached);
                prop_assert_eq!(String::from_utf8(cached).unwrap(), ms.to_rfc3339());
            }
        }

        #[test]
        fn parse_never_panics(text in ".{0,40}") {
            let _ = Millis::parse(&text);
        }
    }
}
