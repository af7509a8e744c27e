//! `application/x-www-form-urlencoded` bodies and query strings.
//!
//! Decoding is `form_urlencoded`'s: it borrows every name and value that needs no decoding and
//! allocates at most the size of one field at a time. What it cannot know is whether the input
//! was cut; that is decided here, before it sees the bytes.

use core::ops::Range;

use memchr::{memchr, memrchr};

use super::pointer::Pointer;
use super::Extent;

/// The value of each pointer: a pointer with exactly one token names a field, and the field's
/// first occurrence wins. Any other pointer has no value.
pub fn extract(body: &[u8], extent: Extent, pointers: &[&Pointer]) -> Vec<Option<String>> {
    let names: Vec<Option<&str>> = pointers
        .iter()
        .map(|pointer| match pointer.tokens() {
            [name] => Some(name.as_str()),
            _ => None,
        })
        .collect();
    fields(body, extent, &names)
}

/// The decoded value of the first field with each name, in one pass. `+` is a space and
/// `%XX` a byte; a `%` without two hex digits stays as it is; invalid UTF-8 becomes U+FFFD.
pub(crate) fn fields(body: &[u8], extent: Extent, names: &[Option<&str>]) -> Vec<Option<String>> {
    let mut values = vec![None; names.len()];
    let mut pending = names.iter().flatten().count();
    if pending == 0 {
        return values;
    }
    for (name, value) in form_urlencoded::parse(whole_fields(body, extent)) {
        for (slot, wanted) in values.iter_mut().zip(names) {
            if slot.is_none() && *wanted == Some(&*name) {
                *slot = Some(value.clone().into_owned());
                pending -= 1;
            }
        }
        if pending == 0 {
            break;
        }
    }
    values
}

/// The fields that `body` holds whole. Of a cut body, the last field may go on past the cut,
/// in its value (`token=ab` of `token=abc`) or its name (`password` of `passwordx`): it has
/// no value at all.
pub(crate) fn whole_fields(body: &[u8], extent: Extent) -> &[u8] {
    match extent {
        Extent::Whole => body,
        Extent::Cut => memrchr(b'&', body).map_or(&[][..], |at| &body[..at]),
    }
}

/// One occurrence of a named field, located for masking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// Index into the names asked for.
    pub name: usize,
    /// The raw value, as in the body.
    pub span: Range<usize>,
    /// The value as extraction gives it; `None` for the field at the cut, whose value may go on
    /// (its name, followed by `=`, is whole).
    pub value: Option<String>,
}

