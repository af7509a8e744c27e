//! Who may do what, as layers in front of the handlers they guard (see [`crate::app::router`]
//! and [`crate::api::routes`]).
//!
//! - `/v1/*` (the module's side: `POST /v1/records`) requires the bearer token given with
//!   `--token`, checked before the body is read.
//! - Everything else, the pages and `/api/*`, requires the UI token given with `--ui-token`,
//!   when one is: sent as `Authorization: Bearer`, or proven once at `/login`, which sets a
//!   login cookie (`HttpOnly`, `SameSite=Strict`, signed, expiring; never the token itself).
//!   The login page and the stylesheet and script it loads are open.
//! - Requests that change something are checked against cross-site requests, with or without
//!   a UI token ([`csrf`]).
//!
//! Pages learn who is looking through [`viewer`], which [`guard`] sets for the request.

pub mod csrf;
pub mod signed;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::app::AppState;
use crate::error::Error;
use signed::{Key, Login, Nonce};

/// The cookie that holds a login.
pub const LOGIN_COOKIE: &str = "api_sessions_login";
/// The cookie that binds the CSRF token of a browser that is not logged in.
pub const CSRF_COOKIE: &str = "api_sessions_csrf";
/// How long a login lasts.
pub const LOGIN_SECONDS: i64 = 12 * 3600;

/// When the cookies carry `Secure` (sent back over HTTPS only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecureCookies {
    /// When the request reached the proxy in front over HTTPS (`X-Forwarded-Proto: https`);
    /// the explorer itself speaks plain HTTP.
    #[default]
    Auto,
    Always,
    Never,
}

impl SecureCookies {
    pub fn parse(text: &str) -> Result<SecureCookies, String> {
        match text {
            "auto" => Ok(SecureCookies::Auto),
            "always" => Ok(SecureCookies::Always),
            "never" => Ok(SecureCookies::Never),
            _ => Err(format!("invalid value \"{text}\": use auto, always or never")),
        }
    }

    fn applies(self, headers: &HeaderMap) -> bool {
        match self {
            SecureCookies::Always => true,
            SecureCookies::Never => false,
            SecureCookies::Auto => headers
                .get("x-forwarded-proto")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.split(',').next())
                .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https")),
        }
    }
}

/// The UI's access settings and the logins ended before their time.
pub struct Access {
    ui_token: Option<String>,
    key: Key,
    secure: SecureCookies,
    /// Logins ended by "Log out", until they would have expired anyway. Kept in memory: after
    /// a restart a copied cookie is good again until it expires.
    logged_out: Mutex<HashMap<Nonce, i64>>,
}

impl Default for Access {
    /// No UI token: the UI and API are open (cross-site checks still apply).
    fn default() -> Self {
        Access::new(None, SecureCookies::Auto)
    }
}

impl Access {
    pub fn new(ui_token: Option<String>, secure: SecureCookies) -> Access {
        let key = ui_token.as_deref().map_or_else(Key::random, Key::from_token);
        Access { ui_token, key, secure, logged_out: Mutex::new(HashMap::new()) }
    }

    /// Whether a UI token is set, that is whether the UI and API need a login.
    pub fn required(&self) -> bool {
        self.ui_token.is_some()
    }

    /// Whether `given` is the UI token.
    pub fn is_ui_token(&self, given: &str) -> bool {
        self.ui_token.as_deref().is_some_and(|token| signed::same_secret(given, token))
    }

    /// Whether the request's cookie proves a login.
    pub fn has_login(&self, headers: &HeaderMap) -> bool {
        self.login(headers).is_some()
    }

    /// The login a request's cookie proves, if any.
    fn login(&self, headers: &HeaderMap) -> Option<Login> {
        self.ui_token.as_ref()?;
        let login = self.key.open_login(cookie(headers, LOGIN_COOKIE)?, now())?;
        let logged_out = self.logged_out.lock().unwrap_or_else(|e| e.into_inner());
        (!logged_out.contains_key(&login.nonce)).then_some(login)
    }

