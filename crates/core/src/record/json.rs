//! A small JSON writer for records: straight into the batch buffer, no intermediate values.
//!
//! Captured bytes are attacker-controlled and not always UTF-8: invalid sequences become
//! U+FFFD, and everything JSON requires is escaped, so every line parses.

/// Bytes that cannot appear raw inside a JSON string.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Appends `bytes` as a JSON string (with the quotes).
pub fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    // Most captured values are plain printable ASCII: copied as they are, after one scan
    // (without an early exit, so that it vectorises).
    let special = bytes
        .iter()
        .fold(false, |acc, &b| acc | !(0x20..0x80).contains(&b) | (b == b'"') | (b == b'\\'));
    if !special {
        out.extend_from_slice(bytes);
    } else {
        match std::str::from_utf8(bytes) {
            Ok(text) => escaped(out, text),
            Err(_) => escaped(out, &String::from_utf8_lossy(bytes)),
        }
    }
    out.push(b'"');
}

fn escaped(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends a string or `null`.
pub fn optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => string(out, b),
        None => out.extend_from_slice(b"null"),
    }
}

pub fn uint(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with microsecond resolution, e.g. `12.345`.
pub fn micros_as_ms(out: &mut Vec<u8>, us: u64) {
    uint(out, us / 1000);
    let frac = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

pub fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

/// Appends `"name":`; names are the schema's own, never captured data.
pub fn key(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn to_string(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        string(&mut out, bytes);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_what_json_requires() {
        assert_eq!(to_string(b"plain"), "\"plain\"");
        assert_eq!(to_string(b"a\"b\\c\nd\re\tf\x00g\x1f"), r#""a\"b\\c\nd\re\tf\u0000g\u001f""#);
        assert_eq!(to_string("日本<script>".as_bytes()), "\"日本<script>\"");
        assert_eq!(to_string(b"bad \xff\xfe utf8"), "\"bad \u{fffd}\u{fffd} utf8\"");
    }

    #[test]
    fn numbers() {
        let mut out = Vec::new();
        micros_as_ms(&mut out, 12_345);
        out.push(b' ');
        micros_as_ms(&mut out, 7);
        out.push(b' ');
        uint(&mut out, u64::MAX);
        assert_eq!(String::from_utf8(out).unwrap(), "12.345 0.007 18446744073709551615");
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip_through_a_json_parser(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let text = to_string(&bytes);
            let parsed: String = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(parsed, String::from_utf8_lossy(&bytes).into_owned());
        }
    }
}
