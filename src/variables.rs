//! `$api_session_id`, `$api_session_key` and `$api_session_blocked`.
//!
//! They resolve the key from what is known when they are evaluated: request-side keys at the
//! access phase (and the request body once it has been read), the response body as well at
//! the log phase, where it is the body the record is built from. Before the log phase the
//! response body is left out, even in part: a value cut off mid-body would be wrong. The result
//! is computed once before the log phase and once at it, and is the record's from then on.
//!
//! nginx caches a variable's value for the rest of the request; these are registered
//! uncacheable, so whatever reads them at the log phase (`access_log`) gets them afresh.

use api_sessions_core::assemble::{
    body_values, choose_key, no_key_hash, BodyDocument, NO_KEY_LABEL,
};
use api_sessions_core::body::Extent;
use api_sessions_core::keys::BuiltinScanner;
use api_sessions_core::profile::Source;
use nginx_sys::{
    ngx_conf_t, ngx_http_phases_NGX_HTTP_LOG_PHASE as NGX_HTTP_LOG_PHASE, ngx_http_request_t,
    ngx_http_variable_t, ngx_int_t, ngx_uint_t, ngx_variable_value_t, NGX_HTTP_VAR_NOCACHEABLE,
};
use ngx::core::Status;
use ngx::ngx_string;

use crate::access::{add_phase_handler, Position};
use crate::conf::MainConf;
use crate::request::Request;
use crate::util::guard;

/// A request's session as the variables see it.
pub struct SessionVars {
    id: String,
    key: String,
    /// Computed at the log phase, with the response body.
    at_log_phase: bool,
}

const ID: usize = 0;
const KEY: usize = 1;
const BLOCKED: usize = 2;

pub fn register(cf: &mut ngx_conf_t) -> Status {
    let mut vars = [
        (ngx_string!("api_session_id"), ID),
        (ngx_string!("api_session_key"), KEY),
        (ngx_string!("api_session_blocked"), BLOCKED),
    ];
    for (name, data) in &mut vars {
        // SAFETY: cf is valid in preconfiguration; nginx copies the name.
        let var: *mut ngx_http_variable_t = unsafe {
            nginx_sys::ngx_http_add_variable(cf, name, NGX_HTTP_VAR_NOCACHEABLE as ngx_uint_t)
        };
        // SAFETY: null or the variable nginx just added.
        let Some(var) = (unsafe { var.as_mut() }) else { return Status::NGX_ERROR };
        var.get_handler = Some(get_variable);
        var.data = *data;
    }
    Status::NGX_OK
}

/// Looks up what the module needs from other modules' variables, and marks the start of the
/// log phase for the variables.
pub fn postconfiguration(cf: &mut ngx_conf_t, amcf: &mut MainConf) -> Result<(), Status> {
    let mut name = ngx_string!("request_id");
    // SAFETY: cf is valid in postconfiguration.
    let index = unsafe { nginx_sys::ngx_http_get_variable_index(cf, &mut name) };
    if index < 0 {
        return Err(Status::NGX_ERROR);
    }
    amcf.request_id_index = index;
    // First in the phase, before the log module writes `access_log` lines.
    add_phase_handler(cf, NGX_HTTP_LOG_PHASE, Some(log_phase_started), Position::First)
}

/// From here on the response body is complete: the variables may read it.
extern "C" fn log_phase_started(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(Status::NGX_OK.into(), || {
        // SAFETY: nginx passes a valid request, used only through this view.
        let mut req = unsafe { Request::from_raw(r) };
        if let Some(ctx) = req.existing_ctx() {
            ctx.log_phase = true;
        }
        Status::NGX_OK.into()
    })
}

