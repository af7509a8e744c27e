//! The module's messages in nginx's error log.
//!
//! A [`Log`] says where a message goes and how it reads:
//!
//! * at run time (a request, the cycle, a timer) the message starts with `api_sessions:`, and
//!   nginx appends its own context to a request's lines ("while logging request, client: ...");
//!   errors the module words itself read "... while <action>";
//! * while the configuration is read, it is in nginx's words, without a prefix, and
//!   [`Log::directive`] has nginx add the file and line of the directive being parsed.
//!
//! Messages are formatted only when the log's level lets them through, and debug messages
//! only exist in a module built against an nginx configured `--with-debug`.
//!
//! ```ignore
//! log!(Log::cycle(), Alert, "cannot initialise zone \"{name}\"");
//! ```

use core::fmt;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

use nginx_sys::{ngx_conf_t, ngx_event_t, ngx_http_request_t, ngx_log_t, ngx_uint_t};

/// Severity, as nginx's `error_log` levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Emerg,
    Alert,
    Error,
    Warn,
    Notice,
    Info,
    /// Shown with `error_log ... debug` (or `debug_http`) by an nginx built `--with-debug`.
    Debug,
}

impl Level {
    fn ngx(self) -> ngx_uint_t {
        let level = match self {
            Level::Emerg => nginx_sys::NGX_LOG_EMERG,
            Level::Alert => nginx_sys::NGX_LOG_ALERT,
            Level::Error => nginx_sys::NGX_LOG_ERR,
            Level::Warn => nginx_sys::NGX_LOG_WARN,
            Level::Notice => nginx_sys::NGX_LOG_NOTICE,
            Level::Info => nginx_sys::NGX_LOG_INFO,
            Level::Debug => nginx_sys::NGX_LOG_DEBUG,
        };
        level as ngx_uint_t
    }
}

/// Where a message is written.
#[derive(Clone, Copy)]
pub struct Log(Sink);

#[derive(Clone, Copy)]
enum Sink {
    /// A run-time log: messages carry the module's prefix.
    Runtime(NonNull<ngx_log_t>),
    /// Configuration time, outside a directive: nginx's words as they are.
    Configuration(NonNull<ngx_log_t>),
    /// The directive being parsed: `ngx_conf_log_error` adds its file and line.
    Directive(NonNull<ngx_conf_t>),
}

const PREFIX: &str = "api_sessions: ";

impl Log {
    /// The log of a request's connection.
    pub fn request(r: &ngx_http_request_t) -> Log {
        // SAFETY: a request always has a connection, and the connection a log.
        let log = unsafe { (*r.connection).log };
        Log(Sink::Runtime(NonNull::new(log).expect("connection log")))
    }

    /// The current cycle's log, for what has no request.
    pub fn cycle() -> Log {
        // SAFETY: nginx sets ngx_cycle before it loads modules, and the cycle has a log.
        let log = unsafe { (*nginx_sys::ngx_cycle).log };
        Log(Sink::Runtime(NonNull::new(log).expect("cycle log")))
    }

    /// The log of a timer or another event.
    pub fn event(ev: &ngx_event_t) -> Log {
        NonNull::new(ev.log).map_or_else(Log::cycle, |log| Log(Sink::Runtime(log)))
    }

    /// Configuration time, for an error whose message says where it is itself.
    pub fn configuration(cf: &ngx_conf_t) -> Log {
        Log(Sink::Configuration(NonNull::new(cf.log).expect("configuration log")))
    }

    /// The directive being parsed.
    pub fn directive(cf: &mut ngx_conf_t) -> Log {
        Log(Sink::Directive(NonNull::from(cf)))
    }

    /// Writes `args` at `level` when the log lets that level through.
    pub fn write(&self, level: Level, args: fmt::Arguments<'_>) {
        let log = match self.0 {
            Sink::Runtime(log) | Sink::Configuration(log) => log,
            // SAFETY: the handle was made from a live configuration being parsed.
            Sink::Directive(cf) => match NonNull::new(unsafe { cf.as_ref() }.log) {
                Some(log) => log,
                None => return,
            },
        };
        // SAFETY: the handle was made from a live log.
        let threshold = unsafe { log.as_ref() }.log_level;
        let shown = match level {
            Level::Debug => {
                ngx::log::DEBUG && threshold & nginx_sys::NGX_LOG_DEBUG_HTTP as ngx_uint_t != 0
            }
            _ => level.ngx() <= threshold,
        };
        if !shown {
            return;
        }

        let mut buf = [MaybeUninit::<u8>::uninit(); ngx::log::LOG_BUFFER_SIZE];
        let text = match self.0 {
            Sink::Runtime(_) => ngx::log::write_fmt(&mut buf, format_args!("{PREFIX}{args}")),
            _ => ngx::log::write_fmt(&mut buf, args),
        };
        match self.0 {
            // SAFETY: a live configuration; "%*s" takes the length and the bytes.
            Sink::Directive(cf) => unsafe {
                nginx_sys::ngx_conf_log_error(
                    level.ngx(),
                    cf.as_ptr(),
                    0,
                    c"%*s".as_ptr(),
                    text.len(),
                    text.as_ptr(),
                );
            },
            // SAFETY: a live log; the text is formatted above.
            _ if level == Level::Debug => unsafe { ngx::log::log_debug(log.as_ptr(), 0, text) },
            // SAFETY: as above.
            _ => unsafe { ngx::log::log_error(level.ngx(), log.as_ptr(), 0, text) },
        }
    }
}

/// `log!(LOG, LEVEL, "format", args...)`: writes a message to `LOG`, a [`Log`], at `LEVEL`,
/// one of the [`Level`] names.
macro_rules! log {
    ($log:expr, $level:ident, $($fmt:tt)+) => {
        $crate::log::Log::write(&$log, $crate::log::Level::$level, format_args!($($fmt)+))
    };
}
