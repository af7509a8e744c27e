//! The command line: `api-sessions serve` and `api-sessions ingest`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tracing::{error, info, warn};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

use crate::auth::SecureCookies;
use crate::auto_block::AutoBlock;
use crate::endpoints::openapi::OpenApi;
use crate::endpoints::Endpoints;
use crate::ingest;
use crate::server::{self, ServeOptions};
use crate::store::signals::Detection;
use crate::store::{Backend, Store};

#[derive(Parser)]
#[command(
    name = "api-sessions",
    version,
    about = "Receive, store and explore API sessions recorded by ngx_http_api_sessions_module"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive records (POST /v1/records, --follow) and serve the web UI and JSON API.
    Serve {
        /// Where records are kept: sqlite (the --db file) or clickhouse=URL, e.g.
        /// clickhouse=http://127.0.0.1:8123/?database=api_sessions
        #[arg(long, default_value = "sqlite", value_name = "STORE")]
        store: String,
        /// SQLite database file, created if missing.
        #[arg(long, default_value = "api-sessions.db")]
        db: PathBuf,
        /// Address to listen on. Keep it on loopback unless a proxy in front authenticates.
        #[arg(long, default_value = "127.0.0.1:8707")]
        listen: String,
        /// How long records are kept: a number with s, m, h, d or w (36h, 7d).
        #[arg(long, default_value = "7d", value_parser = parse_retention)]
        retention: Retention,
        /// Bearer token POST /v1/records requires.
        #[arg(long, env = "API_SESSIONS_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// NDJSON file written by the module (api_sessions_export file=) to tail; repeatable.
        #[arg(long, value_name = "FILE")]
        follow: Vec<PathBuf>,
        /// Token the web UI and /api/* require: as Authorization: Bearer, or once at /login.
        #[arg(long, env = "API_SESSIONS_UI_TOKEN", hide_env_values = true)]
        ui_token: Option<String>,
        /// When the login cookie is marked Secure: auto (when X-Forwarded-Proto says https),
        /// always or never.
        #[arg(long, default_value = "auto", value_name = "WHEN", value_parser = SecureCookies::parse)]
        secure_cookies: SecureCookies,
        /// OpenAPI 3.x document (JSON or YAML) of the API: its path templates name the
        /// endpoints, and endpoints are documented, shadow, zombie or unused; repeatable.
        #[arg(long, value_name = "FILE")]
        openapi: Vec<PathBuf>,
        /// Detection thresholds (TOML, see docs/detection.md); the defaults without it; `off`
        /// scores nothing.
        #[arg(long, value_name = "FILE")]
        detect: Option<PathBuf>,
        /// Put the key of every session whose risk reaches RISK (1-100) on the denylist as its
        /// records come in (see docs/blocking.md; try the module's dry_run first).
        #[arg(long, value_name = "RISK", value_parser = clap::value_parser!(u8).range(1..=100))]
        auto_block: Option<u8>,
        /// How long an automatic block lasts: a number and s, m, h, d or w; without it, until
        /// unblocked.
        #[arg(long, value_name = "TTL", requires = "auto_block", value_parser = crate::store::denylist::parse_ttl)]
        auto_block_ttl: Option<i64>,
    },
    /// Load NDJSON files into the database; loading a file again adds nothing.
    Ingest {
        /// Where records are kept: sqlite (the --db file) or clickhouse=URL.
        #[arg(long, default_value = "sqlite", value_name = "STORE")]
        store: String,
        /// SQLite database file, created if missing.
        #[arg(long, default_value = "api-sessions.db")]
        db: PathBuf,
        /// NDJSON files (gzip-compressed when named *.gz).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// OpenAPI 3.x document whose path templates name the endpoints of the records
        /// loaded, as with serve; repeatable.
        #[arg(long, value_name = "FILE")]
        openapi: Vec<PathBuf>,
        /// Detection thresholds (TOML, see docs/detection.md); the defaults without it; `off`
        /// scores nothing.
        #[arg(long, value_name = "FILE")]
        detect: Option<PathBuf>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Retention {
    ms: i64,
    text: String,
}

/// One number and one unit of a fixed length. Parsed here: duration crates also take months
/// and years, whose length varies, and forms (`1h30m`, `7 days`) the documentation does not
/// promise.
fn parse_retention(text: &str) -> Result<Retention, String> {
    let invalid =
        || format!("invalid retention \"{text}\": use a number and s, m, h, d or w, e.g. 7d");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().map_err(|_| invalid())?;
    let unit_ms: i64 = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return Err(invalid()),
    };
    match number.checked_mul(unit_ms) {
        Some(ms) if ms > 0 => Ok(Retention { ms, text: text.to_owned() }),
        _ => Err(invalid()),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve {
            store,
            db,
            listen,
            retention,
            token,
            follow,
            ui_token,
            secure_cookies,
            openapi,
            detect,
            auto_block,
            auto_block_ttl,
        } => {
            let Some(store) = backend(&store) else { return ExitCode::from(2) };
            let endpoints = match endpoints(&openapi) {
                Ok(endpoints) => endpoints,
                Err(message) => return fail(&message),
            };
            let Some(detection) = detection(detect.as_deref()) else { return ExitCode::from(2) };
            let options = ServeOptions {
                store,
                db,
                listen,
                retention_ms: retention.ms,
                retention_text: retention.text,
                token: token.filter(|token| !token.is_empty()),
                follow,
                ui_token: ui_token.filter(|token| !token.is_empty()),
                secure_cookies,
                endpoints,
                detection,
                auto_block: auto_block.map(|risk| AutoBlock { risk, ttl_ms: auto_block_ttl }),
            };
            match server::serve(options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => fail(&message),
            }
        }
        Command::Ingest { store, db, files, openapi, detect } => {
            let (Some(store), Some(detection)) = (backend(&store), detection(detect.as_deref()))
            else {
                return ExitCode::from(2);
            };
            match endpoints(&openapi) {
                Ok(endpoints) => ingest_files(&store, &db, &files, endpoints, detection),
                Err(message) => fail(&message),
            }
        }
    }
}

