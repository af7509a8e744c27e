//! Session keys: which value identifies the session of a request.
//!
//! Custom keys (`api_sessions_key`) are tried first, in configured order, and share one value
//! space: the same token seen in a login response and later in a request argument belongs to
//! one session. Then, unless `api_sessions_builtin_keys off`, the built-in chain is tried;
//! each of its entries is a value space of its own.

use std::borrow::Cow;

/// Value space shared by every custom key.
pub const CUSTOM_SPACE: &str = "custom";

/// Session cookies of common frameworks, in the order they are tried.
pub const BUILTIN_COOKIES: [&str; 9] = [
    "PHPSESSID",
    "JSESSIONID",
    "ASP.NET_SessionId",
    "connect.sid",
    "laravel_session",
    "_session_id",
    "sessionid",
    "session",
    "sid",
];

/// Session headers, matched case-insensitively, in the order they are tried.
pub const BUILTIN_HEADERS: [&str; 4] =
    ["Session-Id", "X-Session-Id", "X-Session-Token", "Mcp-Session-Id"];

const COOKIE_LABELS: [&str; 9] = [
    "cookie:PHPSESSID",
    "cookie:JSESSIONID",
    "cookie:ASP.NET_SessionId",
    "cookie:connect.sid",
    "cookie:laravel_session",
    "cookie:_session_id",
    "cookie:sessionid",
    "cookie:session",
    "cookie:sid",
];

const HEADER_LABELS: [&str; 4] =
    ["header:Session-Id", "header:X-Session-Id", "header:X-Session-Token", "header:Mcp-Session-Id"];

/// One entry of the built-in chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Builtin {
    /// Index into [`BUILTIN_COOKIES`].
    Cookie(u8),
    /// Index into [`BUILTIN_HEADERS`].
    Header(u8),
    Authorization,
    /// Client address and `User-Agent`.
    IpUa,
    /// Client address alone, when there is no `User-Agent`.
    Ip,
}

impl Builtin {
    /// The label written to `session_key`; it is also the entry's value space.
    pub fn label(self) -> &'static str {
        match self {
            Builtin::Cookie(i) => COOKIE_LABELS[usize::from(i)],
            Builtin::Header(i) => HEADER_LABELS[usize::from(i)],
            Builtin::Authorization => "header:Authorization",
            Builtin::IpUa => "ip+ua",
            Builtin::Ip => "ip",
        }
    }
}

/// Finds the built-in key of a request in one pass over its headers.
///
/// Feed every request header, then call [`BuiltinScanner::finish`] with the client address
/// and `User-Agent`. Values borrow from the headers.
#[derive(Debug, Default)]
pub struct BuiltinScanner<'a> {
    best: Option<(Builtin, &'a [u8])>,
}

impl<'a> BuiltinScanner<'a> {
    pub fn new() -> Self {
        BuiltinScanner { best: None }
    }

    fn offer(&mut self, entry: Builtin, value: &'a [u8]) {
        if value.is_empty() {
            return;
        }
        // Earlier entries of the chain win; within one entry, the first occurrence.
        if self.best.is_none_or(|(best, _)| entry < best) {
            self.best = Some((entry, value));
        }
    }

