//! RFC 6901 JSON Pointers, parsed once at configuration time.

use core::fmt;

/// A parsed JSON Pointer: `""` is the whole document, `/a/0/b~1c` has the tokens
/// `a`, `0`, `b/c`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    pub fn parse(text: &str) -> Result<Pointer, PointerError> {
        let Some(rest) = text.strip_prefix('/') else {
            if text.is_empty() {
                return Ok(Pointer { text: String::new(), tokens: Vec::new() });
            }
            return Err(PointerError { pointer: text.to_owned(), reason: Reason::NoLeadingSlash });
        };

        let tokens =
            rest.split('/').map(unescape).collect::<Option<Vec<_>>>().ok_or_else(|| {
                PointerError { pointer: text.to_owned(), reason: Reason::BadEscape }
            })?;

        Ok(Pointer { text: text.to_owned(), tokens })
    }

    /// The pointer as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The reference tokens, unescaped.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }
}

/// Resolves `~1` and `~0`; any other `~` makes the token invalid.
fn unescape(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// The array index a token selects: decimal without leading zeros, as RFC 6901 requires.
/// `-` (one past the end) never selects an existing element.
pub(crate) fn array_index(token: &str) -> Option<usize> {
    let bytes = token.as_bytes();
    let canonical = match bytes {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if canonical {
        token.parse().ok()
    } else {
        None
    }
}

/// A pointer that cannot be used, with text fit for an `[emerg]` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointerError {
    pointer: String,
    reason: Reason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    NoLeadingSlash,
    BadEscape,
}

impl fmt::Display for PointerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hint = match self.reason {
            Reason::NoLeadingSlash => r#"it must start with "/""#,
            Reason::BadEscape => r#""~" must be followed by "0" or "1""#,
        };
        write!(f, "invalid JSON pointer \"{}\", {hint}", self.pointer)
    }
}

impl std::error::Error for PointerError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<String> {
        Pointer::parse(text).unwrap().tokens().to_vec()
    }

    #[test]
    fn empty_pointer_is_the_whole_document() {
        let pointer = Pointer::parse("").unwrap();
        assert!(pointer.tokens().is_empty());
        assert_eq!(pointer.as_str(), "");
    }

    #[test]
    fn splits_on_slashes_keeping_empty_tokens() {
        assert_eq!(tokens("/hash/token"), ["hash", "token"]);
        assert_eq!(tokens("/"), [""]);
        assert_eq!(tokens("/a//b/"), ["a", "", "b", ""]);
        assert_eq!(Pointer::parse("/items/0/id").unwrap().as_str(), "/items/0/id");
    }

    #[test]
    fn unescapes_tilde_sequences_in_order() {
        assert_eq!(tokens("/a~1b"), ["a/b"]);
        assert_eq!(tokens("/m~0n"), ["m~n"]);
        // `~01` is `~` then `1`, not `/`: ~0 is resolved as a unit.
        assert_eq!(tokens("/~01"), ["~1"]);
        assert_eq!(tokens("/~10"), ["/0"]);
        assert_eq!(tokens("/é~1ü"), ["é/ü"]);
    }

    #[test]
    fn rejects_missing_slash_with_an_emerg_ready_message() {
        let err = Pointer::parse("abc").unwrap_err();
        assert_eq!(err.to_string(), r#"invalid JSON pointer "abc", it must start with "/""#);
    }

    #[test]
    fn rejects_bad_tilde_escapes() {
        for text in ["/a~", "/a~2", "/~a", "/ok/~/x"] {
            let err = Pointer::parse(text).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(r#"invalid JSON pointer "{text}", "~" must be followed by "0" or "1""#)
            );
        }
    }

    #[test]
    fn array_index_is_canonical_decimal() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("12"), Some(12));
        assert_eq!(array_index("01"), None);
        assert_eq!(array_index("00"), None);
        assert_eq!(array_index("-"), None);
        assert_eq!(array_index("+1"), None);
        assert_eq!(array_index("-1"), None);
        assert_eq!(array_index("1a"), None);
        assert_eq!(array_index(""), None);
        assert_eq!(array_index("99999999999999999999999"), None);
    }
}
