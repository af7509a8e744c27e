//! Directives and the module's configuration.
//!
//! Unset values are nginx's `NGX_CONF_UNSET*` or `None` and are merged once, with their
//! default, in [`LocConf::merge`]; lists (`api_sessions_key`, `api_sessions_param`,
//! `api_sessions_flow`, `api_sessions_mask`) are inherited whole, and a level that sets any
//! entry replaces them.

pub mod denylist;
pub mod export;
mod sources;
pub mod zone;

use core::ffi::{c_char, c_void};
use core::ptr::{self, NonNull};
use std::sync::Arc;

use api_sessions_core::hash::{Secret, SecretError, MIN_SECRET_LEN};
use api_sessions_core::mask::Target;
use api_sessions_core::profile::{Profile, Settings};
use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_flag_t, ngx_http_complex_value_t, ngx_int_t, ngx_str_t,
    ngx_uint_t, NGX_CONF_1MORE, NGX_CONF_FLAG, NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_TAKE12,
    NGX_CONF_UNSET, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF,
    NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_SRV_CONF,
};
use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ngx_string;

pub use self::export::ExportConf;
use self::sources::CompileError;
pub use self::sources::{KeyEntry, ParamEntry, SourceValue};
use self::zone::SessionZone;
use crate::log::{Level, Log};
use crate::util::{args, conf_str, guard_conf};

const NGX_CONF_UNSET_SIZE: usize = usize::MAX;
const NGX_CONF_UNSET_PTR: *mut ngx_http_complex_value_t = usize::MAX as *mut _;

/// http-level settings and the state shared by every location.
pub struct MainConf {
    /// `api_sessions_secret`; the public fallback key when unset.
    pub secret: Option<Secret>,
    /// `api_sessions_zone`.
    pub zone: Option<SessionZone>,
    /// `api_sessions_export`.
    pub export: Option<ExportConf>,
    /// `api_sessions_denylist`.
    pub denylist: Option<denylist::DenylistZone>,
    /// `api_sessions_node`, defaulting to the host name.
    pub node: Option<String>,
    /// Where the first `api_sessions_param ... hash` is (file, line): the secret is
    /// required, and a missing one is reported there.
    pub hash_used: Option<(String, usize)>,
    /// Some location has `api_sessions on` or `api_sessions_status`.
    pub active: bool,
    /// Index of `$request_id`.
    pub request_id_index: ngx_int_t,
    /// Shared memory of the exporter counters.
    pub counters: zone::CountersZone,
    /// This worker's exporter, set in `init_process`.
    pub worker: Option<crate::worker::Worker>,
}

impl MainConf {
    /// The secret; after `init_main_conf` always set (the public fallback if unconfigured).
    pub fn secret(&self) -> &Secret {
        self.secret.as_ref().expect("secret set in init_main_conf")
    }
}

impl Default for MainConf {
    fn default() -> Self {
        MainConf {
            secret: None,
            zone: None,
            export: None,
            denylist: None,
            node: None,
            hash_used: None,
            active: false,
            request_id_index: NGX_CONF_UNSET as ngx_int_t,
            counters: zone::CountersZone::default(),
            worker: None,
        }
    }
}

/// http, server and location settings.
pub struct LocConf {
    pub enable: ngx_flag_t,
    pub builtin_keys: ngx_flag_t,
    pub body_limit: usize,
    pub attack: *mut ngx_http_complex_value_t,
    pub keys: Option<Vec<KeyEntry>>,
    pub params: Option<Vec<ParamEntry>>,
    pub flows: Option<Vec<String>>,
    /// `api_sessions_mask`.
    pub mask: Option<Vec<Target>>,
    /// `api_sessions_block`: one of the `BLOCK_*` values.
    pub block: ngx_uint_t,
    /// `api_sessions_block_status`.
    pub block_status: ngx_int_t,
    /// Built by merge when the location captures.
    pub profile: Option<Arc<Profile>>,
}

pub const BLOCK_OFF: ngx_uint_t = 0;
pub const BLOCK_ON: ngx_uint_t = 1;
pub const BLOCK_DRY_RUN: ngx_uint_t = 2;
const NGX_CONF_UNSET_UINT: ngx_uint_t = ngx_uint_t::MAX;