    /// One request header, in received order.
    pub fn header(&mut self, name: &[u8], value: &'a [u8]) {
        if name.eq_ignore_ascii_case(b"Cookie") {
            self.cookies(value);
        } else if name.eq_ignore_ascii_case(b"Authorization") {
            self.offer(Builtin::Authorization, value);
        } else if let Some(i) =
            BUILTIN_HEADERS.iter().position(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        {
            self.offer(Builtin::Header(i as u8), value);
        }
    }

    /// A `Cookie` header value: `name=value` pairs separated by `;`. Pairs without `=` and
    /// empty names are skipped; cookie names are case-sensitive.
    fn cookies(&mut self, header: &'a [u8]) {
        for pair in header.split(|&b| b == b';') {
            let pair = trim(pair);
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (name, value) = (trim(&pair[..eq]), trim(&pair[eq + 1..]));
            if let Some(i) = BUILTIN_COOKIES.iter().position(|c| name == c.as_bytes()) {
                self.offer(Builtin::Cookie(i as u8), value);
            }
        }
    }

    /// The winning entry and its value; the client address (with the `User-Agent` when there
    /// is one) when no header matched. `None` only without a client address.
    pub fn finish(self, ip: &'a [u8], user_agent: Option<&'a [u8]>) -> Option<BuiltinKey<'a>> {
        if let Some((entry, value)) = self.best {
            return Some(BuiltinKey { entry, value: Cow::Borrowed(value) });
        }
        if ip.is_empty() {
            return None;
        }
        match user_agent {
            Some(ua) if !ua.is_empty() => {
                // A newline can appear in neither an address nor a header value.
                let mut value = Vec::with_capacity(ip.len() + 1 + ua.len());
                value.extend_from_slice(ip);
                value.push(b'\n');
                value.extend_from_slice(ua);
                Some(BuiltinKey { entry: Builtin::IpUa, value: Cow::Owned(value) })
            }
            _ => Some(BuiltinKey { entry: Builtin::Ip, value: Cow::Borrowed(ip) }),
        }
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// The built-in entry that identified a request, and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltinKey<'a> {
    pub entry: Builtin,
    pub value: Cow<'a, [u8]>,
}

impl BuiltinKey<'_> {
    pub fn into_owned(self) -> BuiltinKey<'static> {
        BuiltinKey { entry: self.entry, value: Cow::Owned(self.value.into_owned()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan<'a>(headers: &[(&'a str, &'a str)], ua: Option<&'a str>) -> (String, Vec<u8>) {
        let mut s = BuiltinScanner::new();
        for (n, v) in headers {
            s.header(n.as_bytes(), v.as_bytes());
        }
        let key = s.finish(b"203.0.113.7", ua.map(str::as_bytes)).unwrap();
        (key.entry.label().to_string(), key.value.into_owned())
    }

    #[test]
    fn each_builtin_entry_and_its_label() {
        for (i, name) in BUILTIN_COOKIES.iter().enumerate() {
            let cookie = format!("theme=dark; {name}=v{i}");
            let (label, value) = scan(&[("Cookie", &cookie)], Some("ua"));
            assert_eq!(label, format!("cookie:{name}"));
            assert_eq!(value, format!("v{i}").into_bytes());
        }
        for name in BUILTIN_HEADERS {
            let (label, value) = scan(&[(&name.to_ascii_uppercase(), "h")], Some("ua"));
            assert_eq!(label, format!("header:{name}"), "matched case-insensitively");
            assert_eq!(value, b"h");
        }
        let (label, value) = scan(&[("authorization", "Bearer t")], None);
        assert_eq!((label.as_str(), value.as_slice()), ("header:Authorization", &b"Bearer t"[..]));
        let (label, value) = scan(&[], Some("curl/8.0"));
        assert_eq!((label.as_str(), value.as_slice()), ("ip+ua", &b"203.0.113.7\ncurl/8.0"[..]));
        let (label, value) = scan(&[], None);
        assert_eq!((label.as_str(), value.as_slice()), ("ip", &b"203.0.113.7"[..]));
        let (label, _) = scan(&[], Some(""));
        assert_eq!(label, "ip", "an empty User-Agent is no User-Agent");
    }

    #[test]
    fn chain_order_wins_over_header_order() {
        let (label, value) = scan(
            &[
                ("Authorization", "Basic x"),
                ("X-Session-Id", "hdr"),
                ("Cookie", "sid=late; JSESSIONID=java"),
                ("Cookie", "PHPSESSID=php"),
            ],
            Some("ua"),
        );
        assert_eq!((label.as_str(), value.as_slice()), ("cookie:PHPSESSID", &b"php"[..]));

        let (label, value) = scan(&[("Cookie", "sid=a; sid=b")], None);
        assert_eq!((label.as_str(), value.as_slice()), ("cookie:sid", &b"a"[..]));
    }

    #[test]
    fn malformed_and_empty_cookies_are_skipped() {
        let (label, value) =
            scan(&[("Cookie", ";;=x; PHPSESSID; JSESSIONID=; phpsessid=lower;  sid = s1 ")], None);
        assert_eq!((label.as_str(), value.as_slice()), ("cookie:sid", &b"s1"[..]));
        let (label, _) = scan(&[("Cookie", "\u{0}\u{ff}; =;")], None);
        assert_eq!(label, "ip");
    }

    #[test]
    fn no_address_no_key() {
        assert!(BuiltinScanner::new().finish(b"", Some(b"ua")).is_none());
    }
}
