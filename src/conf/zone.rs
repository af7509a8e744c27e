//! Shared memory: the session table of `api_sessions_zone` and the exporter counters.
//!
//! Both structures are carved out of the zone's slab pool once, when the zone is created,
//! and their root is kept in `shpool->data`. On reload nginx hands over a zone of the same
//! name and size untouched, and we attach to what is already there, so sessions and totals
//! carry on.

use core::ffi::{c_char, c_void};
use core::ptr::NonNull;

use api_sessions_core::counters::CounterBoard;
use api_sessions_core::session_table::{SessionTable, SplitPolicy};
use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_int_t, ngx_shm_zone_init_pt, ngx_shm_zone_t, ngx_slab_pool_t,
    ngx_str_t, NGX_ERROR, NGX_OK,
};
use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};

use super::{conf_error, MainConf, DUPLICATE};
use crate::log::Log;
use crate::util::{args, guard_conf};

/// `api_sessions_zone`: where the table lives and how it splits sessions.
pub struct SessionZone {
    pub policy: SplitPolicy,
    /// Attached when nginx initialises the zone.
    pub table: Option<SessionTable>,
}

/// The counters of `api_sessions_status`, in a zone of their own.
#[derive(Default)]
pub struct CountersZone {
    pub board: Option<CounterBoard>,
}

/// Name of the counters zone; an unlikely name for a user zone.
const COUNTERS_ZONE: &str = "ngx_http_api_sessions_counters";

fn tag() -> *mut c_void {
    core::ptr::addr_of!(crate::ngx_http_api_sessions_module).cast_mut().cast()
}

fn pagesize() -> usize {
    // SAFETY: set by nginx at startup, read-only afterwards.
    unsafe { nginx_sys::ngx_pagesize }
}

/// Allocates `want` bytes (or, with `want` 0, all that is free) from a fresh zone's pool and
/// makes it the zone's root, or returns the root of a zone nginx kept from the last cycle.
///
/// # Safety
///
/// `shm_zone` is the zone passed to an init callback.
pub(super) unsafe fn zone_root(
    shm_zone: &ngx_shm_zone_t,
    want: usize,
) -> Option<(*mut u8, usize, bool)> {
    // The pool header is shared memory: on reload the previous cycle's workers still run, so
    // it is read and written through the pointer, never borrowed whole.
    let shpool = shm_zone.shm.addr.cast::<ngx_slab_pool_t>();
    // SAFETY: nginx initialised the slab pool at the start of the zone.
    let data = unsafe { (*shpool).data };
    if !data.is_null() {
        return Some((data.cast(), 0, true));
    }
    // SAFETY: as above.
    let free_pages = unsafe { (*shpool).pfree };
    let size = if want == 0 { free_pages * pagesize() } else { want };
    // SAFETY: a fresh zone, which only the master, single-threaded, sees yet.
    let root = unsafe { nginx_sys::ngx_slab_alloc_locked(shpool, size) };
    if root.is_null() {
        return None;
    }
    // SAFETY: as above.
    unsafe { (*shpool).data = root };
    Some((root.cast(), size, false))
}

/// The value of a `zone=NAME:SIZE` parameter: the name, pointing into the argument, and the
/// size, at least eight pages. The error is the directive's `[emerg]`.
pub(super) fn parse_zone(
    cf: &mut ngx_conf_t,
    arg: &ngx_str_t,
    value: &[u8],
) -> Result<(ngx_str_t, usize), *mut c_char> {
    let colon = value.iter().rposition(|&b| b == b':');
    let parsed = colon.and_then(|c| {
        let mut s =
            ngx_str_t { len: value.len() - c - 1, data: value[c + 1..].as_ptr().cast_mut() };
        // SAFETY: s points into the argument.
        let n = unsafe { nginx_sys::ngx_parse_size(&mut s) };
        (c > 0 && n != NGX_ERROR as isize).then_some((c, n as usize))
    });
    let Some((c, size)) = parsed else {
        return Err(conf_error(cf, format_args!("invalid zone size \"{arg}\"")));
    };
    if size < 8 * pagesize() {
        let name = String::from_utf8_lossy(&value[..c]);
        return Err(conf_error(cf, format_args!("zone \"{name}\" is too small")));
    }
    Ok((ngx_str_t { len: c, data: value.as_ptr().cast_mut() }, size))
}

/// Registers the zone `name` of `size` bytes for this module, with `init` to set it up and
/// `data` for it to find, refusing a zone that another directive of this module claimed.
///
/// # Safety
///
/// `data` must live for the cycle, and be what `init` expects.
pub(super) unsafe fn add_zone(
    cf: &mut ngx_conf_t,
    mut name: ngx_str_t,
    size: usize,
    init: ngx_shm_zone_init_pt,
    data: *mut c_void,
) -> Result<(), *mut c_char> {
    // SAFETY: cf is valid during configuration; nginx copies the name.
    let shm = unsafe { nginx_sys::ngx_shared_memory_add(cf, &mut name, size, tag()) };
    let Some(shm) = NonNull::new(shm) else {
        return Err(NGX_CONF_ERROR);
    };
    // SAFETY: a zone nginx just registered; data non-null means another directive of this
    // module claimed the same zone already.
    if !unsafe { (*shm.as_ptr()).data }.is_null() {
        return Err(conf_error(cf, format_args!("duplicate zone \"{name}\"")));
    }
    // SAFETY: the zone lives in the cycle; the caller vouches for data.
    unsafe {
        (*shm.as_ptr()).init = init;
        (*shm.as_ptr()).data = data;
    }
    Ok(())
}

