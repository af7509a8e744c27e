//! The pure logic of nginx-api-sessions.
//!
//! Nothing here links against nginx: the module's FFI layer turns nginx structures into the
//! plain views this crate works on, so parsers, key resolution, hashing, the record model and
//! the exporter can be tested and fuzzed on their own. The explorer reuses the record model.

pub mod assemble;
pub mod body;
pub mod capture;
pub mod counters;
pub mod denylist;
pub mod export;
pub mod hash;
pub mod keys;
pub mod mask;
pub mod profile;
pub mod record;
pub mod session_table;
pub mod shm_lock;
#[cfg(test)]
mod shm_testing;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;