/// Endpoints with the documents of `--openapi`; a document that cannot be used stops the
/// command before anything starts, with the file, the line and the reason.
fn endpoints(files: &[PathBuf]) -> Result<Arc<Endpoints>, String> {
    if files.is_empty() {
        return Ok(Arc::default());
    }
    let openapi = OpenApi::load(files).map_err(|err| err.to_string())?;
    info!("OpenAPI: {} operations from {}", openapi.operations().len(), openapi.files().join(", "));
    Ok(Arc::new(Endpoints::new(Some(openapi))))
}

/// The `--store` value, or `None` after saying what is wrong with it. Checked here rather than
/// by clap, whose message would repeat the value, credentials included.
fn backend(text: &str) -> Option<Backend> {
    match Backend::parse(text) {
        Ok(backend) => Some(backend),
        Err(message) => {
            fail(&message);
            None
        }
    }
}

/// The `--detect` value, or `None` after saying what is wrong with the file.
fn detection(path: Option<&std::path::Path>) -> Option<Detection> {
    match Detection::from_option(path) {
        Ok(detection) => Some(detection),
        Err(message) => {
            fail(&message);
            None
        }
    }
}

/// Logs go to stderr, one line each; `RUST_LOG` picks what is logged (`info` by default, e.g.
/// `RUST_LOG=debug`).
fn init_logging() {
    let filter =
        EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn fail(message: &str) -> ExitCode {
    error!("{message}");
    ExitCode::FAILURE
}

/// Loads every file; exits non-zero if any file failed or had bad lines (the good lines of
/// such a file are stored all the same).
fn ingest_files(
    backend: &Backend,
    db: &std::path::Path,
    files: &[PathBuf],
    endpoints: Arc<Endpoints>,
    detection: Detection,
) -> ExitCode {
    // Retention does not apply to loading: `serve` purges what is too old.
    let store: Arc<dyn Store> = match backend.open_with(db, i64::MAX / 2, endpoints, detection) {
        Ok(store) => store,
        Err(err) => return fail(&err.to_string()),
    };
    let mut clean = true;
    for file in files {
        match ingest::ingest_file(&*store, file) {
            Ok(report) => {
                info!(
                    "{}: {} accepted, {} duplicates, {} rejected",
                    file.display(),
                    report.counts.accepted,
                    report.counts.duplicates,
                    report.rejected_total
                );
                for rejected in &report.rejected {
                    warn!("{}:{}: {}", file.display(), rejected.line, rejected.error);
                }
                clean &= report.rejected_total == 0;
            }
            Err(err) => {
                error!("{}: {err}", file.display());
                clean = false;
            }
        }
    }
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_takes_one_unit() {
        assert_eq!(parse_retention("7d").unwrap().ms, 7 * 86_400_000);
        assert_eq!(parse_retention("36h").unwrap().ms, 36 * 3_600_000);
        assert_eq!(parse_retention("90s").unwrap().ms, 90_000);
        assert_eq!(parse_retention("2w").unwrap().ms, 14 * 86_400_000);
        for bad in ["", "7", "d", "0d", "7x", "-1d", "1.5d", "7dd", "99999999999999999w"] {
            assert!(parse_retention(bad).is_err(), "{bad:?}");
        }
    }
}
