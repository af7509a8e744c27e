//! `api_sessions_export file=PATH | url=URL [batch=N] [flush=TIME] [queue=N]
//! [queue_memory=SIZE] [spool=DIR] [spool_max=SIZE] [header=NAME:VALUE]... [timeout=TIME]
//! [cpu=LIST];`

use core::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::time::Duration;

use api_sessions_core::export::{validate_url, CpuList, ExportSettings};
use nginx_sys::{ngx_command_t, ngx_conf_t, ngx_int_t, ngx_open_file_t, ngx_str_t, NGX_ERROR};
use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};

use super::{conf_error, MainConf, DUPLICATE};
use crate::util::{args, conf_str, guard_conf};

/// The default destination, relative to the prefix like `access_log`'s.
pub const DEFAULT_FILE: &str = "logs/api_sessions.ndjson";

pub enum Target {
    /// Until postconfiguration opens it: the configured path.
    FilePath(ngx_str_t),
    /// Opened by nginx, reopened on `nginx -s reopen`.
    File(*mut ngx_open_file_t),
    Url {
        url: String,
        headers: Vec<(String, String)>,
    },
}

pub struct ExportConf {
    pub target: Target,
    pub settings: ExportSettings,
}

impl ExportConf {
    pub fn default_file() -> ExportConf {
        let path = ngx_str_t { len: DEFAULT_FILE.len(), data: DEFAULT_FILE.as_ptr().cast_mut() };
        ExportConf { target: Target::FilePath(path), settings: ExportSettings::default() }
    }

    /// Opens the file target through nginx's list of open files, so that the master creates
    /// it and `nginx -s reopen` reopens it.
    pub fn open(&mut self, cf: &mut ngx_conf_t) -> Result<(), ()> {
        if let Target::FilePath(mut path) = self.target {
            // SAFETY: cf->cycle is valid during configuration; nginx copies the name.
            let file = unsafe { nginx_sys::ngx_conf_open_file(cf.cycle, &mut path) };
            if file.is_null() {
                return Err(());
            }
            // SAFETY: ngx_conf_open_file returned a valid entry of cycle->open_files.
            unsafe { (*file).flush = Some(crate::worker::file_reopened) };
            self.target = Target::File(file);
        }
        Ok(())
    }
}

pub(super) fn parse_time(value: &[u8]) -> Option<Duration> {
    let mut s = ngx_str_t { len: value.len(), data: value.as_ptr().cast_mut() };
    // SAFETY: s points at value for the call; 0 asks for milliseconds.
    let ms = unsafe { nginx_sys::ngx_parse_time(&mut s, 0) };
    (ms != NGX_ERROR as ngx_int_t && ms > 0).then(|| Duration::from_millis(ms as u64))
}

fn parse_size(value: &[u8]) -> Option<u64> {
    let mut s = ngx_str_t { len: value.len(), data: value.as_ptr().cast_mut() };
    // SAFETY: s points at value for the call.
    let size = unsafe { nginx_sys::ngx_parse_size(&mut s) };
    (size != NGX_ERROR as isize && size > 0).then_some(size as u64)
}

/// A disk size, which may be given in gigabytes (`ngx_parse_size` stops at megabytes).
fn parse_offset(value: &[u8]) -> Option<u64> {
    let mut s = ngx_str_t { len: value.len(), data: value.as_ptr().cast_mut() };
    // SAFETY: s points at value for the call.
    let size = unsafe { nginx_sys::ngx_parse_offset(&mut s) };
    (size > 0).then_some(size as u64)
}

fn parse_count(value: &[u8]) -> Option<usize> {
    std::str::from_utf8(value).ok()?.parse::<usize>().ok().filter(|n| *n > 0)
}

/// A `cpu=` list of CPUs this machine has.
fn parse_cpus(value: &[u8]) -> Result<CpuList, String> {
    let cpus = CpuList::parse(&conf_str(value)).map_err(str::to_owned)?;
    // SAFETY: sysconf has no preconditions.
    let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    match cpus.cpus().last() {
        Some(&last) if configured > 0 && last >= configured as usize => {
            Err(format!("no CPU {last} on this machine of {configured} CPUs"))
        }
        _ => Ok(cpus),
    }
}

/// `NAME:VALUE` with a token name and a value without control characters.
pub(super) fn parse_header(value: &[u8]) -> Option<(String, String)> {
    let colon = value.iter().position(|&b| b == b':')?;
    let (name, value) = (&value[..colon], &value[colon + 1..]);
    let token = |c: &u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.iter().all(token) || value.iter().any(u8::is_ascii_control) {
        return None;
    }
    Some((conf_str(name), conf_str(value).trim().to_string()))
}

