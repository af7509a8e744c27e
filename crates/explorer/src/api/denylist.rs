//! The denylist: `GET /v1/denylist` for the module (the document its `api_sessions_denylist
//! url=` fetches), and `GET`, `POST /api/denylist` and `DELETE /api/denylist/{key_hash}` for
//! people and scripts. Every change is audited; the UI's Block and Unblock go through
//! [`block`] and [`unblock`] too.

use std::sync::Arc;

use api_sessions_core::time::Millis;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::{Error, ErrorBody};
use crate::session_ref;
use crate::store::denylist::{self, AuditEntry, Change, Entry};
use crate::store::Filter;

/// The longest reason kept.
pub const MAX_REASON: usize = 500;
/// Audit lines `GET /api/denylist` returns.
const AUDIT_SHOWN: usize = 500;

/// An entry of the module's document.
#[derive(Serialize, ToSchema)]
pub struct DocumentEntry {
    key_hash: String,
    /// When the block ends; `null` for never.
    #[schema(value_type = Option<String>, format = DateTime)]
    expires: Option<Millis>,
    reason: String,
}

/// What `api_sessions_denylist` reads.
#[derive(Serialize, ToSchema)]
pub struct Document {
    /// Grows with every change.
    version: u64,
    /// The keys blocked now; expired entries are left out.
    entries: Vec<DocumentEntry>,
}

/// The denylist as served to the module: its body and its `ETag`, which changes whenever the
/// body does (a change, or an entry expiring).
pub fn document(list: &denylist::Denylist, now: Millis) -> (String, String) {
    let entries = list
        .entries
        .iter()
        .filter(|entry| !entry.expired(now))
        .map(|entry| DocumentEntry {
            key_hash: entry.key_hash.clone(),
            expires: entry.expires,
            reason: entry.reason.clone(),
        })
        .collect();
    let body = serde_json::to_string(&Document { version: list.version, entries })
        .expect("the document serializes");
    let digest = Sha256::digest(body.as_bytes());
    let tag: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    (body, format!("\"{}-{tag}\"", list.version))
}

/// The denylist for the module's `api_sessions_denylist url=`.
#[utoipa::path(
    get,
    path = "/v1/denylist",
    operation_id = "get_denylist_document",
    tag = "denylist",
    params(
        ("If-None-Match" = Option<String>, Header,
         description = "The `ETag` of the document held: 304 when it is still current."),
    ),
    responses(
        (status = 200, description = "The document, with its `ETag`.", body = Document,
         headers(("ETag" = String, description = "Changes whenever the document does."))),
        (status = 304, description = "The document held is current."),
        (status = 401, description = "A --token is set and the request does not carry it.",
         body = ErrorBody),
        (status = 503, description = "The store failed; keep the last document.",
         body = ErrorBody),
    ),
    security(("ingest_token" = []), ())
)]
pub async fn module_document(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let list = app.with_store(|store| store.denylist()).await?;
    let (body, etag) = document(&list, Millis::now());
    let etag_value = HeaderValue::from_str(&etag).expect("an ETag of ASCII");
    let held = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag
        });
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if held {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value), cache]).into_response());
    }
    let json = (header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(([(header::ETAG, etag_value), json, cache], body).into_response())
}

/// The denylist as people see it.
#[derive(Serialize, ToSchema)]
pub struct Listing {
    pub version: u64,
    /// The keys blocked now, newest first.
    pub entries: Vec<Entry>,
    /// The latest changes, newest first, within the retention.
    pub audit: Vec<AuditEntry>,
}

pub async fn listing(app: &AppState) -> Result<Listing, Error> {
    let (list, audit) = app
        .with_store(|store| {
            Ok::<_, Error>((store.denylist()?, store.denylist_audit(None, AUDIT_SHOWN)?))
        })
        .await?;
    let now = Millis::now();
    let entries = list.entries.into_iter().filter(|entry| !entry.expired(now)).collect();
    Ok(Listing { version: list.version, entries, audit })
}

