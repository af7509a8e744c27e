//! Endpoints.

pub mod distinct;
pub mod histogram;
pub mod openapi;
pub mod stats;
pub mod template;
