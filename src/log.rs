//! Logging into nginx's error log, in nginx's words.
//!
//! Runtime errors read "... while <action>, <context>"; debug lines start with
//! "api_sessions:" and need an nginx built `--with-debug`.

use nginx_sys::ngx_log_t;

pub trait AsLogPtr {
    fn as_log_ptr(&self) -> *mut ngx_log_t;
}

impl AsLogPtr for *mut ngx_log_t {
    fn as_log_ptr(&self) -> *mut ngx_log_t {
        *self
    }
}

impl AsLogPtr for nginx_sys::ngx_http_request_t {
    fn as_log_ptr(&self) -> *mut ngx_log_t {
        // SAFETY: a request always has a connection with a log.
        unsafe { (*self.connection).log }
    }
}

impl AsLogPtr for nginx_sys::ngx_cycle_t {
    fn as_log_ptr(&self) -> *mut ngx_log_t {
        self.log
    }
}

impl<T: AsLogPtr> AsLogPtr for &T {
    fn as_log_ptr(&self) -> *mut ngx_log_t {
        T::as_log_ptr(self)
    }
}

impl<T: AsLogPtr> AsLogPtr for &mut T {
    fn as_log_ptr(&self) -> *mut ngx_log_t {
        T::as_log_ptr(self)
    }
}

#[inline(always)]
pub fn as_log_ptr(x: impl AsLogPtr) -> *mut ngx_log_t {
    x.as_log_ptr()
}

/// The cycle's log, for contexts without a request.
pub fn cycle_log() -> *mut ngx_log_t {
    // SAFETY: ngx_cycle is set before any module code runs.
    unsafe { (*nginx_sys::ngx_cycle).log }
}

macro_rules! log_at {
    ($level:expr, $log:expr, $($arg:tt)+) => {{
        ngx::ngx_log_error!($level, $crate::log::as_log_ptr(&$log), $($arg)+);
    }};
}

macro_rules! emerg {
    ($log:expr, $($arg:tt)+) => { log_at!(nginx_sys::NGX_LOG_EMERG, $log, $($arg)+) };
}

macro_rules! alert {
    ($log:expr, $($arg:tt)+) => { log_at!(nginx_sys::NGX_LOG_ALERT, $log, $($arg)+) };
}

macro_rules! error {
    ($log:expr, $($arg:tt)+) => { log_at!(nginx_sys::NGX_LOG_ERR, $log, $($arg)+) };
}

macro_rules! notice {
    ($log:expr, $($arg:tt)+) => { log_at!(nginx_sys::NGX_LOG_NOTICE, $log, $($arg)+) };
}

macro_rules! debug {
    ($log:expr, $($arg:tt)+) => {{
        ngx::ngx_log_debug!($crate::log::as_log_ptr(&$log), $($arg)+);
    }};
}
