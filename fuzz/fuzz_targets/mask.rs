//! The masking of attack content: request line, headers (cookies and authorizations among
//! them) and bodies of every format, cut or whole.
#![no_main]

use api_sessions_core::body::{BodyFormat, Extent};
use api_sessions_core::hash::Secret;
use api_sessions_core::mask::{mask, BodyContent, Hashing, Rules, Target};
use api_sessions_core::profile::Source;
use libfuzzer_sys::fuzz_target;

/// Bytes a masked value's replacement is made of.
const HASH_ALPHABET: &[u8] = b"hmac-sha256:0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    // `credential NUL line NUL header value NUL body`
    let mut parts = rest.splitn(4, |&b| b == 0);
    let credential = parts.next().unwrap_or_default();
    let line = parts.next().unwrap_or_default();
    let header = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let format = [BodyFormat::Json, BodyFormat::Form, BodyFormat::GraphQl, BodyFormat::Other]
        [usize::from(selector & 3)];
    let extent = if selector & 4 == 0 { Extent::Whole } else { Extent::Cut };

    let sources: Vec<Source> = ["$arg_token", "$cookie_s", "$http_x_key", "request_body:/p"]
        .iter()
        .map(|s| Source::parse(s).unwrap())
        .collect();
    let targets: Vec<Target> = ["header:X-Secret", "arg:code", "body:/a/0", "body:/variables/v"]
        .iter()
        .map(|t| Target::parse(t).unwrap())
        .collect();
    let mut rules = Rules::default();
    for source in &sources {
        rules.source(source, Some(credential), Hashing::Param);
    }
    if selector & 8 != 0 {
        rules.builtin();
    }
    rules.targets(&targets);

    let secret = Secret::unkeyed();
    let names: [&[u8]; 6] =
        [b"Cookie", b"Authorization", b"Set-Cookie", b"X-Secret", b"X-Key", b"Other"];
    let headers = names.iter().map(|&name| (name, header));
    let masked = mask(&rules, &secret, line, headers, BodyContent { bytes: body, format, extent });
    assert_eq!(masked.headers.len(), names.len());

    // A credential long enough to be swept shows nowhere. (Its ends outside the alphabet of
    // the replacements, so none can be spelled by a replacement and the bytes beside it.)
    let outside = |b: Option<&u8>| b.is_some_and(|b| !HASH_ALPHABET.contains(b));
    if credential.len() >= 6 && outside(credential.first()) && outside(credential.last()) {
        let shows = |text: &[u8]| text.windows(credential.len()).any(|w| w == credential);
        assert!(!shows(&masked.line), "in the line");
        assert!(!masked.headers.iter().any(|(_, value)| shows(value)), "in a header");
        assert!(!shows(&masked.body), "in the body");
    }
});
