//! Log phase: capture the request and hand it to the exporter.
//!
//! Status, timing and sizes are final here. Only copies happen on the event loop: the
//! values of variable keys (up to the first one that has a value) and parameters, the
//! built-in key when no variable key had one, the request body up to the limit, the
//! response body collected by the filter (moved, not copied) and, for attacks, the request
//! line and headers and the values of every variable key, which the content must hide. The
//! exporter thread does the rest.

use api_sessions_core::assemble::early_zone_key;
use api_sessions_core::body::Extent;
use api_sessions_core::capture::{Body, CapturedAttack};
use api_sessions_core::keys::BuiltinScanner;
use nginx_sys::{
    ngx_conf_t, ngx_http_phases_NGX_HTTP_LOG_PHASE as NGX_HTTP_LOG_PHASE, ngx_http_request_t,
    ngx_int_t,
};
use ngx::core::Status;

use crate::access::{add_phase_handler, Position};
use crate::request::Request;
use crate::util::guard;

pub fn postconfiguration(cf: &mut ngx_conf_t) -> Result<(), Status> {
    add_phase_handler(cf, NGX_HTTP_LOG_PHASE, Some(log_handler), Position::Last)
}

extern "C" fn log_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    let captured = guard(false, || {
        // SAFETY: nginx passes a valid request.
        capture(unsafe { Request::from_raw(r) });
        true
    });
    if !captured {
        // A record that could not be built still takes its sequence number and is counted
        // as dropped, so the loss shows at the receiver and in the counters.
        // SAFETY: nginx passes a valid request.
        let req = unsafe { Request::from_raw(r) };
        if let Some(worker) = req.main_conf().and_then(|amcf| amcf.worker.as_ref()) {
            if req.loc_conf().is_some_and(|lcf| lcf.profile.is_some()) && req.is_main() {
                worker.lost();
            }
        }
    }
    Status::NGX_OK.into()
}

fn now_us() -> i64 {
    let since =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    since.as_micros() as i64
}

fn capture(mut req: Request<'_>) {
    if !req.is_main() {
        return;
    }
    let Some(lcf) = req.loc_conf() else { return };
    let Some(profile) = lcf.profile.as_ref() else { return };
    let Some(amcf) = req.main_conf() else { return };
    let Some(worker) = amcf.worker.as_ref() else { return };

    let mut c = worker.capture(profile);
    let start = req.start();
    c.ts = start;
    c.duration_us = (now_us() - start.0 * 1000).max(0) as u64;
    c.status = req.status();
    (c.request_bytes, c.response_bytes) = req.sizes();
    c.request_id = c.push(req.request_id(amcf.request_id_index, &mut worker.rng()));
    c.server = c.push(req.server());
    c.method = c.push(req.method());
    c.path = c.push(req.path());
    c.ip = c.push(req.ip());
    c.user_agent = req.user_agent().map(|ua| c.push(ua));
    c.args = c.push(req.args());
    c.blocked = req.existing_ctx().and_then(|ctx| ctx.blocked);

    // Variable keys up to the first with a value: later keys cannot win.
    let mut hit = None;
    for (i, key) in lcf.keys().iter().enumerate() {
        if let Some(source) = key.value {
            let value = req.source_value(source);
            c.set_key_value(i, value);
            if !value.is_empty() {
                hit = Some((i, value));
                break;
            }
        }
    }
    let mut builtin = None;
    if hit.is_none() && profile.builtin_keys {
        let mut scanner = BuiltinScanner::new();
        for (name, value) in req.headers() {
            scanner.header(name, value);
        }
        builtin = scanner.finish(req.ip(), req.user_agent());
        if let Some(key) = &builtin {
            let span = c.push(&key.value);
            c.builtin = Some((key.entry, span));
        }
    }
    if let Some(zone) = &amcf.zone {
        let builtin = builtin.as_ref().map(|b| (b.entry, &b.value[..]));
        let secret = amcf.secret();
        if let (Some(table), Some(key)) =
            (&zone.table, early_zone_key(profile, secret, hit, builtin))
        {
            c.session_start = Some(table.touch(&key, c.ts, zone.policy));
        }
    }
    for (i, param) in lcf.params().iter().enumerate() {
        if let Some(source) = param.value {
            let value = req.source_value(source);
            c.set_param_value(i, value);
        }
    }

    if profile.needs_request_body() {
        let buffer = worker.body_buffer(0);
        c.request_body = req.body(profile.body_limit, buffer).map(|mut body| {
            body.content_type = c.push(req.request_content_type());
            body
        });
    }
    if let Some(response) = req.existing_ctx().and_then(|ctx| ctx.response.take()) {
        let content_type = c.push(req.response_content_type());
        c.response_body = Some(Body {
            bytes: response.bytes,
            truncated: response.truncated,
            extent: Extent::cut_if(response.truncated || response.decided),
            content_type,
        });
    }

    if let Some(cv) = lcf.attack() {
        let kind = req.complex_value(core::ptr::from_ref(cv).cast_mut());
        if !kind.is_empty() && kind != b"0" {
            let kind = c.push(kind);
            let line = c.push(req.request_line());
            let headers = req.headers().map(|(n, v)| (c.push(n), c.push(v))).collect();
            c.attack = Some(CapturedAttack { kind, line, headers });
            // The content of an attack hides every key's value, not only the one that won.
            if let Some((first, _)) = hit {
                for (i, key) in lcf.keys().iter().enumerate().skip(first + 1) {
                    if let Some(source) = key.value {
                        c.set_key_value(i, req.source_value(source));
                    }
                }
            }
        }
    }

    worker.submit(req.log(), c);
}
