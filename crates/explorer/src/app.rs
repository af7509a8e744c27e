//! The web application: the state every handler shares, and the router that mounts the API
//! ([`crate::api`]), the pages ([`crate::ui`]) and the checks of [`crate::auth`] behind the
//! security headers every response carries.

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Router;

use crate::auth::{self, Access};
use crate::endpoints::Endpoints;
use crate::error::Error;
use crate::store::Store;
use crate::{api, ui};

/// What every handler shares.
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Bearer token `POST /v1/records` requires, when set.
    pub ingest_token: Option<String>,
    /// Who may use the UI and `/api/*`.
    pub access: Access,
    /// The OpenAPI documents given, for the spec status of endpoints (the store assigns
    /// endpoints with the same).
    pub endpoints: Arc<Endpoints>,
}

impl AppState {
    /// Runs `work` on the store on a thread where blocking is allowed: store calls wait on
    /// disk or on the network.
    pub async fn with_store<T, E>(
        &self,
        work: impl FnOnce(&dyn Store) -> Result<T, E> + Send + 'static,
    ) -> Result<T, Error>
    where
        T: Send + 'static,
        E: Into<Error> + Send + 'static,
    {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || work(&*store)).await {
            Ok(result) => result.map_err(Into::into),
            Err(err) => Err(Error::Internal(err.to_string())),
        }
    }
}

/// Captured data is attacker-controlled: pages load nothing but the app's own stylesheet and
/// script, and cannot be framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
     img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(api::routes(&state))
        .merge(ui::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Session URLs name users and IPs; keep them out of other sites' logs.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}
