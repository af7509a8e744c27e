//! api-sessions: receives the records of ngx_http_api_sessions_module, keeps them in a store
//! and lets analysts explore the sessions in a web UI and a JSON API.
//!
//! Records come in through [`api`] (`POST /v1/records`), [`follow`] (tailing the module's
//! NDJSON file) or [`ingest`] (loading files), parsed into a [`batch`]; [`store`] keeps and
//! queries them; [`ui`] renders the pages; [`server`] puts it together.

pub mod api;
pub mod batch;
pub mod cli;
pub mod follow;
pub mod ingest;
pub mod params;
pub mod server;
pub mod store;
pub mod ui;
