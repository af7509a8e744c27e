//! Small helpers for the FFI boundary.

use core::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use nginx_sys::{ngx_conf_t, ngx_str_t};
use ngx::core::NGX_CONF_ERROR;

use crate::log::Log;

/// Runs `f`, turning a panic into `fallback`: no Rust panic may unwind into nginx.
pub fn guard<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(_) => {
            log!(Log::cycle(), Alert, "internal error (panic), see stderr");
            fallback
        }
    }
}

/// [`guard`] for directive handlers.
pub fn guard_conf(f: impl FnOnce() -> *mut c_char) -> *mut c_char {
    guard(NGX_CONF_ERROR, f)
}

/// The arguments of the directive being parsed, the directive name first. They stay valid
/// for the whole directive handler, independently of later uses of `cf`.
pub fn args<'a>(cf: &ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: during directive handling cf->args is an array of ngx_str_t allocated from the
    // configuration pools, which outlive the handler.
    unsafe { &*core::ptr::from_ref((*cf.args).as_slice::<ngx_str_t>()) }
}

/// Configuration text as a String (configuration files are expected to be UTF-8).
pub fn conf_str(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An nginx string as bytes; empty for a null pointer.
pub fn bytes(s: &ngx_str_t) -> &[u8] {
    if s.data.is_null() || s.len == 0 {
        return &[];
    }
    // SAFETY: a non-null ngx_str_t points at len bytes.
    unsafe { core::slice::from_raw_parts(s.data, s.len) }
}
