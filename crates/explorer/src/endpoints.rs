//! Endpoints.

pub mod distinct;
pub mod histogram;
pub mod stats;
pub mod template;
