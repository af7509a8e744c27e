//! `GET /api/openapi.json`: a valid OpenAPI 3.1 document that describes every route of the API,
//! each of which is served, with every schema it refers to.

mod fixtures;

use std::collections::BTreeSet;
use std::sync::Arc;

use api_sessions::app::{router, AppState};
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use fixtures::*;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// Every route of the API: the document must describe exactly these.
const OPERATIONS: [(&str, &str); 11] = [
    ("post", "/v1/records"),
    ("get", "/v1/denylist"),
    ("get", "/api/denylist"),
    ("post", "/api/denylist"),
    ("delete", "/api/denylist/{key_hash}"),
    ("get", "/api/sessions"),
    ("get", "/api/suggest"),
    ("get", "/api/endpoints"),
    ("get", "/api/sessions/{id}"),
    ("get", "/api/sessions/{id}.csv"),
    ("get", "/api/openapi.json"),
];

fn state(store: &TempStore) -> Arc<AppState> {
    Arc::new(AppState {
        store: store.store.clone(),
        ingest_token: None,
        access: Default::default(),
        endpoints: Default::default(),
    })
}

async fn fetch(router: &axum::Router, method: &str, uri: &str) -> (StatusCode, String, Vec<u8>) {
    let request = Request::builder()
        .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.into_body().collect().await.unwrap().to_bytes().to_vec())
}

/// Follows a local `$ref`.
fn resolve<'a>(document: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("not local: {reference}"));
    document.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {reference}"))
}

/// Checks that every `$ref` under `value` resolves.
fn check_refs(document: &Value, value: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                resolve(document, reference);
            }
            map.values().for_each(|v| check_refs(document, v));
        }
        Value::Array(items) => items.iter().for_each(|v| check_refs(document, v)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_describes_every_route_and_every_route_is_served() {
    let store = store();
    let state = state(&store);
    let app = router(state.clone());
    let (status, content_type, body) = fetch(&app, "get", "/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    let document: Value = serde_json::from_slice(&body).expect("valid JSON");
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "api-sessions");
    assert_eq!(document, serde_json::to_value(api_sessions::api::document(&state)).unwrap());

    let described: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object().unwrap().keys().map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> =
        OPERATIONS.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(described, expected);

    check_refs(&document, &document);
    let schemes = document["components"]["securitySchemes"].as_object().unwrap();
    for (method, path) in OPERATIONS {
        let operation = &document["paths"][path][method];
        assert!(operation["operationId"].is_string(), "{method} {path}");
        for (status, response) in operation["responses"].as_object().unwrap() {
            assert!(status.parse::<u16>().is_ok(), "{method} {path} {status}");
            assert!(response["description"].is_string(), "{method} {path} {status}");
            if status == "304" {
                continue; // Not Modified has no body.
            }
            let content = response["content"].as_object().expect("a described body");
            for media in content.values() {
                assert!(media["schema"].is_object(), "{method} {path} {status}");
            }
        }
        for requirement in operation["security"].as_array().unwrap() {
            for name in requirement.as_object().unwrap().keys() {
                assert!(schemes.contains_key(name), "{method} {path}: scheme {name}");
            }
        }
        // Served: an answer of the API itself, not the pages' "no such page".
        let uri = path.replace("{id}", "no-such-session");
        let (status, content_type, _) = fetch(&app, method, &uri).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(!content_type.starts_with("text/html"), "{method} {path} is not routed");
        let documented = operation["responses"].get(status.as_str()).is_some();
        assert!(documented, "{method} {path} answered {status}, which is not described");
    }

    // The parameters of the list are the ones the handlers read, described.
    let parameters = document["paths"]["/api/sessions"]["get"]["parameters"].as_array().unwrap();
    let names: Vec<&str> = parameters.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for name in ["from", "to", "user", "flow", "ua", "status", "attack", "q", "limit", "cursor"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert!(parameters.iter().all(|p| p["in"] == "query" && p["description"].is_string()));
    let session = resolve(&document, "#/components/schemas/SessionSummary");
    for field in [
        "session_id",
        "first_ts",
        "last_ts",
        "requests",
        "user",
        "users",
        "flows",
        "ips",
        "attacks",
        "user_agents",
    ] {
        assert!(session["properties"][field].is_object(), "SessionSummary.{field}");
    }
    // Suggestions: `field` is required and named.
    let parameters = document["paths"]["/api/suggest"]["get"]["parameters"].as_array().unwrap();
    let field = parameters.iter().find(|p| p["name"] == "field").expect("field");
    assert_eq!(field["required"], true);
}