extern "C" fn get_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    data: usize,
) -> ngx_int_t {
    guard(Status::NGX_ERROR.into(), || {
        // SAFETY: nginx passes a valid request, used only through this view, and the value
        // to fill in.
        let (mut req, v) = unsafe { (Request::from_raw(r), &mut *v) };
        if data == BLOCKED {
            // What the access phase decided; "" when it did not find the key (or did not look).
            let blocked = req.existing_ctx().and_then(|ctx| ctx.blocked);
            let text = blocked.map_or("", |b| b.as_str());
            v.set_valid(1);
            v.set_no_cacheable(1);
            v.set_not_found(0);
            v.set_len(text.len() as u32);
            // A static string.
            v.data = text.as_ptr().cast_mut();
            return Status::NGX_OK.into();
        }
        let Some(vars) = session(&mut req) else {
            v.set_not_found(1);
            return Status::NGX_OK.into();
        };
        let text = if data == ID { &vars.id } else { &vars.key };
        v.set_valid(1);
        v.set_no_cacheable(1);
        v.set_not_found(0);
        v.set_len(text.len() as u32);
        // The string lives in the request context, freed with the request pool; it is only
        // replaced at the log phase, which evaluates the variable again.
        v.data = text.as_ptr().cast_mut();
        Status::NGX_OK.into()
    })
}

fn session<'v>(req: &'v mut Request<'_>) -> Option<&'v SessionVars> {
    let lcf = req.loc_conf()?;
    let profile = lcf.profile.as_ref()?;
    let amcf = req.main_conf()?;
    let ctx = req.ctx()?;
    let log_phase = ctx.log_phase;
    if ctx.session.as_ref().is_some_and(|s| s.at_log_phase || !log_phase) {
        return req.existing_ctx()?.session.as_ref();
    }

    let values: Vec<Option<&[u8]>> = lcf
        .keys()
        .iter()
        .map(|k| k.value.map(|source| req.source_value(source)).filter(|v| !v.is_empty()))
        .collect();
    let wants_request_body =
        profile.keys.iter().any(|k| matches!(k.source, Source::RequestBody(_)));
    let request_body =
        if wants_request_body { req.body(profile.body_limit, Vec::new()) } else { None };
    let content_type = req.request_content_type();
    let request =
        request_body.as_ref().map(|b| BodyDocument::new(content_type, &b.bytes, b.extent));
    let response_type = req.response_content_type();
    let args = req.args();
    let builtin = profile.builtin_keys.then(|| {
        let mut scanner = BuiltinScanner::new();
        for (name, value) in req.headers() {
            scanner.header(name, value);
        }
        scanner.finish(req.ip(), req.user_agent())
    });
    let builtin = builtin.flatten();
    let builtin = builtin.as_ref().map(|b| (b.entry, &b.value[..]));
    let secret = amcf.secret();
    let start = req.start();

    let ctx = req.existing_ctx()?;
    let response = match (&ctx.response, log_phase) {
        (Some(resp), true) => {
            let extent = Extent::cut_if(resp.truncated || resp.decided);
            Some(BodyDocument::new(response_type, &resp.bytes, extent))
        }
        _ => None,
    };
    let bodies = body_values(profile, request.as_ref(), args, response.as_ref());
    let key = choose_key(profile, |i| values[i], |slot| bodies[slot].as_deref(), builtin);
    let (label, id) = match key {
        Some(key) => {
            let (space, value) = (key.space.as_bytes(), key.value);
            let hash = secret.key_hash(space, value);
            let session_start = match &amcf.zone {
                Some(zone) => match &zone.table {
                    Some(table) => table.peek(&secret.zone_key(space, value), start, zone.policy),
                    None => start,
                },
                None => start.day_start(),
            };
            (key.label, secret.session_id(&hash, session_start))
        }
        None => {
            let hash = no_key_hash(secret, req.variable(amcf.request_id_index));
            (NO_KEY_LABEL, secret.session_id(&hash, start))
        }
    };
    let vars = SessionVars { id: id.to_hex(), key: label.to_string(), at_log_phase: log_phase };
    let ctx = req.existing_ctx()?;
    ctx.session = Some(vars);
    ctx.session.as_ref()
}
