//! `api_sessions_status`: exporter and zone counters, as JSON or Prometheus text (the documents
//! are built by `api_sessions_core::counters::status`).
//!
//! The counters live in shared memory, so whichever worker answers reports every worker,
//! and the totals include workers that have exited (reloads).

use core::ffi::{c_char, c_void};

use api_sessions_core::counters::status;
use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_http_request_t, ngx_int_t, ngx_str_t, NGX_HTTP_GET,
    NGX_HTTP_HEAD, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_OK,
};
use ngx::core::{Status, NGX_CONF_OK};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};

use crate::conf::MainConf;
use crate::util::{guard, guard_conf};

pub extern "C" fn cmd_status(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    guard_conf(|| {
        // SAFETY: nginx passes a valid cf.
        let cf = unsafe { &mut *cf };
        let clcf = NgxHttpCoreModule::location_conf_mut(cf).expect("core location conf");
        clcf.handler = Some(status_handler);
        crate::Module::main_conf_mut(cf).expect("main conf").active = true;
        NGX_CONF_OK
    })
}

fn prometheus_requested(r: &mut ngx_http_request_t) -> bool {
    let mut value = ngx_str_t::default();
    let name = b"format";
    // SAFETY: ngx_http_arg only reads the name and the request's args.
    let rc =
        unsafe { nginx_sys::ngx_http_arg(r, name.as_ptr().cast_mut(), name.len(), &mut value) };
    rc == 0 && crate::util::bytes(&value) == b"prometheus"
}

extern "C" fn status_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: nginx passes a valid request.
        let r = unsafe { &mut *r };
        if r.method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as usize == 0 {
            return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
        }
        // SAFETY: a valid request in its content phase.
        let rc = unsafe { nginx_sys::ngx_http_discard_request_body(r) };
        if rc != 0 {
            return rc;
        }
        let Some(amcf): Option<&MainConf> = crate::Module::main_conf(&*r) else {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        let Some(board) = amcf.counters.board.as_ref() else {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        let snapshot = board.snapshot();
        let zone = amcf.zone.as_ref().and_then(|z| z.table.as_ref()).map(|t| t.stats());
        let denylist = amcf.denylist.as_ref().and_then(|d| d.list.as_ref()).map(|l| l.stats());
        let (body, content_type) = if prometheus_requested(r) {
            (status::prometheus(&snapshot, zone, denylist), "text/plain; version=0.0.4")
        } else {
            (status::json(&snapshot, zone, denylist), "application/json")
        };
        send(r, content_type, body.as_bytes())
    })
}

fn send(r: &mut ngx_http_request_t, content_type: &'static str, body: &[u8]) -> ngx_int_t {
    r.headers_out.status = NGX_HTTP_OK as usize;
    r.headers_out.content_length_n = body.len() as i64;
    r.headers_out.content_type =
        ngx_str_t { len: content_type.len(), data: content_type.as_ptr().cast_mut() };
    r.headers_out.content_type_len = content_type.len();
    // SAFETY: a valid request; headers are set.
    let rc = unsafe { nginx_sys::ngx_http_send_header(r) };
    if rc == Status::NGX_ERROR.0 || rc > Status::NGX_OK.0 || r.header_only() != 0 {
        return rc;
    }
    // SAFETY: a buffer from the request pool, filled below.
    let buf = unsafe { nginx_sys::ngx_create_temp_buf(r.pool, body.len().max(1)) };
    // SAFETY: null or a fresh buffer of the requested size.
    let Some(b) = (unsafe { buf.as_mut() }) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    // SAFETY: the buffer has room for the body.
    unsafe {
        core::ptr::copy_nonoverlapping(body.as_ptr(), b.pos, body.len());
        b.last = b.pos.add(body.len());
    }
    b.set_last_buf(1);
    b.set_last_in_chain(1);
    let mut out = nginx_sys::ngx_chain_t { buf, next: core::ptr::null_mut() };
    // SAFETY: the chain lives until the filter chain returns; nginx copies what it keeps.
    unsafe { nginx_sys::ngx_http_output_filter(r, &mut out) }
}