impl Default for LocConf {
    fn default() -> Self {
        LocConf {
            enable: NGX_CONF_UNSET as ngx_flag_t,
            builtin_keys: NGX_CONF_UNSET as ngx_flag_t,
            body_limit: NGX_CONF_UNSET_SIZE,
            attack: NGX_CONF_UNSET_PTR,
            keys: None,
            params: None,
            flows: None,
            mask: None,
            block: NGX_CONF_UNSET_UINT,
            block_status: NGX_CONF_UNSET as ngx_int_t,
            profile: None,
        }
    }
}

impl ngx::http::Merge for LocConf {
    fn merge(&mut self, prev: &LocConf) -> Result<(), ngx::http::MergeConfigError> {
        LocConf::merge(self, prev);
        Ok(())
    }
}

impl LocConf {
    /// Merges with the enclosing level, applying defaults, and builds the profile.
    pub fn merge(&mut self, prev: &LocConf) {
        if self.enable == NGX_CONF_UNSET as ngx_flag_t {
            self.enable = if prev.enable == NGX_CONF_UNSET as ngx_flag_t { 0 } else { prev.enable };
        }
        if self.builtin_keys == NGX_CONF_UNSET as ngx_flag_t {
            self.builtin_keys = if prev.builtin_keys == NGX_CONF_UNSET as ngx_flag_t {
                1
            } else {
                prev.builtin_keys
            };
        }
        if self.body_limit == NGX_CONF_UNSET_SIZE {
            self.body_limit =
                if prev.body_limit == NGX_CONF_UNSET_SIZE { 64 * 1024 } else { prev.body_limit };
        }
        if self.attack == NGX_CONF_UNSET_PTR {
            self.attack =
                if prev.attack == NGX_CONF_UNSET_PTR { ptr::null_mut() } else { prev.attack };
        }
        if self.keys.is_none() {
            self.keys = prev.keys.clone();
        }
        if self.params.is_none() {
            self.params = prev.params.clone();
        }
        if self.flows.is_none() {
            self.flows = prev.flows.clone();
        }
        if self.mask.is_none() {
            self.mask = prev.mask.clone();
        }
        if self.block == NGX_CONF_UNSET_UINT {
            self.block = if prev.block == NGX_CONF_UNSET_UINT { BLOCK_OFF } else { prev.block };
        }
        if self.block_status == NGX_CONF_UNSET as ngx_int_t {
            self.block_status = if prev.block_status == NGX_CONF_UNSET as ngx_int_t {
                nginx_sys::NGX_HTTP_FORBIDDEN as ngx_int_t
            } else {
                prev.block_status
            };
        }

        self.profile = (self.enable == 1).then(|| {
            Arc::new(Profile::new(Settings {
                keys: self.keys().iter().map(|k| k.spec.clone()).collect(),
                builtin_keys: self.builtin_keys == 1,
                params: self.params().iter().map(|p| p.spec.clone()).collect(),
                flows: self.flows.clone().unwrap_or_default(),
                body_limit: self.body_limit,
                attack: !self.attack.is_null(),
                mask: self.mask.clone().unwrap_or_default(),
            }))
        });
    }

    pub fn keys(&self) -> &[KeyEntry] {
        self.keys.as_deref().unwrap_or_default()
    }

    pub fn params(&self) -> &[ParamEntry] {
        self.params.as_deref().unwrap_or_default()
    }

    /// The attack complex value, when configured.
    pub fn attack(&self) -> Option<&ngx_http_complex_value_t> {
        // SAFETY: after merge the pointer is either null or a complex value in the cycle pool.
        unsafe { self.attack.as_ref() }
    }
}

macro_rules! command {
    ($name:literal, $type:expr, $set:expr, $conf:expr, $offset:expr) => {
        ngx_command_t {
            name: ngx_string!($name),
            type_: ($type) as ngx_uint_t,
            set: Some($set),
            conf: $conf,
            offset: $offset,
            post: ptr::null_mut(),
        }
    };
}

