//! `api_sessions_denylist zone=NAME:SIZE url=URL | file=PATH [interval=TIME]
//! [header=NAME:VALUE]...;`: the shared zone the list lives in and where it comes from.
//!
//! The list is carved out of the zone once, when the zone is created, and its root kept in
//! `shpool->data`; on reload nginx hands the zone over untouched and the new cycle attaches
//! to the list already there, so blocking goes on with the last good list. The fetch itself
//! runs on a thread of each worker ([`api_sessions_core::denylist::fetch`]), never on the
//! event loop.

use core::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::time::Duration;

use api_sessions_core::denylist::fetch::Source;
use api_sessions_core::denylist::Denylist;
use api_sessions_core::export::validate_url;
use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_int_t, ngx_shm_zone_t, ngx_str_t, NGX_ERROR, NGX_OK,
};
use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};

use super::export::{parse_header, parse_time};
use super::zone::{add_zone, parse_zone, zone_root};
use super::{conf_error, MainConf, DUPLICATE};
use crate::log::Log;
use crate::util::{args, conf_str, guard_conf};

const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

pub struct DenylistZone {
    pub source: Source,
    pub interval: Duration,
    /// Attached when nginx initialises the zone.
    pub list: Option<Denylist>,
    /// This configuration's turn to fetch, taken when the zone is initialised.
    pub generation: u64,
}

extern "C" fn init_zone(shm_zone: *mut ngx_shm_zone_t, _data: *mut c_void) -> ngx_int_t {
    crate::util::guard(NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx passes the zone, which lives in the cycle.
        let shm_zone = unsafe { &*shm_zone };
        // SAFETY: its data is the DenylistZone cmd_denylist set, in the main conf.
        let zone = unsafe { &mut *shm_zone.data.cast::<DenylistZone>() };
        // SAFETY: called from the zone's init callback.
        let list = match unsafe { zone_root(shm_zone, 0) } {
            // SAFETY: the root was formatted by an earlier cycle of this module.
            Some((root, _, true)) => unsafe { Denylist::attach(root) },
            // SAFETY: a fresh allocation of `len` page-aligned bytes.
            Some((root, len, false)) => unsafe { Denylist::init(root, len) },
            None => None,
        };
        let Some(list) = list else {
            log!(Log::cycle(), Alert, "cannot initialise zone \"{}\"", shm_zone.shm.name);
            return NGX_ERROR as ngx_int_t;
        };
        zone.generation = list.new_generation();
        zone.list = Some(list);
        NGX_OK as ngx_int_t
    })
}

pub extern "C" fn cmd_denylist(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard_conf(|| {
        // SAFETY: nginx passes a valid cf, the command and this module's main conf.
        let (cf, amcf) = unsafe { (&mut *cf, &mut *conf.cast::<MainConf>()) };
        // SAFETY: nginx passes the command being parsed.
        let directive = unsafe { (*cmd).name };
        if amcf.denylist.is_some() {
            return DUPLICATE;
        }
        let mut zone: Option<(ngx_str_t, usize)> = None;
        let mut url = None;
        let mut file = None;
        let mut interval = DEFAULT_INTERVAL;
        let mut headers = Vec::new();

        for arg in &args(cf)[1..] {
            let bytes = arg.as_bytes();
            let (name, value) = match bytes.iter().position(|&b| b == b'=') {
                Some(eq) => (&bytes[..eq], &bytes[eq + 1..]),
                None => (bytes, &b""[..]),
            };
            let ok = match name {
                b"zone" if zone.is_none() => match parse_zone(cf, arg, value) {
                    Ok(parsed) => {
                        zone = Some(parsed);
                        true
                    }
                    Err(e) => return e,
                },
                b"url" if url.is_none() && file.is_none() => {
                    let text = conf_str(value);
                    if let Err(reason) = validate_url(&text) {
                        return conf_error(cf, format_args!("{reason} in \"{text}\""));
                    }
                    url = Some(text);
                    true
                }
                b"file" if url.is_none() && file.is_none() && !value.is_empty() => {
                    let mut path = ngx_str_t { len: value.len(), data: value.as_ptr().cast_mut() };
                    // Relative to the configuration prefix, as api_sessions_secret is.
                    // SAFETY: cf->cycle is valid; path points into the configuration buffer.
                    if unsafe { nginx_sys::ngx_conf_full_name(cf.cycle, &mut path, 1) } != 0 {
                        return NGX_CONF_ERROR;
                    }
                    file = Some(PathBuf::from(conf_str(path.as_bytes())));
                    true
                }
                b"interval" => parse_time(value).map(|t| interval = t).is_some(),
                b"header" => parse_header(value).map(|h| headers.push(h)).is_some(),
                _ => false,
            };
            if !ok {
                return conf_error(cf, format_args!("invalid parameter \"{arg}\""));
            }
        }

        let Some((name, size)) = zone else {
            return conf_error(cf, format_args!("\"{directive}\" must have \"zone\" parameter"));
        };
        let source = match (url, file) {
            (Some(url), None) => Source::Url { url, headers },
            (None, Some(path)) if headers.is_empty() => Source::File(path),
            (None, Some(_)) => return conf_error(cf, format_args!("\"header\" requires \"url\"")),
            _ => {
                return conf_error(
                    cf,
                    format_args!("\"{directive}\" must have \"url\" or \"file\" parameter"),
                )
            }
        };

        let zone =
            amcf.denylist.insert(DenylistZone { source, interval, list: None, generation: 0 });
        // SAFETY: the DenylistZone lives in the main conf for the life of the cycle.
        let added =
            unsafe { add_zone(cf, name, size, Some(init_zone), core::ptr::from_mut(zone).cast()) };
        if let Err(e) = added {
            return e;
        }
        NGX_CONF_OK
    })
}
