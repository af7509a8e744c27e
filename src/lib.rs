//! ngx_http_api_sessions_module: groups the requests in front of an API into user sessions.
//!
//! The request path captures raw values (access phase: the request body when a source needs
//! it; body filter: the response body; log phase: everything else) and hands one capture per
//! main request to the worker's exporter thread. Everything that can be done off the event
//! loop — parsing bodies, resolving keys, hashing, serialising, delivering — is done by the
//! exporter, in the `api-sessions-core` crate.

#[macro_use]
mod log;

mod access;
mod block;
mod capture;
mod conf;
mod filter;
mod request;
mod status;
mod util;
mod variables;
mod worker;

use core::ffi::{c_char, c_void};
use core::ptr;

use nginx_sys::{
    ngx_conf_t, ngx_cycle_t, ngx_http_module_t, ngx_int_t, ngx_module_t, ngx_uint_t,
    NGX_HTTP_MODULE,
};
use ngx::core::{Status, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};

use api_sessions_core::hash::Secret;

use crate::conf::{LocConf, MainConf};
use crate::log::Log;
use crate::util::guard;

pub struct Module;

static NGX_HTTP_API_SESSIONS_MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(Module::preconfiguration),
    postconfiguration: Some(Module::postconfiguration),
    create_main_conf: Some(Module::create_main_conf),
    init_main_conf: Some(Module::init_main_conf),
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(Module::create_loc_conf),
    merge_loc_conf: Some(Module::merge_loc_conf),
};

// The `ngx_modules` table nginx looks for in a dynamic module built outside its build system.
ngx::ngx_modules!(ngx_http_api_sessions_module);

#[used]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_api_sessions_module: ngx_module_t = ngx_module_t {
    ctx: ptr::addr_of!(NGX_HTTP_API_SESSIONS_MODULE_CTX).cast_mut().cast(),
    // SAFETY: the command table is only read by nginx.
    commands: unsafe { ptr::addr_of_mut!(conf::COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as ngx_uint_t,
    init_process: Some(init_process),
    exit_process: Some(exit_process),
    ..ngx_module_t::default()
};

unsafe impl HttpModuleMainConf for Module {
    type MainConf = MainConf;
}

unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = LocConf;
}

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module is a static nginx only reads after loading it.
        unsafe { &*ptr::addr_of!(ngx_http_api_sessions_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        guard(Status::NGX_ERROR.into(), || {
            // SAFETY: nginx passes a valid cf.
            variables::register(unsafe { &mut *cf }).into()
        })
    }

    unsafe extern "C" fn init_main_conf(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
        guard(NGX_CONF_ERROR, || {
            // SAFETY: nginx passes a valid cf and this module's main conf.
            let (cf, amcf) = unsafe { (&mut *cf, &mut *conf.cast::<MainConf>()) };
            if let (Some((file, line)), None) = (&amcf.hash_used, &amcf.secret) {
                // Reported at the parameter, as nginx reports directive errors; the secret
                // may come anywhere in the http block, so this is known only now.
                log!(
                    Log::configuration(cf),
                    Emerg,
                    "the \"hash\" parameter of \"api_sessions_param\" requires \
                     \"api_sessions_secret\" in {file}:{line}"
                );
                return NGX_CONF_ERROR;
            }
            amcf.secret.get_or_insert_with(Secret::unkeyed);
            if amcf.node.is_none() {
                // SAFETY: the cycle's host name is set before configuration is parsed.
                let host = unsafe { util::bytes(&(*cf.cycle).hostname) };
                amcf.node = Some(String::from_utf8_lossy(host).into_owned());
            }
            NGX_CONF_OK
        })
    }

    unsafe extern "C" fn merge_loc_conf(
        cf: *mut ngx_conf_t,
        prev: *mut c_void,
        conf: *mut c_void,
    ) -> *mut c_char {
        guard(NGX_CONF_ERROR, || {
            // SAFETY: nginx passes a valid cf and two location confs of this module.
            let (cf, prev, conf) =
                unsafe { (&*cf, &*prev.cast::<LocConf>(), &mut *conf.cast::<LocConf>()) };
            conf.merge(prev);
            let amcf = Module::main_conf_mut(cf).expect("main conf");
            if conf.block != conf::BLOCK_OFF && amcf.denylist.is_none() {
                log!(
                    Log::configuration(cf),
                    Emerg,
                    "\"api_sessions_block\" requires \"api_sessions_denylist\""
                );
                return NGX_CONF_ERROR;
            }
            if conf.enable == 1 {
                Module::main_conf_mut(cf).expect("main conf").active = true;
            }
            NGX_CONF_OK
        })
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        guard(Status::NGX_ERROR.into(), || {
            // SAFETY: nginx passes a valid cf.
            let cf = unsafe { &mut *cf };
            let amcf = Module::main_conf_mut(cf).expect("main conf");
            if !amcf.active {
                return Status::NGX_OK.into();
            }
            if !amcf.secret.as_ref().is_some_and(Secret::is_keyed) {
                log!(
                    Log::directive(cf),
                    Warn,
                    "\"api_sessions_secret\" is not set, key hashes and session ids use a \
                     public key"
                );
            }
            let export = amcf.export.get_or_insert_with(conf::ExportConf::default_file);
            if export.open(cf).is_err() || conf::zone::add_counters_zone(cf, amcf).is_err() {
                return Status::NGX_ERROR.into();
            }
            if let Err(status) = variables::postconfiguration(cf, amcf) {
                return status.into();
            }
            access::postconfiguration(cf)
                .and_then(|_| capture::postconfiguration(cf))
                .and_then(|_| filter::postconfiguration())
                .map_or_else(|status| status.into(), |_| Status::NGX_OK.into())
        })
    }
}

extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    guard(Status::NGX_ERROR.into(), || {
        // SAFETY: nginx passes the current cycle.
        let cycle = unsafe { &mut *cycle };
        let Some(amcf) = Module::main_conf_mut(cycle) else {
            return Status::NGX_OK.into();
        };
        if !amcf.active {
            return Status::NGX_OK.into();
        }
        match worker::Worker::start(cycle, amcf) {
            Ok(worker) => {
                amcf.worker = Some(worker);
                Status::NGX_OK.into()
            }
            Err(e) => {
                log!(Log::cycle(), Alert, "{e} while starting the exporter");
                Status::NGX_ERROR.into()
            }
        }
    })
}

extern "C" fn exit_process(cycle: *mut ngx_cycle_t) {
    guard((), || {
        // SAFETY: nginx passes the current cycle.
        let cycle = unsafe { &mut *cycle };
        if let Some(worker) = Module::main_conf_mut(cycle).and_then(|amcf| amcf.worker.take()) {
            worker.stop();
        }
    })
}
