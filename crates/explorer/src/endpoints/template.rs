//! Turning a request path into its endpoint template: `/orders/1001` and `/orders/1002` are
//! both `/orders/{id}`.
//!
//! The path is split into segments, each segment percent-decoded, and the segments that hold a
//! value rather than a name are replaced by a placeholder: numbers by `{id}`, UUIDs by
//! `{uuid}`, e-mail addresses by `{email}`, long hex strings and random-looking strings by
//! `{token}`. What is left is a name, written back percent-encoded in one canonical way, so
//! that a template is printable text whatever the client sent, and templating a template gives
//! it back unchanged.
//!
//! Paths are the client's, unnormalised and hostile at times. Before templating:
//! - empty segments are dropped, so `//orders//7/` is `/orders/{id}` (trailing slashes too);
//! - path parameters after a `;` are dropped (`/cart;jsessionid=…` is `/cart`), as servlet
//!   containers do before routing; an encoded `%3B` is data and stays;
//! - `.` and `..` segments, encoded or not, are resolved, as nginx does before it picks a
//!   location; `..` never climbs above the root;
//! - an encoded `/` (`%2F`) stays inside its segment, as the upstream sees it.
//!
//! A template is at most [`MAX_TEMPLATE_LEN`] bytes and [`MAX_SEGMENTS`] segments: what does not
//! fit is folded into a last `{rest}` segment. A name segment longer than [`MAX_SEGMENT_LEN`]
//! bytes is a value by its length alone and becomes `{token}`.

use std::borrow::Cow;
use std::fmt::Write as _;

use percent_encoding::percent_decode;

/// Numbers: `/orders/1001`.
pub const ID: &str = "{id}";
/// UUIDs in their 8-4-4-4-12 hex form: `/jobs/3f2b…-…`.
pub const UUID: &str = "{uuid}";
/// Long hex strings and random-looking strings: hashes, API keys, JWTs, ULIDs.
pub const TOKEN: &str = "{token}";
/// E-mail addresses: `/users/alice@example.com`.
pub const EMAIL: &str = "{email}";
/// The segments past the length limits.
pub const REST: &str = "{rest}";

/// The placeholders this module writes; a segment spelled like one is kept as it is.
const PLACEHOLDERS: [&str; 5] = [ID, UUID, TOKEN, EMAIL, REST];

/// Longest template, in bytes.
pub const MAX_TEMPLATE_LEN: usize = 256;
/// Most segments in a template, `{rest}` included.
pub const MAX_SEGMENTS: usize = 24;
/// Longest name segment, in bytes once encoded; longer ones are values.
pub const MAX_SEGMENT_LEN: usize = 64;

/// Shortest string taken for a hex value or a token: shorter ones are too often words or codes.
const MIN_TOKEN_LEN: usize = 16;

/// Longest method kept; methods are a few capital letters, anything else is junk.
const MAX_METHOD_LEN: usize = 32;

/// The method as the endpoint shows it: an HTTP method is kept, anything that could not be one
/// (spaces, control characters, overlong) is `OTHER`, so that `METHOD TEMPLATE` always splits
/// at its first space.
pub fn method(method: &str) -> &str {
    let valid = !method.is_empty()
        && method.len() <= MAX_METHOD_LEN
        && method.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        method
    } else {
        "OTHER"
    }
}

/// The segments of a path as the upstream routes it: split at `/`, path parameters cut off,
/// percent-decoded, empty and dot segments resolved. Segments are bytes: a client may encode
/// anything, invalid UTF-8 included.
pub fn segments(path: &str) -> Vec<Cow<'_, [u8]>> {
    let mut out: Vec<Cow<'_, [u8]>> = Vec::new();
    for raw in path.split('/') {
        let raw = raw.split(';').next().unwrap_or_default();
        if raw.is_empty() {
            continue;
        }
        let decoded: Cow<'_, [u8]> = percent_decode(raw.as_bytes()).into();
        match &*decoded {
            b"." => {}
            b".." => {
                out.pop();
            }
            _ => out.push(decoded),
        }
    }
    out
}

/// The template of a request path; see the module documentation for the rules.
pub fn template(path: &str) -> String {
    from_segments(&segments(path))
}