const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

/// The values of `api_sessions_block`, for nginx's enum setter.
static mut BLOCK_VALUES: [nginx_sys::ngx_conf_enum_t; 4] = [
    nginx_sys::ngx_conf_enum_t { name: ngx_string!("off"), value: BLOCK_OFF },
    nginx_sys::ngx_conf_enum_t { name: ngx_string!("on"), value: BLOCK_ON },
    nginx_sys::ngx_conf_enum_t { name: ngx_string!("dry_run"), value: BLOCK_DRY_RUN },
    nginx_sys::ngx_conf_enum_t { name: ngx_str_t { len: 0, data: ptr::null_mut() }, value: 0 },
];

/// The bounds of `api_sessions_block_status`, those of `limit_req_status`.
static mut BLOCK_STATUS_BOUNDS: nginx_sys::ngx_conf_num_bounds_t =
    nginx_sys::ngx_conf_num_bounds_t {
        post_handler: Some(nginx_sys::ngx_conf_check_num_bounds),
        low: 400,
        high: 599,
    };

pub static mut COMMANDS: [ngx_command_t; 17] = [
    command!(
        "api_sessions",
        ANY_LEVEL | NGX_CONF_FLAG,
        nginx_sys::ngx_conf_set_flag_slot,
        NGX_HTTP_LOC_CONF_OFFSET,
        core::mem::offset_of!(LocConf, enable)
    ),
    command!("api_sessions_key", ANY_LEVEL | NGX_CONF_TAKE12, cmd_key, NGX_HTTP_LOC_CONF_OFFSET, 0),
    command!(
        "api_sessions_builtin_keys",
        ANY_LEVEL | NGX_CONF_FLAG,
        nginx_sys::ngx_conf_set_flag_slot,
        NGX_HTTP_LOC_CONF_OFFSET,
        core::mem::offset_of!(LocConf, builtin_keys)
    ),
    command!(
        "api_sessions_param",
        ANY_LEVEL | NGX_CONF_1MORE,
        cmd_param,
        NGX_HTTP_LOC_CONF_OFFSET,
        0
    ),
    command!(
        "api_sessions_flow",
        ANY_LEVEL | NGX_CONF_1MORE,
        cmd_flow,
        NGX_HTTP_LOC_CONF_OFFSET,
        0
    ),
    command!(
        "api_sessions_mask",
        ANY_LEVEL | NGX_CONF_1MORE,
        cmd_mask,
        NGX_HTTP_LOC_CONF_OFFSET,
        0
    ),
    command!(
        "api_sessions_attack",
        ANY_LEVEL | NGX_CONF_TAKE1,
        nginx_sys::ngx_http_set_complex_value_slot,
        NGX_HTTP_LOC_CONF_OFFSET,
        core::mem::offset_of!(LocConf, attack)
    ),
    command!(
        "api_sessions_body_limit",
        ANY_LEVEL | NGX_CONF_TAKE1,
        nginx_sys::ngx_conf_set_size_slot,
        NGX_HTTP_LOC_CONF_OFFSET,
        core::mem::offset_of!(LocConf, body_limit)
    ),
    command!(
        "api_sessions_zone",
        NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE,
        zone::cmd_zone,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0
    ),
    command!(
        "api_sessions_secret",
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        cmd_secret,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0
    ),
    command!(
        "api_sessions_export",
        NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE,
        export::cmd_export,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0
    ),
    command!(
        "api_sessions_node",
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        cmd_node,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0
    ),
    command!(
        "api_sessions_status",
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        crate::status::cmd_status,
        NGX_HTTP_LOC_CONF_OFFSET,
        0
    ),
    command!(
        "api_sessions_denylist",
        NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE,
        denylist::cmd_denylist,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0
    ),
    ngx_command_t {
        post: ptr::addr_of_mut!(BLOCK_VALUES).cast(),
        ..command!(
            "api_sessions_block",
            ANY_LEVEL | NGX_CONF_TAKE1,
            nginx_sys::ngx_conf_set_enum_slot,
            NGX_HTTP_LOC_CONF_OFFSET,
            core::mem::offset_of!(LocConf, block)
        )
    },
    ngx_command_t {
        post: ptr::addr_of_mut!(BLOCK_STATUS_BOUNDS).cast(),
        ..command!(
            "api_sessions_block_status",
            ANY_LEVEL | NGX_CONF_TAKE1,
            nginx_sys::ngx_conf_set_num_slot,
            NGX_HTTP_LOC_CONF_OFFSET,
            core::mem::offset_of!(LocConf, block_status)
        )
    },
    ngx_command_t::empty(),
];