    /// A new login: the `Set-Cookie` value that holds it.
    pub fn log_in(&self, request: &HeaderMap) -> HeaderValue {
        let value = self.key.login_value(&signed::new_nonce(), now() + LOGIN_SECONDS);
        self.set_cookie(request, LOGIN_COOKIE, &value, Some(LOGIN_SECONDS))
    }

    /// Ends the request's login, if it has one: the `Set-Cookie` value that removes it.
    pub fn log_out(&self, request: &HeaderMap) -> HeaderValue {
        if let Some(login) = self.login(request) {
            let mut logged_out = self.logged_out.lock().unwrap_or_else(|e| e.into_inner());
            let now = now();
            logged_out.retain(|_, expires| *expires > now);
            logged_out.insert(login.nonce, login.expires);
        }
        self.set_cookie(request, LOGIN_COOKIE, "", Some(0))
    }

    fn set_cookie(
        &self,
        request: &HeaderMap,
        name: &str,
        value: &str,
        max_age: Option<i64>,
    ) -> HeaderValue {
        let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
        if let Some(seconds) = max_age {
            cookie.push_str(&format!("; Max-Age={seconds}"));
        }
        if self.secure.applies(request) {
            cookie.push_str("; Secure");
        }
        HeaderValue::from_str(&cookie).expect("cookie of ASCII names and values")
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// The value of a cookie the request carries; the first of that name.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

/// What a page may need to know about who is looking.
#[derive(Clone, Debug)]
pub struct Viewer {
    /// Logged in with the login cookie (rather than a bearer token, or with no UI token set):
    /// pages offer "Log out".
    pub logged_in: bool,
    /// The token forms of this page carry in their `csrf_token` field.
    pub csrf_token: String,
}

tokio::task_local! {
    static VIEWER: Viewer;
}

/// Who is looking at the page being made, for the request [`guard`] let through.
pub fn viewer() -> Option<Viewer> {
    VIEWER.try_with(Viewer::clone).ok()
}

/// Which rule a path falls under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Zone {
    /// The module's side, guarded by `--token` ([`require_ingest_token`]).
    Ingest,
    /// The login page and what it loads.
    Open,
    /// The pages and `/api/*`.
    Ui,
}

fn zone(path: &str) -> Zone {
    match path {
        "/login" | "/static/app.css" | "/static/app.js" => Zone::Open,
        _ if path.starts_with("/v1/") => Zone::Ingest,
        _ => Zone::Ui,
    }
}

/// The one gate every request passes: the UI token (when set) and the cross-site checks.
pub async fn guard(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let access = &app.access;
    let zone = zone(request.uri().path());
    let by_bearer = bearer(request.headers()).is_some_and(|given| access.is_ui_token(given));
    let login = access.login(request.headers());
    if zone == Zone::Ui && access.required() && !by_bearer && login.is_none() {
        return login_required(&request);
    }

    // The nonce the page's CSRF token is made from: the login's, else the browser's own.
    let browser = cookie(request.headers(), CSRF_COOKIE).and_then(signed::unhex);
    let bound = login.map(|login| login.nonce).or(browser);

    let mut request = request;
    if csrf::changes_state(request.method()) {
        if let Some(reason) = csrf::cross_site(request.headers()) {
            return refused(&request, reason);
        }
        // A bearer token is not sent by a browser on its own, so it cannot be forged across
        // sites; cookies are, so their holder proves the page it came from. The login form
        // always does.
        let needs_token = !by_bearer && (bound.is_some() || zone == Zone::Open);
        if needs_token {
            let (token, passed_on) = match csrf::token(request).await {
                Ok(found) => found,
                Err(reason) => return Error::BadRequest(reason.to_owned()).into_response(),
            };
            request = passed_on;
            let valid = match (bound, token) {
                (Some(nonce), Some(token)) => access.key.csrf_matches(&nonce, &token),
                _ => false,
            };
            if !valid {
                return refused(&request, "missing or stale CSRF token; reload the page");
            }
        }
    }

    let nonce = bound.unwrap_or_else(signed::new_nonce);
    let viewer = Viewer {
        logged_in: login.is_some() && !by_bearer,
        csrf_token: access.key.csrf_token(&nonce),
    };
    let set_browser_cookie = bound.is_none() && !by_bearer;
    let headers = request.headers().clone();
    let mut response = VIEWER.scope(viewer, next.run(request)).await;
    if set_browser_cookie && is_html(&response) {
        let cookie = access.set_cookie(&headers, CSRF_COOKIE, &signed::hex(&nonce), None);
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

fn is_html(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"))
}

/// The API answers 401; a page sends the browser to the login form, and back afterwards.
fn login_required(request: &Request) -> Response {
    let path = request.uri().path();
    if path.starts_with("/api/") {
        return Error::LoginRequired.into_response();
    }
    let back = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let target = if *request.method() == Method::GET && back != "/" {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("next", back);
        format!("/login?{}", query.finish())
    } else {
        "/login".to_owned()
    };
    Redirect::to(&target).into_response()
}

fn refused(request: &Request, reason: &'static str) -> Response {
    let path = request.uri().path();
    if path.starts_with("/api/") || path.starts_with("/v1/") {
        Error::Forbidden(reason).into_response()
    } else {
        crate::ui::message_page(StatusCode::FORBIDDEN, "Refused", reason)
    }
}

/// Where to go after logging in: a path of this site, never another site.
pub fn local_target(next: Option<&str>) -> &str {
    match next {
        Some(next)
            if next.starts_with('/')
                && !next.starts_with("//")
                && !next.contains('\\')
                && !next.chars().any(char::is_control) =>
        {
            next
        }
        _ => "/",
    }
}

/// Lets the request through when it carries the ingest token, or when none is set.
pub async fn require_ingest_token(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, Error> {
    match &app.ingest_token {
        Some(token)
            if !bearer(request.headers())
                .is_some_and(|given| signed::same_secret(given, token)) =>
        {
            Err(Error::Unauthorized)
        }
        _ => Ok(next.run(request).await),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones() {
        assert_eq!(zone("/login"), Zone::Open);
        assert_eq!(zone("/static/app.css"), Zone::Open);
        assert_eq!(zone("/static/other"), Zone::Ui);
        assert_eq!(zone("/v1/records"), Zone::Ingest);
        assert_eq!(zone("/v1"), Zone::Ui);
        assert_eq!(zone("/"), Zone::Ui);
        assert_eq!(zone("/api/sessions"), Zone::Ui);
        assert_eq!(zone("/login/"), Zone::Ui);
    }

    #[test]
    fn after_login_only_local_paths() {
        assert_eq!(local_target(Some("/sessions/x?user=a")), "/sessions/x?user=a");
        for bad in ["//evil.example/", "/\\evil.example", "https://evil.example", "evil", "/\nx"] {
            assert_eq!(local_target(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(local_target(None), "/");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1; api_sessions_login=v; b=2".parse().unwrap());
        headers.append(header::COOKIE, "api_sessions_csrf=\"c\"".parse().unwrap());
        assert_eq!(cookie(&headers, LOGIN_COOKIE), Some("v"));
        assert_eq!(cookie(&headers, CSRF_COOKIE), Some("c"));
        assert_eq!(cookie(&headers, "api_sessions"), None);
    }

    #[test]
    fn secure_when_asked_or_behind_https() {
        let mut https = HeaderMap::new();
        https.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(SecureCookies::Auto.applies(&https));
        assert!(!SecureCookies::Auto.applies(&HeaderMap::new()));
        assert!(SecureCookies::Always.applies(&HeaderMap::new()));
        assert!(!SecureCookies::Never.applies(&https));
    }
}