/// Every field with one of `names` (all occurrences, where extraction takes the first). A field
/// without `=` has no value to find.
pub(crate) fn locate(body: &[u8], extent: Extent, names: &[&str]) -> Vec<Found> {
    let mut found = Vec::new();
    let mut start = 0;
    while start <= body.len() {
        let end = memchr(b'&', &body[start..]).map_or(body.len(), |at| start + at);
        let field = &body[start..end];
        // The field holds no `&`, so it parses as one pair.
        if let (Some(eq), Some((name, value))) =
            (memchr(b'=', field), form_urlencoded::parse(field).next())
        {
            let at_cut = extent == Extent::Cut && end == body.len();
            for (i, wanted) in names.iter().enumerate() {
                if name == *wanted {
                    let value = (!at_cut).then(|| value.clone().into_owned());
                    found.push(Found { name: i, span: start + eq + 1..end, value });
                }
            }
        }
        start = end + 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn extract_one(body: &str, pointer: &str) -> Option<String> {
        let pointer = Pointer::parse(pointer).unwrap();
        extract(body.as_bytes(), Extent::Whole, &[&pointer]).remove(0)
    }

    fn extract_cut(body: &str, pointer: &str) -> Option<String> {
        let pointer = Pointer::parse(pointer).unwrap();
        extract(body.as_bytes(), Extent::Cut, &[&pointer]).remove(0)
    }

    #[test]
    fn the_field_at_the_cut_has_no_value() {
        assert_eq!(extract_cut("a=1&token=abc", "/token"), None);
        assert_eq!(extract_cut("a=1&token=abc", "/a").as_deref(), Some("1"));
        assert_eq!(extract_cut("token=abc", "/token"), None);
        // The name itself may be cut: `passwordx` is not `password`.
        assert_eq!(extract_cut("a=1&password", "/password"), None);
        assert_eq!(extract_cut("a=1&token=abc&", "/token").as_deref(), Some("abc"));
        assert_eq!(extract_cut("a=%4", "/a"), None);
        assert_eq!(extract_cut("", "/a"), None);
        assert_eq!(extract_one("a=1&token=abc", "/token").as_deref(), Some("abc"));
        assert_eq!(extract_one("a=1&password", "/password").as_deref(), Some(""));
    }

    #[test]
    fn decodes_plus_and_percent_escapes() {
        let body = "a=1&b=x+y%21&c=%E2%82%AC%2b";
        assert_eq!(extract_one(body, "/a").as_deref(), Some("1"));
        assert_eq!(extract_one(body, "/b").as_deref(), Some("x y!"));
        assert_eq!(extract_one(body, "/c").as_deref(), Some("€+"));
    }

    #[test]
    fn decodes_field_names_before_matching() {
        assert_eq!(extract_one("user+name=al&us%65r=bob", "/user name").as_deref(), Some("al"));
        assert_eq!(extract_one("us%65r=bob", "/user").as_deref(), Some("bob"));
    }

    #[test]
    fn first_occurrence_wins() {
        assert_eq!(extract_one("token=first&token=second", "/token").as_deref(), Some("first"));
    }

    #[test]
    fn field_without_equals_is_present_and_empty() {
        assert_eq!(extract_one("flag&x=1", "/flag").as_deref(), Some(""));
        assert_eq!(extract_one("x=", "/x").as_deref(), Some(""));
        assert_eq!(extract_one("x=1", "/y"), None);
    }

    #[test]
    fn value_keeps_later_equals_signs() {
        assert_eq!(extract_one("sig=a=b==", "/sig").as_deref(), Some("a=b=="));
    }

    #[test]
    fn empty_fields_are_skipped() {
        assert_eq!(extract_one("&&a=1&&", "/a").as_deref(), Some("1"));
        assert_eq!(extract_one("&&", "/"), None);
    }

    #[test]
    fn malformed_escapes_are_kept_literally() {
        assert_eq!(extract_one("a=%zz%4%", "/a").as_deref(), Some("%zz%4%"));
        assert_eq!(extract_one("a=100%", "/a").as_deref(), Some("100%"));
        assert_eq!(extract_one("a=%%41", "/a").as_deref(), Some("%A"));
    }

    #[test]
    fn invalid_utf8_is_replaced_and_nul_kept() {
        assert_eq!(extract_one("a=%FFok%00", "/a").as_deref(), Some("\u{fffd}ok\u{0}"));
        let body = b"a=\xC3(";
        let pointer = Pointer::parse("/a").unwrap();
        assert_eq!(extract(body, Extent::Whole, &[&pointer]), [Some("\u{fffd}(".to_owned())]);
    }

    #[test]
    fn only_single_token_pointers_name_fields() {
        assert_eq!(extract_one("a=1", ""), None);
        assert_eq!(extract_one("a=1", "/a/b"), None);
        assert_eq!(extract_one("a%2Fb=1", "/a~1b").as_deref(), Some("1"));
    }

    #[test]
    fn resolves_several_pointers_together() {
        let pointers = ["/b", "/a", "/missing", "/a"].map(|p| Pointer::parse(p).unwrap());
        let refs: Vec<&Pointer> = pointers.iter().collect();
        assert_eq!(
            extract(b"a=1&b=2&a=3", Extent::Whole, &refs),
            [Some("2".to_owned()), Some("1".to_owned()), None, Some("1".to_owned())]
        );
    }

    /// Encodes like a browser does: every byte outside the unreserved set is escaped.
    fn encode(text: &str) -> String {
        text.bytes()
            .map(|byte| match byte {
                b' ' => "+".to_owned(),
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    char::from(byte).to_string()
                }
                _ => format!("%{byte:02X}"),
            })
            .collect()
    }

    proptest! {
        #[test]
        fn decodes_what_a_browser_encodes(
            fields in prop::collection::vec(("[a-c]{1,2}", any::<String>()), 1..8),
            lookup in "[a-c]{1,2}",
        ) {
            let body = fields
                .iter()
                .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
                .collect::<Vec<_>>()
                .join("&");
            let expected = fields.iter().find(|(name, _)| *name == lookup).map(|(_, v)| v.clone());
            prop_assert_eq!(extract_one(&body, &format!("/{lookup}")), expected);
        }

        #[test]
        fn never_panics_and_stays_bounded(body in any::<Vec<u8>>(), name in any::<String>()) {
            let names = [Some(name.as_str()), Some("a")];
            for value in fields(&body, Extent::Whole, &names).into_iter().flatten() {
                // One input byte decodes to at most one U+FFFD (3 bytes).
                prop_assert!(value.len() <= 3 * body.len());
            }
        }
    }
}
