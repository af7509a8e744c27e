//! Who may do what, through the router: the UI token as a bearer token, the login form and its
//! cookie, bad and expired cookies, logging out, the cross-site checks, and the ingest token
//! beside it all.

mod fixtures;

use std::sync::Arc;

use api_sessions::app::{router, AppState};
use api_sessions::auth::signed::{new_nonce, Key};
use api_sessions::auth::{Access, SecureCookies, CSRF_COOKIE, LOGIN_COOKIE, LOGIN_SECONDS};
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use fixtures::*;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const UI_TOKEN: &str = "correct horse battery staple";
const INGEST_TOKEN: &str = "exporter-secret";
const HOST: &str = "explorer.example:8707";

struct App {
    router: Router,
    _store: TempStore,
}

fn app(ui_token: Option<&str>, ingest_token: Option<&str>, secure: SecureCookies) -> App {
    let store = store();
    let state = AppState {
        store: store.store.clone(),
        ingest_token: ingest_token.map(str::to_owned),
        access: Access::new(ui_token.map(str::to_owned), secure),
        endpoints: Default::default(),
    };
    App { router: router(Arc::new(state)), _store: store }
}

fn guarded() -> App {
    app(Some(UI_TOKEN), None, SecureCookies::Auto)
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    fn location(&self) -> &str {
        self.headers[header::LOCATION].to_str().unwrap()
    }

    /// The `Set-Cookie` line for `name`.
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|value| value.to_str().unwrap().to_owned())
            .find(|line| line.starts_with(&format!("{name}=")))
    }

    /// `name=value` of a cookie the reply sets, to send back.
    fn cookie(&self, name: &str) -> String {
        let line = self.set_cookie(name).unwrap_or_else(|| panic!("no {name} cookie: {self:?}"));
        line.split(';').next().unwrap().to_owned()
    }

    /// The value of the page's first `csrf_token` field.
    fn csrf_token(&self) -> String {
        let start = self.body.find("name=\"csrf_token\" value=\"").expect("a CSRF field") + 25;
        self.body[start..].split('"').next().unwrap().to_owned()
    }

    /// The CSRF token the page gives its scripts.
    fn meta_csrf_token(&self) -> String {
        let start = self.body.find("name=\"csrf-token\" content=\"").expect("a CSRF meta") + 27;
        let token = self.body[start..].split('"').next().unwrap().to_owned();
        assert!(token.len() >= 40, "{token}");
        token
    }
}

async fn send(
    app: &App,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    form: Option<&[(&str, &str)]>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri).header(header::HOST, HOST);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = match form {
        Some(fields) => {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            let mut encoded = form_urlencoded::Serializer::new(String::new());
            encoded.extend_pairs(fields.iter());
            Body::from(encoded.finish())
        }
        None => Body::empty(),
    };
    let response = app.router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    Reply { status: parts.status, headers: parts.headers, body: String::from_utf8(body).unwrap() }
}

async fn get(app: &App, uri: &str, headers: &[(&str, &str)]) -> Reply {
    send(app, Method::GET, uri, headers, None).await
}

