//! `api-sessions serve`: runs the web application ([`crate::app`]), the followers and the
//! retention timer until it is told to stop.

use std::io;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::app::{self, AppState};
use crate::auth::{Access, SecureCookies};
use crate::auto_block::{AutoBlock, AutoBlocking};
use crate::endpoints::Endpoints;
use crate::follow::{self, Follower};
use crate::store::signals::Detection;
use crate::store::{Backend, Store};

/// How often the retention purge runs. Between runs, queries already hide what has expired.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

pub struct ServeOptions {
    pub store: Backend,
    /// The SQLite file, with [`Backend::Sqlite`].
    pub db: PathBuf,
    pub listen: String,
    pub retention_ms: i64,
    pub retention_text: String,
    pub token: Option<String>,
    pub follow: Vec<PathBuf>,
    pub ui_token: Option<String>,
    pub secure_cookies: SecureCookies,
    /// Endpoints, with the OpenAPI documents of `--openapi`.
    pub endpoints: Arc<Endpoints>,
    pub detection: Detection,
    /// `--auto-block`, when given.
    pub auto_block: Option<AutoBlock>,
}

/// Shorter UI tokens are accepted with a warning: the login form can be tried at will.
const SHORT_UI_TOKEN: usize = 16;

/// Runs until SIGINT or SIGTERM. Errors are one line for the user.
pub fn serve(options: ServeOptions) -> Result<(), String> {
    let store = options
        .store
        .open_with(
            &options.db,
            options.retention_ms,
            options.endpoints.clone(),
            options.detection.clone(),
        )
        .map_err(|e| e.to_string())?;
    let store: Arc<dyn Store> = match options.auto_block {
        Some(settings) => {
            let ttl = settings
                .ttl_ms
                .map_or("until unblocked".to_owned(), |ms| format!("{} s", ms / 1000));
            info!("auto-block: sessions reaching risk {} are blocked ({ttl})", settings.risk);
            Arc::new(AutoBlocking::new(store, settings))
        }
        None => store,
    };
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

        warn_about_access(&options, address.ip().is_loopback());
        let access = Access::new(options.ui_token.clone(), options.secure_cookies);
        let state = AppState {
            store,
            ingest_token: options.token.clone(),
            access,
            endpoints: options.endpoints.clone(),
        };
        let app = app::router(Arc::new(state));
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

/// What an operator should hear about at start: open doors and weak tokens.
fn warn_about_access(options: &ServeOptions, loopback: bool) {
    match &options.ui_token {
        None if !loopback => warn!(
            "the web UI and /api/* are open to whoever reaches {}: set --ui-token, or put a \
             proxy that authenticates in front",
            options.listen
        ),
        Some(token) if token.chars().count() < SHORT_UI_TOKEN => warn!(
            "the UI token is shorter than {SHORT_UI_TOKEN} characters; use a long random one \
             (openssl rand -hex 32)"
        ),
        _ => {}
    }
    if options.ui_token.is_some() && options.token.is_none() {
        warn!("--ui-token does not guard POST /v1/records: set --token for the module's side");
    }
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