/// Registers a directory for nginx to create at startup, owned by the worker user.
fn add_path(cf: &mut ngx_conf_t, full: ngx_str_t) -> Result<(), ()> {
    // SAFETY: zeroed allocation from the configuration pool.
    let path =
        unsafe { nginx_sys::ngx_pcalloc(cf.pool, core::mem::size_of::<nginx_sys::ngx_path_t>()) }
            .cast::<nginx_sys::ngx_path_t>();
    if path.is_null() {
        return Err(());
    }
    // SAFETY: path is a fresh, zeroed ngx_path_t; cf->conf_file is the file being parsed.
    unsafe {
        (*path).name = full;
        (*path).conf_file = (*cf.conf_file).file.name.data;
        (*path).line = (*cf.conf_file).line;
        let mut p = path;
        if nginx_sys::ngx_add_path(cf, &mut p) != 0 {
            return Err(());
        }
    }
    Ok(())
}

pub extern "C" fn cmd_export(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard_conf(|| {
        // SAFETY: nginx passes a valid cf and this module's main conf.
        let (cf, amcf) = unsafe { (&mut *cf, &mut *conf.cast::<MainConf>()) };
        if amcf.export.is_some() {
            return DUPLICATE;
        }
        let mut settings = ExportSettings::default();
        let mut file = None;
        let mut url = None;
        let mut headers = Vec::new();
        let mut spool = None;

        for arg in &args(cf)[1..] {
            let bytes = arg.as_bytes();
            let (name, value) = match bytes.iter().position(|&b| b == b'=') {
                Some(eq) => (&bytes[..eq], &bytes[eq + 1..]),
                None => (bytes, &b""[..]),
            };
            let ok = match name {
                b"file" if file.is_none() && url.is_none() && !value.is_empty() => {
                    file = Some(ngx_str_t { len: value.len(), data: value.as_ptr().cast_mut() });
                    true
                }
                b"url" if file.is_none() && url.is_none() => {
                    let text = conf_str(value);
                    if let Err(reason) = validate_url(&text) {
                        return conf_error(cf, format_args!("{reason} in \"{text}\""));
                    }
                    url = Some(text);
                    true
                }
                b"batch" => parse_count(value).map(|n| settings.batch = n).is_some(),
                b"queue" => parse_count(value).map(|n| settings.queue = n).is_some(),
                b"flush" => parse_time(value).map(|t| settings.flush = t).is_some(),
                b"timeout" => parse_time(value).map(|t| settings.timeout = t).is_some(),
                b"queue_memory" => {
                    parse_size(value).map(|s| settings.queue_memory = s as usize).is_some()
                }
                b"spool_max" => parse_offset(value).map(|s| settings.spool_max = s).is_some(),
                b"spool" if spool.is_none() && !value.is_empty() => {
                    spool = Some(ngx_str_t { len: value.len(), data: value.as_ptr().cast_mut() });
                    true
                }
                b"header" => parse_header(value).map(|h| headers.push(h)).is_some(),
                b"cpu" if settings.cpus.is_none() => match parse_cpus(value) {
                    Ok(cpus) => {
                        settings.cpus = Some(cpus);
                        true
                    }
                    Err(reason) => return conf_error(cf, format_args!("{reason} in \"{arg}\"")),
                },
                _ => false,
            };
            if !ok {
                return conf_error(cf, format_args!("invalid parameter \"{arg}\""));
            }
        }

        let target = match (file, url) {
            (Some(path), None) => Target::FilePath(path),
            (None, Some(url)) => Target::Url { url, headers: Vec::new() },
            _ => {
                return conf_error(
                    cf,
                    format_args!("\"api_sessions_export\" must have \"file\" or \"url\" parameter"),
                )
            }
        };
        let target = match target {
            Target::Url { url, .. } => Target::Url { url, headers },
            file if headers.is_empty() => file,
            _ => return conf_error(cf, format_args!("\"header\" requires \"url\"")),
        };
        if let Some(mut dir) = spool {
            if !matches!(target, Target::Url { .. }) {
                return conf_error(cf, format_args!("\"spool\" requires \"url\""));
            }
            // SAFETY: cf->cycle is valid; dir points into the configuration buffer.
            if unsafe { nginx_sys::ngx_conf_full_name(cf.cycle, &mut dir, 0) } != 0
                || add_path(cf, dir).is_err()
            {
                return NGX_CONF_ERROR;
            }
            settings.spool = Some(PathBuf::from(conf_str(dir.as_bytes())));
        }

        amcf.export = Some(ExportConf { target, settings });
        NGX_CONF_OK
    })
}