/// "is duplicate", for nginx to print as `"x" directive is duplicate`.
pub const DUPLICATE: *mut c_char = c"is duplicate".as_ptr().cast_mut();

/// Logs an `[emerg]` for the directive being parsed and fails it.
pub fn conf_error(cf: &mut ngx_conf_t, message: std::fmt::Arguments<'_>) -> *mut c_char {
    Log::directive(cf).write(Level::Emerg, message);
    NGX_CONF_ERROR
}

fn main_conf(cf: &mut ngx_conf_t) -> &'static mut MainConf {
    use ngx::http::HttpModuleMainConf;
    crate::Module::main_conf_mut(cf).expect("api_sessions main conf")
}

extern "C" fn cmd_key(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard_conf(|| {
        // SAFETY: nginx passes a valid cf and this module's location conf.
        let (cf, lcf) = unsafe { (&mut *cf, &mut *conf.cast::<LocConf>()) };
        let args = args(cf);
        let mut label = None;
        if let Some(extra) = args.get(2) {
            match extra.as_bytes().strip_prefix(b"name=") {
                Some(name) if !name.is_empty() => label = Some(conf_str(name)),
                _ => return conf_error(cf, format_args!("invalid parameter \"{extra}\"")),
            }
        }
        match KeyEntry::compile(cf, args[1], label) {
            Ok(entry) => {
                lcf.keys.get_or_insert_with(Vec::new).push(entry);
                NGX_CONF_OK
            }
            Err(CompileError::Invalid(e)) => conf_error(cf, format_args!("{e}")),
            Err(CompileError::Logged) => NGX_CONF_ERROR,
        }
    })
}

extern "C" fn cmd_param(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard_conf(|| {
        // SAFETY: nginx passes a valid cf and this module's location conf.
        let (cf, lcf) = unsafe { (&mut *cf, &mut *conf.cast::<LocConf>()) };
        let args = args(cf);
        let mut options = sources::ParamOptions::default();
        for arg in &args[2..] {
            if let Err(e) = options.apply(arg.as_bytes()) {
                return conf_error(cf, format_args!("{e} \"{arg}\""));
            }
        }
        let hashed = options.hashed;
        match ParamEntry::compile(cf, args[1], options) {
            Ok(entry) => {
                lcf.params.get_or_insert_with(Vec::new).push(entry);
                let amcf = main_conf(cf);
                if hashed && amcf.hash_used.is_none() {
                    // SAFETY: cf->conf_file is the file being parsed.
                    let file = unsafe { &*cf.conf_file };
                    let name = conf_str(crate::util::bytes(&file.file.name));
                    amcf.hash_used = Some((name, file.line));
                }
                NGX_CONF_OK
            }
            Err(CompileError::Invalid(e)) => conf_error(cf, format_args!("{e}")),
            Err(CompileError::Logged) => NGX_CONF_ERROR,
        }
    })
}

extern "C" fn cmd_mask(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard_conf(|| {
        // SAFETY: nginx passes a valid cf and this module's location conf.
        let (cf, lcf) = unsafe { (&mut *cf, &mut *conf.cast::<LocConf>()) };
        let args = args(cf);
        let mut targets = Vec::with_capacity(args.len() - 1);
        for arg in &args[1..] {
            match Target::parse(&conf_str(arg.as_bytes())) {
                Ok(target) => targets.push(target),
                Err(e) => return conf_error(cf, format_args!("{e}")),
            }
        }
        lcf.mask.get_or_insert_with(Vec::new).extend(targets);
        NGX_CONF_OK
    })
}