/// The blocked keys, who blocked them, when and why, and the latest changes.
#[utoipa::path(
    get,
    path = "/api/denylist",
    operation_id = "list_denylist",
    tag = "denylist",
    responses(
        (status = 200, description = "The denylist and its audit log.", body = Listing),
        (status = 401, description = "A UI token is set and the request has neither it nor a login.",
         body = ErrorBody),
        (status = 503, description = "The store failed.", body = ErrorBody),
    ),
    security(("ui_token" = []), ("login_cookie" = []), ())
)]
pub async fn list(State(app): State<Arc<AppState>>) -> Result<Json<Listing>, Error> {
    Ok(Json(listing(&app).await?))
}

/// What to block: a session (its key) or a key hash, for how long and why.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    /// A session id, or a unique prefix of 12 characters or more; its key is blocked.
    pub session_id: Option<String>,
    /// A key hash (32 hex digits), as records carry it.
    pub key_hash: Option<String>,
    /// How long: a number and s, m, h, d or w (`1h`); `null` or absent for a block without end.
    pub ttl: Option<String>,
    #[serde(default)]
    pub reason: String,
}

/// What a change did.
#[derive(Serialize, ToSchema)]
pub struct Changed {
    /// The denylist's version after the change.
    pub version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<Entry>,
}

/// Blocks what `request` names, on behalf of `by`.
pub async fn block(app: &AppState, request: BlockRequest, by: String) -> Result<Changed, Error> {
    let ttl_ms = match request.ttl.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(denylist::parse_ttl(text).map_err(Error::BadRequest)?),
    };
    let reason = request.reason.trim();
    if reason.chars().count() > MAX_REASON {
        return Err(Error::BadRequest(format!("reason longer than {MAX_REASON} characters")));
    }
    if reason.chars().any(char::is_control) {
        return Err(Error::BadRequest("reason with control characters".to_owned()));
    }
    let (key_hash, session_id) = match (request.session_id, request.key_hash) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(Error::BadRequest("give either session_id or key_hash".to_owned()))
        }
        (None, Some(key_hash)) => {
            let key_hash = key_hash.trim().to_ascii_lowercase();
            if !denylist::is_key_hash(&key_hash) {
                return Err(Error::BadRequest(format!(
                    "invalid key_hash \"{key_hash}\": 32 hex digits, as records carry it"
                )));
            }
            (key_hash, None)
        }
        (Some(id), None) => {
            let id = session_ref::resolve(app, id.trim()).await?;
            let key_hash = session_key(app, &id).await?;
            if !denylist::is_key_hash(&key_hash) {
                return Err(Error::BadRequest(format!(
                    "session {id} has the key hash \"{key_hash}\", which is not 32 hex digits: \
                     the module cannot match it"
                )));
            }
            (key_hash, Some(id))
        }
    };
    let now = Millis::now();
    let entry = Entry {
        key_hash,
        expires: ttl_ms.map(|ttl| Millis(now.0 + ttl)),
        reason: reason.to_owned(),
        created_by: by,
        created_at: now,
        session_id,
    };
    let change = Change::Block(entry.clone());
    let version = app.with_store(move |store| store.change_denylist(&change)).await?;
    let version = version.ok_or_else(|| Error::Internal("a block changed nothing".to_owned()))?;
    Ok(Changed { version, entry: Some(entry) })
}

/// The key hash of a session.
async fn session_key(app: &AppState, id: &str) -> Result<String, Error> {
    let id = id.to_owned();
    let detail =
        app.with_store(move |store| store.session(&id, &Filter::default(), None, 0)).await?;
    detail
        .map(|detail| detail.session.key_hash)
        .ok_or(Error::NotFound("no such session, or it is older than the retention"))
}

/// Lifts the block of `key_hash`, on behalf of `by`.
pub async fn unblock(app: &AppState, key_hash: &str, by: String) -> Result<Changed, Error> {
    let key_hash = key_hash.trim().to_ascii_lowercase();
    if !denylist::is_key_hash(&key_hash) {
        return Err(Error::BadRequest(format!(
            "invalid key_hash \"{key_hash}\": 32 hex digits, as records carry it"
        )));
    }
    let change = Change::Unblock { key_hash, by, at: Millis::now() };
    match app.with_store(move |store| store.change_denylist(&change)).await? {
        Some(version) => Ok(Changed { version, entry: None }),
        None => Err(Error::NotFound("this key is not on the denylist")),
    }
}

