//! Access phase: read the request body when a `request_body:` source or an attack needs it,
//! then let `api_sessions_block` decide ([`crate::block`]).
//!
//! The body is read the way `ngx_http_mirror_module` does: ask nginx to read it, suspend the
//! phases, and resume them from the body handler. Reading it here, before the content
//! handler, means the proxy module later finds it already buffered. Only main requests with
//! a body are affected, and only in locations that need it.

use nginx_sys::{
    ngx_array_push, ngx_conf_t, ngx_http_handler_pt, ngx_http_phases,
    ngx_http_phases_NGX_HTTP_ACCESS_PHASE as NGX_HTTP_ACCESS_PHASE, ngx_http_request_t, ngx_int_t,
    NGX_HTTP_SPECIAL_RESPONSE,
};
use ngx::core::Status;
use ngx::http::{HttpModuleMainConf, NgxHttpCoreModule};

use crate::request::Request;
use crate::util::guard;

/// Where a phase handler goes in its phase's array, relative to the handlers of the modules
/// set up before this one. nginx runs the log phase's array in order and the other phases'
/// from the end.
pub enum Position {
    Last,
    First,
}

/// Adds `handler` to a phase; phase handlers are added in postconfiguration.
pub fn add_phase_handler(
    cf: &mut ngx_conf_t,
    phase: ngx_http_phases,
    handler: ngx_http_handler_pt,
    position: Position,
) -> Result<(), Status> {
    let cmcf = NgxHttpCoreModule::main_conf_mut(cf).ok_or(Status::NGX_ERROR)?;
    let handlers = &mut cmcf.phases[phase as usize].handlers;
    // SAFETY: the phase's handler array is an ngx_array_t of ngx_http_handler_pt.
    let slot = unsafe { ngx_array_push(handlers) }.cast::<ngx_http_handler_pt>();
    if slot.is_null() {
        return Err(Status::NGX_ERROR);
    }
    // SAFETY: the array's elements, the fresh slot included (its last one).
    let all = unsafe {
        core::slice::from_raw_parts_mut(handlers.elts.cast::<ngx_http_handler_pt>(), handlers.nelts)
    };
    match position {
        Position::Last => all[all.len() - 1] = handler,
        Position::First => {
            all.rotate_right(1);
            all[0] = handler;
        }
    }
    Ok(())
}

pub fn postconfiguration(cf: &mut ngx_conf_t) -> Result<(), Status> {
    add_phase_handler(cf, NGX_HTTP_ACCESS_PHASE, Some(access_handler), Position::Last)
}

extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(Status::NGX_DECLINED.into(), || {
        // SAFETY: nginx passes a valid request, used only through this view.
        let mut req = unsafe { Request::from_raw(r) };
        let (Some(lcf), Some(amcf)) = (req.loc_conf(), req.main_conf()) else {
            return Status::NGX_DECLINED.into();
        };
        let Some(profile) = lcf.profile.as_ref() else {
            return Status::NGX_DECLINED.into();
        };
        if !req.is_main() {
            return Status::NGX_DECLINED.into();
        }
        if profile.needs_request_body() && req.has_body() && !req.body_started() {
            log!(req.log(), Debug, "reading request body");
            let rc = req.read_body(Some(body_read));
            if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
                return rc;
            }
            // Balances the reference the body reading took; the phases continue in
            // body_read, which comes back here.
            req.finalize(Status::NGX_DONE.into());
            return Status::NGX_DONE.into();
        }
        crate::block::decide(&mut req, lcf, profile, amcf)
    })
}

/// The body is in: run the phases again, from the access handler, which now finds
/// `request_body` set and goes on to the block decision.
extern "C" fn body_read(r: *mut ngx_http_request_t) {
    guard((), || {
        // SAFETY: nginx passes the request whose body was read, used only through this view.
        unsafe { Request::from_raw(r) }.resume_phases();
    })
}
