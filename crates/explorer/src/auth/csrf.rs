//! Cross-site request checks for requests that change something.
//!
//! Two independent checks. A browser says where a request comes from (`Sec-Fetch-Site`,
//! `Origin`); one from another site is refused whatever it carries. And a browser that holds
//! one of the explorer's cookies must also send the CSRF token of the page it was shown (a
//! hidden `csrf_token` form field or an `X-CSRF-Token` header), which another site cannot
//! read. Clients that are not browsers (the module's exporter, curl, scripts) send neither
//! header nor cookie and pass on their credentials alone.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method};
use http_body_util::{BodyExt, Limited};

/// The form field and the header that carry the CSRF token.
pub const FIELD: &str = "csrf_token";
pub const HEADER: &str = "x-csrf-token";

/// The largest form body read for its token; the explorer's forms are a few fields.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Whether the method can change something; the others must not, so they are not checked.
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// Why a request that would change something was refused, when it was.
pub fn cross_site(headers: &HeaderMap) -> Option<&'static str> {
    let text = |name| headers.get(name).map(|value| value.to_str().unwrap_or(""));
    // Sent by current browsers on every request; "none" is the user's own navigation. Where it
    // is sent it decides: the same browsers send `Origin: null` for their own forms under
    // `Referrer-Policy: no-referrer`, which every page of the explorer has.
    if let Some(site) = text("sec-fetch-site") {
        return (!matches!(site, "same-origin" | "none")).then_some("request from another site");
    }
    if let Some(origin) = text(header::ORIGIN.as_str()) {
        let host = text(header::HOST.as_str()).unwrap_or("");
        // The scheme is left out: behind a proxy that ends TLS the explorer sees http.
        let authority = origin.split_once("://").map(|(_, authority)| authority);
        if authority.is_none_or(|authority| !authority.eq_ignore_ascii_case(host)) {
            return Some("request from another origin");
        }
    }
    None
}

/// The CSRF token the request carries, from the header or else from a form body, and the
/// request to pass on (its body read, when it had to be, and put back).
pub async fn token(request: Request) -> Result<(Option<String>, Request), &'static str> {
    if let Some(value) = request.headers().get(HEADER) {
        let token = value.to_str().ok().map(str::to_owned);
        return Ok((token, request));
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| {
            media.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Ok((None, request));
    }
    let (parts, body) = request.into_parts();
    let bytes: Bytes = match Limited::new(body, MAX_FORM_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err("form too large or unreadable"),
    };
    let token = form_urlencoded::parse(&bytes)
        .find(|(name, _)| name == FIELD)
        .map(|(_, value)| value.into_owned());
    Ok((token, Request::from_parts(parts, Body::from(bytes))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn same_origin_and_non_browsers_pass() {
        assert_eq!(cross_site(&headers(&[])), None, "curl, the exporter");
        assert_eq!(cross_site(&headers(&[("host", "x:8707")])), None);
        let same = [
            ("host", "explorer.example:8707"),
            ("origin", "http://explorer.example:8707"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(cross_site(&headers(&same)), None);
        // Behind a proxy that ends TLS.
        let proxied = [("host", "Explorer.example"), ("origin", "https://explorer.example")];
        assert_eq!(cross_site(&headers(&proxied)), None);
        let own_form = [("host", "x"), ("origin", "null"), ("sec-fetch-site", "same-origin")];
        assert_eq!(cross_site(&headers(&own_form)), None);
    }

    #[test]
    fn other_sites_are_refused() {
        for pairs in [
            &[("host", "x"), ("sec-fetch-site", "cross-site")][..],
            &[("host", "x"), ("sec-fetch-site", "same-site")],
            &[("host", "x"), ("origin", "http://evil.example")],
            &[("host", "x"), ("origin", "http://x.evil.example")],
            &[("host", "x:8707"), ("origin", "http://x:8708")],
            &[("host", "x"), ("origin", "null")],
            &[("origin", "http://x")],
            &[("host", "x"), ("origin", "http://x"), ("sec-fetch-site", "cross-site")],
        ] {
            assert!(cross_site(&headers(pairs)).is_some(), "{pairs:?}");
        }
    }

    #[test]
    fn only_unsafe_methods_are_checked() {
        assert!(!changes_state(&Method::GET));
        assert!(!changes_state(&Method::HEAD));
        assert!(changes_state(&Method::POST));
        assert!(changes_state(&Method::DELETE));
        assert!(changes_state(&Method::PUT));
        assert!(changes_state(&Method::PATCH));
    }
}