/// Who a change is made by, as the audit log names them: how the request was let in.
pub fn actor(app: &AppState, headers: &HeaderMap, through: &str) -> String {
    if !app.access.required() {
        return through.to_owned();
    }
    if app.access.has_login(headers) {
        format!("{through} (login)")
    } else {
        format!("{through} (UI token)")
    }
}

/// Blocks a session's key or a key hash.
#[utoipa::path(
    post,
    path = "/api/denylist",
    operation_id = "block",
    tag = "denylist",
    request_body(content = BlockRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Blocked (or the block's expiry and reason replaced).",
         body = Changed),
        (status = 400, description = "A bad ttl, key hash or body; the message says what.",
         body = ErrorBody),
        (status = 401, description = "A UI token is set and the request has neither it nor a login.",
         body = ErrorBody),
        (status = 403, description = "A browser's request from another site, or without the page's CSRF token.",
         body = ErrorBody),
        (status = 404, description = "No such session, or it is older than the retention.",
         body = ErrorBody),
        (status = 409, description = "The session id prefix matches several sessions.",
         body = ErrorBody),
        (status = 503, description = "The store failed.", body = ErrorBody),
    ),
    security(("ui_token" = []), ("login_cookie" = []), ())
)]
pub async fn post(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<BlockRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Changed>), Error> {
    let Json(request) = body.map_err(|rejection| Error::BadRequest(rejection.body_text()))?;
    let by = actor(&app, &headers, "api");
    Ok((StatusCode::CREATED, Json(block(&app, request, by).await?)))
}

/// Lifts a block.
#[utoipa::path(
    delete,
    path = "/api/denylist/{key_hash}",
    operation_id = "unblock",
    tag = "denylist",
    params(("key_hash" = String, Path, description = "The blocked key hash.")),
    responses(
        (status = 200, description = "Unblocked.", body = Changed),
        (status = 400, description = "Not a key hash.", body = ErrorBody),
        (status = 401, description = "A UI token is set and the request has neither it nor a login.",
         body = ErrorBody),
        (status = 403, description = "A browser's request from another site, or without the page's CSRF token.",
         body = ErrorBody),
        (status = 404, description = "The key is not on the denylist.", body = ErrorBody),
        (status = 503, description = "The store failed.", body = ErrorBody),
    ),
    security(("ui_token" = []), ("login_cookie" = []), ())
)]
pub async fn delete(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(key_hash): Path<String>,
) -> Result<Json<Changed>, Error> {
    let by = actor(&app, &headers, "api");
    Ok(Json(unblock(&app, &key_hash, by).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_leaves_out_expired_entries_and_its_etag_follows_the_body() {
        let entry = |key: &str, expires: Option<i64>| Entry {
            key_hash: key.repeat(32),
            expires: expires.map(Millis),
            reason: "r".into(),
            created_by: "api".into(),
            created_at: Millis(0),
            session_id: None,
        };
        let list = denylist::Denylist {
            version: 3,
            entries: vec![entry("a", None), entry("b", Some(2_000)), entry("c", Some(500))],
        };
        let (body, etag) = document(&list, Millis(1_000));
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["version"], 3);
        let keys: Vec<&str> = value["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["key_hash"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["a".repeat(32), "b".repeat(32)]);
        assert_eq!(value["entries"][0]["expires"], serde_json::Value::Null);
        assert_eq!(value["entries"][1]["expires"], "1970-01-01T00:00:02.000Z");
        assert!(etag.starts_with("\"3-") && etag.ends_with('"'), "{etag}");
        // b expires: same version, another body, another tag.
        let (_, later) = document(&list, Millis(2_000));
        assert_ne!(later, etag);
    }
}