/// The template of a path already split by [`segments`].
pub fn from_segments(segments: &[Cow<'_, [u8]>]) -> String {
    let mut parts: Vec<Cow<'_, str>> = segments.iter().map(|s| segment(s)).collect();
    if parts.is_empty() {
        return "/".to_owned();
    }
    let full: usize = parts.iter().map(|part| part.len() + 1).sum();
    if parts.len() > MAX_SEGMENTS || full > MAX_TEMPLATE_LEN {
        let room = MAX_TEMPLATE_LEN - (REST.len() + 1);
        let mut used = 0;
        let mut keep = 0;
        while keep < MAX_SEGMENTS - 1 && used + parts[keep].len() < room {
            used += parts[keep].len() + 1;
            keep += 1;
        }
        parts.truncate(keep);
        parts.push(Cow::Borrowed(REST));
    }
    let mut out = String::with_capacity(parts.iter().map(|part| part.len() + 1).sum());
    for part in &parts {
        out.push('/');
        out.push_str(part);
    }
    out
}

/// One decoded segment: a placeholder, or the name written back in canonical form.
fn segment(decoded: &[u8]) -> Cow<'static, str> {
    if let Ok(text) = std::str::from_utf8(decoded) {
        if let Some(placeholder) = PLACEHOLDERS.iter().find(|p| **p == text) {
            return Cow::Borrowed(placeholder);
        }
        // Whole-segment shapes first, so that `bob@mail.example.com` is one address rather
        // than `{email}.com`.
        if let Some(placeholder) = classify_strict(text) {
            return Cow::Borrowed(placeholder);
        }
        // `1001.json`, `{id}.json`, `main.3f2a9c1b77e0a1d2.js`: a value with a file extension.
        if let Some((stem, ext)) = text.rsplit_once('.') {
            let ext_ok = (1..=5).contains(&ext.len())
                && ext.bytes().all(|b| b.is_ascii_alphanumeric())
                && ext.bytes().any(|b| b.is_ascii_alphabetic());
            if ext_ok {
                let placeholder = PLACEHOLDERS[..4]
                    .iter()
                    .find(|p| **p == stem)
                    .copied()
                    .or_else(|| classify(stem));
                if let Some(placeholder) = placeholder {
                    return Cow::Owned(format!("{placeholder}.{ext}"));
                }
            }
        }
        if is_random(text) {
            return Cow::Borrowed(TOKEN);
        }
    }
    let name = encode(decoded);
    if name.len() > MAX_SEGMENT_LEN {
        return Cow::Borrowed(TOKEN);
    }
    Cow::Owned(name)
}

/// The placeholder for a segment that holds a value, if it does.
pub fn classify(text: &str) -> Option<&'static str> {
    classify_strict(text).or_else(|| is_random(text).then_some(TOKEN))
}

