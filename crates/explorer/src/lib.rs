//! api-sessions: receives the records of ngx_http_api_sessions_module, keeps them in a store
//! and lets analysts explore the sessions in a web UI and a JSON API.
//!
//! - Records come in through `POST /v1/records` ([`api`]), [`follow`] (tailing the module's
//!   NDJSON file) or `api-sessions ingest`; [`ingest`] turns NDJSON into a [`batch`].
//! - [`store`] keeps and queries them, behind one trait for SQLite and ClickHouse.
//! - [`app`] is the web application: the state handlers share and the router, which mounts
//!   [`api`] (one file per resource), [`ui`] (one file per page) and the checks of [`auth`].
//!   Handlers fail with the one [`error::Error`]; [`params`] reads filters, cursors and page
//!   sizes from query strings and writes them back into links; [`session_ref`] resolves the
//!   session id prefixes URLs may carry.
//! - [`server`] runs the application, the followers and the retention purge; [`cli`] is the
//!   command line.

pub mod api;
pub mod app;
pub mod auth;
pub mod auto_block;
pub mod batch;
pub mod cli;
pub mod detect;
pub mod endpoints;
pub mod error;
pub mod follow;
pub mod ingest;
pub mod params;
pub mod server;
pub mod session_ref;
pub mod store;
pub mod ui;