extern "C" fn init_session_zone(shm_zone: *mut ngx_shm_zone_t, _data: *mut c_void) -> ngx_int_t {
    crate::util::guard(NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx passes the zone, which lives in the cycle.
        let shm_zone = unsafe { &*shm_zone };
        // SAFETY: its data is the SessionZone cmd_zone set, in the main conf.
        let zone = unsafe { &mut *shm_zone.data.cast::<SessionZone>() };
        // SAFETY: called from the zone's init callback.
        let table = match unsafe { zone_root(shm_zone, 0) } {
            // SAFETY: the root was formatted by an earlier cycle of this module.
            Some((root, _, true)) => unsafe { SessionTable::attach(root) },
            // SAFETY: a fresh allocation of `len` page-aligned bytes.
            Some((root, len, false)) => unsafe { SessionTable::init(root, len) },
            None => None,
        };
        let Some(table) = table else {
            log!(Log::cycle(), Alert, "cannot initialise zone \"{}\"", shm_zone.shm.name);
            return NGX_ERROR as ngx_int_t;
        };
        zone.table = Some(table);
        NGX_OK as ngx_int_t
    })
}

extern "C" fn init_counters_zone(shm_zone: *mut ngx_shm_zone_t, _data: *mut c_void) -> ngx_int_t {
    crate::util::guard(NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx passes the zone, which lives in the cycle.
        let shm_zone = unsafe { &*shm_zone };
        // SAFETY: its data is the CountersZone of the main conf.
        let zone = unsafe { &mut *shm_zone.data.cast::<CountersZone>() };
        // SAFETY: called from the zone's init callback.
        let board = match unsafe { zone_root(shm_zone, CounterBoard::SIZE) } {
            // SAFETY: the root was formatted by an earlier cycle of this module.
            Some((root, _, true)) => unsafe { CounterBoard::attach(root) },
            // SAFETY: a fresh allocation of CounterBoard::SIZE bytes.
            Some((root, _, false)) => Some(unsafe { CounterBoard::init(root) }),
            None => None,
        };
        let Some(board) = board else {
            log!(Log::cycle(), Alert, "cannot initialise the counters zone");
            return NGX_ERROR as ngx_int_t;
        };
        zone.board = Some(board);
        NGX_OK as ngx_int_t
    })
}

/// Adds the counters zone; called from postconfiguration when the module is in use.
pub fn add_counters_zone(cf: &mut ngx_conf_t, amcf: &mut MainConf) -> Result<(), ()> {
    let mut name = ngx_str_t { len: COUNTERS_ZONE.len(), data: COUNTERS_ZONE.as_ptr().cast_mut() };
    // The board plus room for the slab pool's own bookkeeping.
    let size = CounterBoard::SIZE + 16 * pagesize();
    // SAFETY: cf is valid during configuration; nginx copies the name.
    let shm = unsafe { nginx_sys::ngx_shared_memory_add(cf, &mut name, size, tag()) };
    let shm = NonNull::new(shm).ok_or(())?;
    // SAFETY: a zone nginx just registered for us.
    unsafe {
        (*shm.as_ptr()).init = Some(init_counters_zone);
        (*shm.as_ptr()).data = core::ptr::from_mut(&mut amcf.counters).cast();
    }
    Ok(())
}

/// `api_sessions_zone zone=NAME:SIZE [idle=TIME] [max=TIME];`
pub extern "C" fn cmd_zone(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard_conf(|| {
        // SAFETY: nginx passes a valid cf, the command and this module's main conf.
        let (cf, amcf) = unsafe { (&mut *cf, &mut *conf.cast::<MainConf>()) };
        if amcf.zone.is_some() {
            return DUPLICATE;
        }
        let mut name = None;
        let mut size = 0usize;
        let mut policy = SplitPolicy::default();

        for arg in &args(cf)[1..] {
            let bytes = arg.as_bytes();
            if let Some(value) = bytes.strip_prefix(b"zone=") {
                match parse_zone(cf, arg, value) {
                    Ok((n, s)) => (name, size) = (Some(n), s),
                    Err(e) => return e,
                }
            } else if let Some(value) = bytes.strip_prefix(b"idle=") {
                match parse_ms(value) {
                    Some(ms) => policy.idle_ms = ms,
                    None => return conf_error(cf, format_args!("invalid parameter \"{arg}\"")),
                }
            } else if let Some(value) = bytes.strip_prefix(b"max=") {
                match parse_ms(value) {
                    Some(ms) => policy.max_ms = ms,
                    None => return conf_error(cf, format_args!("invalid parameter \"{arg}\"")),
                }
            } else {
                return conf_error(cf, format_args!("invalid parameter \"{arg}\""));
            }
        }

        let Some(name) = name else {
            // SAFETY: nginx passes the command being parsed.
            let directive = unsafe { (*cmd).name };
            return conf_error(cf, format_args!("\"{directive}\" must have \"zone\" parameter"));
        };

        let zone = amcf.zone.insert(SessionZone { policy, table: None });
        // SAFETY: the SessionZone lives in the main conf for the life of the cycle.
        let added = unsafe {
            add_zone(cf, name, size, Some(init_session_zone), core::ptr::from_mut(zone).cast())
        };
        if let Err(e) = added {
            return e;
        }
        NGX_CONF_OK
    })
}

fn parse_ms(value: &[u8]) -> Option<i64> {
    let mut s = ngx_str_t { len: value.len(), data: value.as_ptr().cast_mut() };
    // SAFETY: s points at value; 0 asks for milliseconds.
    let ms = unsafe { nginx_sys::ngx_parse_time(&mut s, 0) };
    (ms != NGX_ERROR as ngx_int_t && ms > 0).then_some(ms as i64)
}
