//! What the body targets share: how an input is split, and the prefix property every
//! format keeps.

// Each target includes this file and uses the part it needs.
#![allow(dead_code)]

use api_sessions_core::body::{
    extract_request, extract_response, response_decided, BodyFormat, Extent, Pointer,
    RequestDocument,
};

/// Pointers used when an input names none.
const DEFAULT_POINTERS: [&str; 7] =
    ["", "/a", "/0", "/a/0/b", "/operation", "/variables/a", "/query"];

/// An input is `cut byte, pointers (one a line), NUL, body`; without a NUL, all of it after
/// the first byte is the body and the pointers are the default ones.
pub struct Input<'a> {
    pub pointers: Vec<Pointer>,
    pub body: &'a [u8],
    /// Where the body is cut for the prefix check.
    pub cut: usize,
}

impl<'a> Input<'a> {
    pub fn split(data: &'a [u8]) -> Option<Input<'a>> {
        let (&selector, rest) = data.split_first()?;
        let (pointers, body) = match rest.iter().position(|&b| b == 0) {
            Some(at) => {
                let text = String::from_utf8_lossy(&rest[..at]);
                let pointers = text.lines().filter_map(|p| Pointer::parse(p).ok()).collect();
                (pointers, &rest[at + 1..])
            }
            None => (DEFAULT_POINTERS.iter().map(|p| Pointer::parse(p).unwrap()).collect(), rest),
        };
        let cut = body.len() * usize::from(selector) / 255;
        Some(Input { pointers, body, cut })
    }

    pub fn refs(&self) -> Vec<&Pointer> {
        self.pointers.iter().collect()
    }
}

/// No prefix of a body yields a value the whole body does not have.
pub fn check_request(format: BodyFormat, input: &Input<'_>, args: &[u8]) {
    let refs = input.refs();
    let whole = RequestDocument { format, body: input.body, extent: Extent::Whole, args };
    let whole = extract_request(&whole, &refs);
    let prefix = &input.body[..input.cut];
    let part = RequestDocument { format, body: prefix, extent: Extent::Cut, args };
    for (part, whole) in extract_request(&part, &refs).iter().zip(&whole) {
        assert!(part.is_none() || part == whole, "{format:?}: {part:?} vs {whole:?}");
    }
    // Values are no larger than the input can make them (a GraphQL document escapes control
    // bytes in six).
    let bound = 6 * (input.body.len() + args.len()) + 64;
    assert!(whole.iter().flatten().all(|value| value.len() <= bound));
}

/// The same for a response, and a prefix that decides gives exactly the whole's values.
pub fn check_response(format: BodyFormat, content_type_empty: bool, input: &Input<'_>) {
    let refs = input.refs();
    let whole = extract_response(format, content_type_empty, input.body, Extent::Whole, &refs);
    let prefix = &input.body[..input.cut];
    let part = extract_response(format, content_type_empty, prefix, Extent::Cut, &refs);
    for (part, whole) in part.iter().zip(&whole) {
        assert!(part.is_none() || part == whole, "{part:?} vs {whole:?}");
    }
    if response_decided(format, content_type_empty, prefix, &refs) {
        assert_eq!(part, whole, "a deciding prefix");
    }
}