/// The shapes that leave no doubt: numbers, UUIDs, addresses and hex strings.
fn classify_strict(text: &str) -> Option<&'static str> {
    if is_number(text) {
        Some(ID)
    } else if is_uuid(text) {
        Some(UUID)
    } else if is_email(text) {
        Some(EMAIL)
    } else if is_hex(text) {
        Some(TOKEN)
    } else {
        None
    }
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Hashes, object ids and the like: 16 hex digits or more. Words spelled with a–f only
/// (`deadbeef`, `facade`) are far shorter.
fn is_hex(text: &str) -> bool {
    text.len() >= MIN_TOKEN_LEN && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Random-looking: API keys, JWTs, ULIDs, base64 and base62 strings. Such a string, 16
/// characters or more of the URL-safe and base64 alphabets, switches between letters and
/// digits again and again (`sk_live_4eC39HqL…`: `4e`, `C3`, `9H`, …), where names, slugs and
/// dates do not: their digits come in runs set apart by separators (`release-2024-01`), and
/// camelCase words have no digits at all. Two switches or more make a token.
fn is_random(text: &str) -> bool {
    let bytes = text.as_bytes();
    let alphabet = |b: u8| b.is_ascii_alphanumeric() || b"-_.~+=".contains(&b);
    if bytes.len() < MIN_TOKEN_LEN || !bytes.iter().all(|&b| alphabet(b)) {
        return false;
    }
    let switches = bytes
        .windows(2)
        .filter(|pair| {
            (pair[0].is_ascii_digit() && pair[1].is_ascii_alphabetic())
                || (pair[0].is_ascii_alphabetic() && pair[1].is_ascii_digit())
        })
        .count();
    switches >= 2
}

/// A mailbox `local@domain.tld`: the local part in the characters addresses use, the domain in
/// labels of letters, digits and inner hyphens, ending in a top-level domain of letters.
fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    let local_ok = (1..=64).contains(&local.len())
        && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
        && !local.starts_with('.')
        && !local.ends_with('.');
    if !local_ok || domain.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let tld = labels[labels.len() - 1];
    labels.len() >= 2
        && labels.iter().all(|label| label_ok(label))
        && tld.len() >= 2
        && tld.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Writes a name segment back: letters (of any script), digits and the characters RFC 3986
/// allows unencoded in a segment stay; everything else, `%`, `{`, `}`, spaces, control and
/// formatting characters, bytes that are not UTF-8, is percent-encoded. Decoding the result
/// gives the segment back, so the form is canonical.
pub(crate) fn encode(decoded: &[u8]) -> String {
    let mut out = String::with_capacity(decoded.len());
    for chunk in decoded.utf8_chunks() {
        for c in chunk.valid().chars() {
            let plain = if c.is_ascii() {
                c.is_ascii_alphanumeric() || "-._~!$&'()*+,=:@".contains(c)
            } else {
                c.is_alphanumeric()
            };
            if plain {
                out.push(c);
            } else {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "%{b:02X}");
                }
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn values_become_placeholders() {
        let cases = [
            ("/orders/1001", "/orders/{id}"),
            ("/orders/1001/items/3", "/orders/{id}/items/{id}"),
            ("/jobs/3F2504E0-4F89-11D3-9A0C-0305E82C3301", "/jobs/{uuid}"),
            ("/jobs/3f2504e0-4f89-11d3-9a0c-0305e82c3301/log", "/jobs/{uuid}/log"),
            ("/blobs/9c1e5be0a4d3f2b1c0e9d8c7b6a5f4e3", "/blobs/{token}"),
            ("/objects/507f1f77bcf86cd799439011", "/objects/{token}"),
            ("/users/alice@example.com", "/users/{email}"),
            ("/users/alice%40example.com/orders", "/users/{email}/orders"),
            ("/keys/sk_live_4eC39HqLyjWDarjtT1zdp7dc", "/keys/{token}"),
            ("/ulid/01ARZ3NDEKTSV4RRFFQ69G5FAV", "/ulid/{token}"),
            (
                "/jwt/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
                "/jwt/{token}",
            ),
            ("/static/main.3f2a9c1b77e0a1d2.chunk.js", "/static/{token}.js"),
            ("/users/bob@mail.example.com", "/users/{email}"),
            ("/orders/1001.json", "/orders/{id}.json"),
            ("/files/9c1e5be0a4d3f2b1c0e9.pdf", "/files/{token}.pdf"),
        ];
        for (path, expected) in cases {
            assert_eq!(template(path), expected, "{path}");
        }
    }

    #[test]
    fn names_stay() {
        let cases = [
            "/",
            "/login",
            "/api/v1/users/me",
            "/getUserProfileSettingsForAccount",
            "/blog/how-to-install-nginx-on-ubuntu-2024",
            "/reports/report-2024-01-15.pdf",
            "/deadbeef",
            "/v2/ubuntu2204-lts-release-notes",
            "/café",
            "/a:b@c",
        ];
        for path in cases {
            assert_eq!(template(path), path, "{path}");
        }
    }

    #[test]
    fn slashes_and_dots() {
        assert_eq!(template(""), "/");
        assert_eq!(template("//"), "/");
        assert_eq!(template("/orders/"), "/orders");
        assert_eq!(template("//orders///7//"), "/orders/{id}");
        assert_eq!(template("/a/./b/../c"), "/a/c");
        assert_eq!(template("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(template("/static/%2e%2e/%2E%2E/admin"), "/admin");
        assert_eq!(template("/a/b%2Fc"), "/a/b%2Fc");
        assert_eq!(template("orders/7"), "/orders/{id}");
        assert_eq!(template("/cart;jsessionid=0123456789ABCDEF/items"), "/cart/items");
        assert_eq!(template("/a%3Bb"), "/a%3Bb");
    }

    #[test]
    fn what_a_template_shows_is_safe_text() {
        assert_eq!(template("/a%20b"), "/a%20b");
        assert_eq!(template("/%00%0d%0a"), "/%00%0D%0A");
        assert_eq!(template("/%7Bfoo%7D"), "/%7Bfoo%7D");
        assert_eq!(template("/{orderId}"), "/%7BorderId%7D");
        assert_eq!(template("/%ff%fe"), "/%FF%FE");
        assert_eq!(template("/100%25"), "/100%25");
        assert_eq!(template("/bad%zz"), "/bad%25zz");
        // A right-to-left override would reorder what the analyst reads.
        assert_eq!(template("/a%E2%80%AEb"), "/a%E2%80%AEb");
        assert_eq!(template("/%7Bid%7D"), "/{id}");
        assert_eq!(template("/<script>"), "/%3Cscript%3E");
    }

    #[test]
    fn long_paths_are_capped() {
        let long = format!("/{}", "x".repeat(5000));
        assert_eq!(template(&long), "/{token}");

        let deep = "/seg".repeat(100);
        let t = template(&deep);
        assert_eq!(t.matches('/').count(), MAX_SEGMENTS);
        assert!(t.ends_with("/{rest}"), "{t}");

        let x60 = "x".repeat(60);
        let wide = format!("/{}", [x60.as_str(); 10].join("/"));
        let t = template(&wide);
        assert!(t.len() <= MAX_TEMPLATE_LEN, "{}", t.len());
        assert_eq!(t, format!("/{}/{REST}", [x60.as_str(); 4].join("/")));
    }

    #[test]
    fn methods() {
        assert_eq!(method("GET"), "GET");
        assert_eq!(method("PROPFIND"), "PROPFIND");
        assert_eq!(method("G ET"), "OTHER");
        assert_eq!(method(""), "OTHER");
        assert_eq!(method(&"A".repeat(33)), "OTHER");
    }

    #[test]
    fn emails() {
        assert!(is_email("a.b+tag@sub.example.co"));
        assert!(!is_email("a@b"));
        assert!(!is_email("@example.com"));
        assert!(!is_email("a@@example.com"));
        assert!(!is_email("a@example.c0m"));
        assert!(!is_email("a@-x.com"));
        assert!(!is_email(".a@example.com"));
    }

    /// Any byte a client might put in a path, with the separators and escapes that matter
    /// drawn often.
    fn path_strategy() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_owned()),
            Just("//".to_owned()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just(";".to_owned()),
            Just("%2e".to_owned()),
            Just("%2F".to_owned()),
            Just("%7Bid%7D".to_owned()),
            Just("{id}".to_owned()),
            Just("{rest}".to_owned()),
            Just(".json".to_owned()),
            "[0-9]{1,12}",
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[0-9a-f]{14,40}",
            "[A-Za-z0-9_-]{10,40}",
            "[a-z]{1,8}@[a-z]{1,8}\\.[a-z]{2,3}",
            "%[0-9A-Fa-f]{2}",
            "[a-zA-Z]{1,12}",
            any::<char>().prop_map(String::from),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn templating_a_template_gives_itself(path in path_strategy()) {
            let once = template(&path);
            prop_assert_eq!(template(&once), once);
        }

        #[test]
        fn templates_are_bounded_printable_and_hold_no_value(path in path_strategy()) {
            let t = template(&path);
            prop_assert!(t.starts_with('/'));
            prop_assert!(t.len() <= MAX_TEMPLATE_LEN);
            prop_assert!(t.split('/').count() - 1 <= MAX_SEGMENTS);
            prop_assert!(!t.chars().any(|c| c.is_control() || c.is_whitespace()));
            for part in t.split('/').skip(1).filter(|_| t != "/") {
                prop_assert!(!part.is_empty());
                if part.contains('{') {
                    let stem = part.split_once('.').map_or(part, |(stem, _)| stem);
                    prop_assert!(PLACEHOLDERS.contains(&stem), "{}", part);
                    continue;
                }
                let decoded = percent_decode(part.as_bytes()).collect::<Vec<u8>>();
                prop_assert!(decoded != b"." && decoded != b"..");
                if let Ok(text) = std::str::from_utf8(&decoded) {
                    prop_assert_eq!(classify(text), None, "{} holds a value", part);
                }
            }
        }

        #[test]
        fn numbers_uuids_and_hex_are_always_found(
            prefix in "[a-z]{1,8}",
            number in "[0-9]{1,19}",
            uuid in "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
            hex in "[0-9a-f]{16,64}",
        ) {
            let path = format!("/{prefix}/{number}/{uuid}/{hex}/");
            let t = template(&path);
            let expected_hex = if hex.bytes().all(|b| b.is_ascii_digit()) { ID } else { TOKEN };
            prop_assert_eq!(t, format!("/{prefix}/{ID}/{UUID}/{expected_hex}"));
        }

        #[test]
        fn encoded_and_plain_paths_agree(path in "(/[a-z0-9@.]{1,10}){0,6}") {
            let encoded: String = path
                .bytes()
                .map(|b| if b == b'/' { "/".to_owned() } else { format!("%{b:02x}") })
                .collect();
            prop_assert_eq!(template(&encoded), template(&path));
        }
    }
}
