//! Endpoints.

pub mod histogram;
pub mod template;