/// Logs in through the form as a browser would; the login cookie to send back.
async fn log_in(app: &App) -> String {
    let form = get(app, "/login", &[]).await;
    assert_eq!(form.status, StatusCode::OK);
    let browser = form.cookie(CSRF_COOKIE);
    let fields = [("token", UI_TOKEN), ("csrf_token", &form.csrf_token()), ("next", "/")];
    let reply = send(
        app,
        Method::POST,
        "/login",
        &[("cookie", &browser), ("origin", &format!("http://{HOST}"))],
        Some(&fields),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{reply:?}");
    reply.cookie(LOGIN_COOKIE)
}

#[tokio::test]
async fn without_a_login_pages_redirect_and_the_api_answers_401() {
    let app = guarded();
    for uri in ["/api/sessions", "/api/sessions/x", "/api/sessions/x.csv", "/api/openapi.json"] {
        let reply = get(&app, uri, &[]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json", "{uri}");
        assert!(reply.json()["error"].as_str().unwrap().contains("/login"), "{uri}");
        assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer realm=\"api-sessions\"");
    }
    let reply = get(&app, "/", &[]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location(), "/login");
    let reply = get(&app, "/sessions/a%20b?user=x&method=GET", &[]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location(), "/login?next=%2Fsessions%2Fa%2520b%3Fuser%3Dx%26method%3DGET");
    assert_eq!(get(&app, "/nowhere", &[]).await.status, StatusCode::SEE_OTHER, "no probing");

    // What the login page needs is open.
    for uri in ["/login", "/static/app.css", "/static/app.js"] {
        assert_eq!(get(&app, uri, &[]).await.status, StatusCode::OK, "{uri}");
    }
    let page = get(&app, "/login?next=%2Fsessions%2Fx", &[]).await;
    assert!(page.body.contains("<form class=\"login\" method=\"post\" action=\"/login\">"));
    assert!(page.body.contains("name=\"next\" value=\"/sessions/x\""));
    assert!(page.body.contains("type=\"password\""));
    assert!(!page.body.contains("Log out"));
    // Another site as the place to go after logging in becomes the list.
    let page = get(&app, "/login?next=%2F%2Fevil.example%2F", &[]).await;
    assert!(page.body.contains("name=\"next\" value=\"/\""), "{}", page.body);
}

#[tokio::test]
async fn the_ui_token_works_as_a_bearer_token() {
    let app = guarded();
    let good = format!("Bearer {UI_TOKEN}");
    let reply = get(&app, "/api/sessions", &[("authorization", &good)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["sessions"], Value::Array(vec![]));
    let page = get(&app, "/", &[("authorization", &good)]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.set_cookie(CSRF_COOKIE).is_none(), "no cookie for a script");
    assert!(!page.body.contains("Log out"), "nothing to log out of");

    for wrong in [
        "Bearer correct horse battery stapl",
        "Bearer correct horse battery staple!",
        "Basic Y29ycmVjdA==",
        UI_TOKEN,
        "Bearer ",
    ] {
        let reply = get(&app, "/api/sessions", &[("authorization", wrong)]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{wrong}");
    }
}

#[tokio::test]
async fn the_login_form_sets_a_signed_cookie_and_logging_out_ends_it() {
    let app = guarded();
    let form = get(&app, "/login?next=%2F%3Fuser%3Dalice", &[]).await;
    let browser = form.cookie(CSRF_COOKIE);
    let browser_line = form.set_cookie(CSRF_COOKIE).unwrap();
    assert!(browser_line.contains("; HttpOnly; SameSite=Strict"), "{browser_line}");
    let origin = format!("http://{HOST}");

    // A wrong token: the form again, no login.
    let fields = [("token", "guess"), ("csrf_token", &form.csrf_token()), ("next", "/?user=alice")];
    let reply = send(
        &app,
        Method::POST,
        "/login",
        &[("cookie", &browser), ("origin", &origin)],
        Some(&fields),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.body.contains("Wrong token."));
    assert!(reply.set_cookie(LOGIN_COOKIE).is_none());

    let fields =
        [("token", UI_TOKEN), ("csrf_token", &form.csrf_token()), ("next", "/?user=alice")];
    let reply = send(
        &app,
        Method::POST,
        "/login",
        &[("cookie", &browser), ("origin", &origin), ("sec-fetch-site", "same-origin")],
        Some(&fields),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location(), "/?user=alice");
    let line = reply.set_cookie(LOGIN_COOKIE).unwrap();
    assert!(
        line.ends_with(&format!("; Path=/; HttpOnly; SameSite=Strict; Max-Age={LOGIN_SECONDS}"))
    );
    assert!(!line.contains("Secure"), "plain http: {line}");
    assert!(!line.contains(UI_TOKEN) && !line.contains("horse"), "{line}");
    let login = reply.cookie(LOGIN_COOKIE);

    let cookies = format!("{browser}; {login}");
    let reply = get(&app, "/api/sessions", &[("cookie", &cookies)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let page = get(&app, "/", &[("cookie", &cookies)]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("action=\"/logout\""), "Log out is offered");
    assert_eq!(get(&app, "/login", &[("cookie", &login)]).await.status, StatusCode::SEE_OTHER);

    // The page's token is the login's, not the one of the login form.
    let token = page.csrf_token();
    assert_ne!(token, form.csrf_token());
    let reply = send(
        &app,
        Method::POST,
        "/logout",
        &[("cookie", &cookies), ("origin", &origin)],
        Some(&[("csrf_token", &form.csrf_token())]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "the old token");
    let reply = send(
        &app,
        Method::POST,
        "/logout",
        &[("cookie", &cookies), ("origin", &origin)],
        Some(&[("csrf_token", &token)]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location(), "/login");
    assert!(reply.set_cookie(LOGIN_COOKIE).unwrap().contains("Max-Age=0"));
    // A copy of the cookie kept after logging out is refused.
    assert_eq!(
        get(&app, "/api/sessions", &[("cookie", &login)]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get(&app, "/", &[("cookie", &login)]).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn bad_altered_foreign_and_expired_cookies_are_refused() {
    let app = guarded();
    let good = log_in(&app).await;
    assert_eq!(get(&app, "/api/sessions", &[("cookie", &good)]).await.status, StatusCode::OK);

    let value = good.split_once('=').unwrap().1;
    let (expires, rest) = value.split_once('.').unwrap();
    let later = format!("{LOGIN_COOKIE}={}.{rest}", expires.parse::<i64>().unwrap() + 86_400);
    let key = Key::from_token(UI_TOKEN);
    let expired = format!("{LOGIN_COOKIE}={}", key.login_value(&new_nonce(), 1_000_000_000));
    let foreign = format!(
        "{LOGIN_COOKIE}={}",
        Key::from_token("another explorer's token").login_value(&new_nonce(), i64::MAX / 2)
    );
    let signed_by_us = format!("{LOGIN_COOKIE}={}", key.login_value(&new_nonce(), i64::MAX / 2));
    for bad in [
        format!("{LOGIN_COOKIE}="),
        format!("{LOGIN_COOKIE}=garbage"),
        format!("{LOGIN_COOKIE}={UI_TOKEN}"),
        later,
        expired,
        foreign,
        format!("{}x", good),
    ] {
        let reply = get(&app, "/api/sessions", &[("cookie", &bad)]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(get(&app, "/", &[("cookie", &bad)]).await.status, StatusCode::SEE_OTHER);
    }
    // The key comes from the token: a login made by another explorer with the same token holds.
    let reply = get(&app, "/api/sessions", &[("cookie", &signed_by_us)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    // A cookie means nothing to an explorer without a UI token, which is open anyway.
    let open = app_without_ui_token();
    assert_eq!(get(&open, "/api/sessions", &[("cookie", &good)]).await.status, StatusCode::OK);
}

fn app_without_ui_token() -> App {
    app(None, None, SecureCookies::Auto)
}

#[tokio::test]
async fn requests_from_other_sites_are_refused_with_or_without_a_ui_token() {
    let body = || ndjson(&[record("s", 1, base())]);
    let open = app_without_ui_token();
    let post_records = |headers: Vec<(&'static str, String)>| {
        let app = &open;
        let body = body();
        async move {
            let mut request =
                Request::post("/v1/records").header(header::HOST, HOST).body(Body::from(body));
            for (name, value) in headers {
                request.as_mut().unwrap().headers_mut().insert(name, value.parse().unwrap());
            }
            let response = app.router.clone().oneshot(request.unwrap()).await.unwrap();
            response.status()
        }
    };
    // The exporter and curl send neither Origin nor Sec-Fetch-Site.
    assert_eq!(post_records(vec![]).await, StatusCode::OK);
    assert_eq!(post_records(vec![("origin", format!("http://{HOST}"))]).await, StatusCode::OK);
    for headers in [
        vec![("origin", "http://evil.example".to_owned())],
        vec![("origin", "null".to_owned())],
        vec![("sec-fetch-site", "cross-site".to_owned())],
        vec![("sec-fetch-site", "same-site".to_owned())],
        vec![("origin", format!("http://{HOST}")), ("sec-fetch-site", "cross-site".to_owned())],
    ] {
        assert_eq!(post_records(headers.clone()).await, StatusCode::FORBIDDEN, "{headers:?}");
    }
    let reply =
        send(&open, Method::POST, "/v1/records", &[("origin", "http://evil.example")], None).await;
    assert_eq!(reply.json()["error"], "request from another origin");
    // A browser that was shown the UI holds its cookie, and must send the page's token.
    let page = get(&open, "/", &[]).await;
    let browser = page.cookie(CSRF_COOKIE);
    let reply = send(&open, Method::POST, "/v1/records", &[("cookie", &browser)], None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let token = page.meta_csrf_token();
    let reply = send(
        &open,
        Method::POST,
        "/v1/records",
        &[("cookie", &browser), ("x-csrf-token", &token)],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");

    // With a UI token: a cross-site form refused before anything else, on a page too.
    let app = guarded();
    let login = log_in(&app).await;
    let page = get(&app, "/", &[("cookie", &login)]).await;
    let token = page.csrf_token();
    assert_eq!(page.meta_csrf_token(), token);
    let reply = send(
        &app,
        Method::POST,
        "/logout",
        &[("cookie", &login), ("origin", "https://evil.example")],
        Some(&[("csrf_token", &token)]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(reply.body.contains("request from another origin"));
    for fields in [&[][..], &[("csrf_token", "")], &[("csrf_token", "AAAA")]] {
        let reply = send(&app, Method::POST, "/logout", &[("cookie", &login)], Some(fields)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{fields:?}");
        assert!(reply.body.contains("CSRF token"));
    }
    // The token also travels as a header.
    let reply =
        send(&app, Method::POST, "/logout", &[("cookie", &login), ("x-csrf-token", &token)], None)
            .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);

    // The login form: no token, or a token of another browser, is refused even with the
    // right UI token.
    let form = get(&app, "/login", &[]).await;
    let other = get(&app, "/login", &[]).await;
    let cases = [
        (None, None),
        (Some(form.cookie(CSRF_COOKIE)), None),
        (Some(form.cookie(CSRF_COOKIE)), Some(other.csrf_token())),
        (None, Some(form.csrf_token())),
    ];
    for (cookie, token) in cases {
        let mut headers = vec![];
        if let Some(cookie) = &cookie {
            headers.push(("cookie", cookie.as_str()));
        }
        let mut fields = vec![("token", UI_TOKEN)];
        if let Some(token) = &token {
            fields.push(("csrf_token", token.as_str()));
        }
        let reply = send(&app, Method::POST, "/login", &headers, Some(&fields)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{cookie:?} {token:?}");
        assert!(reply.set_cookie(LOGIN_COOKIE).is_none());
    }
    // A bearer token is not ambient: scripts need no CSRF token.
    let reply = send(
        &app,
        Method::POST,
        "/logout",
        &[("authorization", &format!("Bearer {UI_TOKEN}"))],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn cookies_are_secure_when_asked_or_behind_https() {
    let app = app(Some(UI_TOKEN), None, SecureCookies::Always);
    let form = get(&app, "/login", &[]).await;
    assert!(form.set_cookie(CSRF_COOKIE).unwrap().ends_with("; Secure"));
    let fields = [("token", UI_TOKEN), ("csrf_token", &form.csrf_token())];
    let browser = form.cookie(CSRF_COOKIE);
    let reply = send(&app, Method::POST, "/login", &[("cookie", &browser)], Some(&fields)).await;
    assert!(reply.set_cookie(LOGIN_COOKIE).unwrap().ends_with("; Secure"));

    let app = guarded();
    let form = get(&app, "/login", &[("x-forwarded-proto", "https")]).await;
    assert!(form.set_cookie(CSRF_COOKIE).unwrap().ends_with("; Secure"));
    let form = get(&app, "/login", &[]).await;
    assert!(!form.set_cookie(CSRF_COOKIE).unwrap().contains("Secure"));
}

#[tokio::test]
async fn ingest_keeps_its_own_token_beside_the_ui_token() {
    let app = app(Some(UI_TOKEN), Some(INGEST_TOKEN), SecureCookies::Auto);
    let body = ndjson(&[record("s", 1, base())]);
    let post = |authorization: &str| {
        let request = Request::post("/v1/records")
            .header(header::HOST, HOST)
            .header(header::AUTHORIZATION, authorization)
            .body(Body::from(body.clone()))
            .unwrap();
        app.router.clone().oneshot(request)
    };
    let reply = post(&format!("Bearer {INGEST_TOKEN}")).await.unwrap();
    assert_eq!(reply.status(), StatusCode::OK, "the exporter needs no login");
    let reply = post(&format!("Bearer {UI_TOKEN}")).await.unwrap();
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "the UI token is not the ingest token");
    let sessions =
        get(&app, "/api/sessions", &[("authorization", &format!("Bearer {INGEST_TOKEN}"))]).await;
    assert_eq!(sessions.status, StatusCode::UNAUTHORIZED, "the ingest token opens no UI");
    let sessions =
        get(&app, "/api/sessions", &[("authorization", &format!("Bearer {UI_TOKEN}"))]).await;
    assert_eq!(sessions.json()["sessions"][0]["requests"], 1);
}