/// Flow names: the documented ones or a custom word.
fn valid_flow(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

extern "C" fn cmd_flow(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard_conf(|| {
        // SAFETY: nginx passes a valid cf and this module's location conf.
        let (cf, lcf) = unsafe { (&mut *cf, &mut *conf.cast::<LocConf>()) };
        if lcf.flows.is_some() {
            return DUPLICATE;
        }
        let args = args(cf);
        if args.len() == 2 && args[1].as_bytes() == b"off" {
            lcf.flows = Some(Vec::new());
            return NGX_CONF_OK;
        }
        let mut flows: Vec<String> = Vec::new();
        for arg in &args[1..] {
            // "off" stands alone; "auth off" is a mistake, not a flow named "off".
            if !valid_flow(arg.as_bytes()) || arg.as_bytes() == b"off" {
                return conf_error(cf, format_args!("invalid value \"{arg}\""));
            }
            let flow = conf_str(arg.as_bytes());
            if !flows.contains(&flow) {
                flows.push(flow);
            }
        }
        lcf.flows = Some(flows);
        NGX_CONF_OK
    })
}

extern "C" fn cmd_secret(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard_conf(|| {
        // SAFETY: nginx passes a valid cf and this module's main conf.
        let (cf, amcf) = unsafe { (&mut *cf, &mut *conf.cast::<MainConf>()) };
        if amcf.secret.is_some() {
            return DUPLICATE;
        }
        let mut path = args(cf)[1];
        // Relative to the configuration prefix, as ssl_certificate is.
        // SAFETY: cf->cycle is valid; path is an ngx_str_t from the config.
        if unsafe { nginx_sys::ngx_conf_full_name(cf.cycle, &mut path, 1) } != 0 {
            return NGX_CONF_ERROR;
        }
        let path = conf_str(path.as_bytes());
        let contents = match std::fs::read(&path) {
            Ok(c) => c,
            Err(e) => {
                let e = api_sessions_core::export::os_error(&e);
                return conf_error(cf, format_args!("cannot read secret file \"{path}\" ({e})"));
            }
        };
        match Secret::from_file_contents(&contents) {
            Ok(secret) => {
                amcf.secret = Some(secret);
                NGX_CONF_OK
            }
            Err(SecretError::TooShort(_)) => {
                conf_error(cf, format_args!("\"{path}\" must be at least {MIN_SECRET_LEN} bytes"))
            }
        }
    })
}

extern "C" fn cmd_node(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard_conf(|| {
        // SAFETY: nginx passes a valid cf and this module's main conf.
        let (cf, amcf) = unsafe { (&mut *cf, &mut *conf.cast::<MainConf>()) };
        if amcf.node.is_some() {
            return DUPLICATE;
        }
        let name = args(cf)[1];
        if name.is_empty() {
            return conf_error(cf, format_args!("invalid value \"{name}\""));
        }
        amcf.node = Some(conf_str(name.as_bytes()));
        NGX_CONF_OK
    })
}

/// A complex value compiled from configuration text.
pub fn compile_complex_value(
    cf: &mut ngx_conf_t,
    mut text: ngx_str_t,
) -> Option<NonNull<ngx_http_complex_value_t>> {
    // SAFETY: allocation from the configuration pool, zeroed as nginx expects.
    let cv = unsafe {
        nginx_sys::ngx_pcalloc(cf.pool, core::mem::size_of::<ngx_http_complex_value_t>())
    };
    let cv = NonNull::new(cv.cast::<ngx_http_complex_value_t>())?;
    // SAFETY: an all-zero compile request is the documented starting point.
    let mut ccv: nginx_sys::ngx_http_compile_complex_value_t = unsafe { core::mem::zeroed() };
    ccv.cf = cf;
    ccv.value = &mut text;
    ccv.complex_value = cv.as_ptr();
    // SAFETY: ccv is fully set up; nginx logs its own errors.
    if unsafe { nginx_sys::ngx_http_compile_complex_value(&mut ccv) } != 0 {
        return None;
    }
    Some(cv)
}
