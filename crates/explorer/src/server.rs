//! `api-sessions serve`: the HTTP server, the followers and the retention timer.

use std::io;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::follow::{self, Follower};
use crate::store::{Backend, Store};
use crate::{api, ui};

/// What every handler shares.
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Bearer token `POST /v1/records` requires, when set.
    pub token: Option<String>,
}

/// Captured data is attacker-controlled: pages load nothing but the app's own stylesheet and
/// script, and cannot be framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
     img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// How often the retention purge runs. Between runs, queries already hide what has expired.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/records", post(api::post_records))
        .route("/api/sessions", get(api::list_sessions))
        .route("/api/sessions/{id}", get(api::session))
        .merge(ui::routes())
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

pub struct ServeOptions {
    pub store: Backend,
    /// The SQLite file, with [`Backend::Sqlite`].
    pub db: PathBuf,
    pub listen: String,
    pub retention_ms: i64,
    pub retention_text: String,
    pub token: Option<String>,
    pub follow: Vec<PathBuf>,
}

/// Runs until SIGINT or SIGTERM. Errors are one line for the user.
pub fn serve(options: ServeOptions) -> Result<(), String> {
    let store = options.store.open(&options.db, options.retention_ms).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the runtime: {err}"))?;
    runtime.block_on(async {
        let listener = TcpListener::bind(&options.listen).await.map_err(|err| {
            let reason = match err.kind() {
                io::ErrorKind::AddrInUse => {
                    "address already in use (is another api-sessions running?)".to_owned()
                }
                _ => err.to_string(),
            };
            format!("cannot listen on {}: {reason}", options.listen)
        })?;
        let address = listener.local_addr().map_err(|err| err.to_string())?;
        info!(
            "listening on http://{address}/ ({}, retention {})",
            options.store.describe(&options.db),
            options.retention_text
        );

        let mut followers = Vec::new();
        for path in &options.follow {
            let (stop, stopped) = mpsc::channel::<()>();
            let follower = Follower::new(store.clone(), path, follow::Options::default());
            info!("following \"{}\"", path.display());
            followers.push((stop, thread::spawn(move || follower.run(stopped))));
        }
        let purge = tokio::spawn(purge_periodically(store.clone()));

        let app = router(Arc::new(AppState { store, token: options.token.clone() }));
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|err| format!("server failed: {err}"));

        purge.abort();
        for (stop, thread) in followers {
            drop(stop);
            let _ = thread.join();
        }
        info!("stopped");
        served
    })
}

async fn purge_periodically(store: Arc<dyn Store>) {
    let mut interval = tokio::time::interval(PURGE_INTERVAL);
    loop {
        interval.tick().await;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.purge()).await {
            Ok(Ok(counts)) if counts.requests > 0 || counts.sessions > 0 => info!(
                "retention purge deleted {} requests, {} sessions",
                counts.requests, counts.sessions
            ),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => error!("retention purge failed: {err}"),
            Err(err) => error!("retention purge failed: {err}"),
        }
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
