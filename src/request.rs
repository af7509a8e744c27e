//! Plain views of an `ngx_http_request_t`: the few accessors the hooks need, turning nginx
//! structures into byte slices and nothing more.
//!
//! A hook makes one [`Request`] from the pointer nginx passes and works through it alone.
//! Strings of the request live as long as the request (`'r`) and are handed out for that
//! long; anything inside the request structure itself, and the module's context, is borrowed
//! from the view, so the borrow checker keeps a single writer.

use api_sessions_core::body::{BodyFormat, Extent};
use api_sessions_core::capture::Body;
use nginx_sys::{
    ngx_buf_t, ngx_http_client_body_handler_pt, ngx_http_complex_value_t, ngx_http_request_t,
    ngx_int_t, ngx_str_t,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf, HttpModuleServerConf};

use crate::conf::{LocConf, MainConf};
use crate::log::Log;
use crate::Module;

pub struct Request<'r>(&'r mut ngx_http_request_t);

/// The bytes of a string that lives as long as the request (`'r`).
///
/// # Safety
///
/// `s` must point into memory owned by the request, its connection or the cycle.
unsafe fn request_bytes<'r>(s: &ngx_str_t) -> &'r [u8] {
    if s.data.is_null() || s.len == 0 {
        return &[];
    }
    // SAFETY: per the contract.
    unsafe { core::slice::from_raw_parts(s.data, s.len) }
}

impl<'r> Request<'r> {
    /// # Safety
    ///
    /// `r` is a valid request, used only on nginx's event loop for the duration of a hook.
    pub unsafe fn from_raw(r: *mut ngx_http_request_t) -> Request<'r> {
        // SAFETY: per the contract.
        Request(unsafe { &mut *r })
    }

    pub fn is_main(&self) -> bool {
        core::ptr::eq(self.0.main, &*self.0)
    }

    pub fn log(&self) -> Log {
        Log::request(self.0)
    }

    /// Reading of the request body has started (or is done).
    pub fn body_started(&self) -> bool {
        !self.0.request_body.is_null()
    }

    /// Reads the request body, keeping it and its temporary file until the request is done
    /// (the upstream module would close the file when the response starts otherwise), then
    /// calls `then`. Returns what `ngx_http_read_client_request_body` returns.
    pub fn read_body(&mut self, then: ngx_http_client_body_handler_pt) -> ngx_int_t {
        self.0.set_preserve_body(1);
        // SAFETY: a valid request of this view; nginx keeps the handler until it is called.
        unsafe { nginx_sys::ngx_http_read_client_request_body(self.0, then) }
    }

    /// `ngx_http_finalize_request`.
    pub fn finalize(&mut self, rc: ngx_int_t) {
        // SAFETY: a valid request of this view.
        unsafe { nginx_sys::ngx_http_finalize_request(self.0, rc) };
    }

    /// Runs the phases again from where they stopped, and from now on whenever the request
    /// can be written to (as nginx's own modules do after reading the body).
    pub fn resume_phases(&mut self) {
        self.0.write_event_handler = Some(nginx_sys::ngx_http_core_run_phases);
        // SAFETY: a valid request of this view.
        unsafe { nginx_sys::ngx_http_core_run_phases(self.0) };
    }

    /// The response has a header and no body (`HEAD`, 204, 304).
    pub fn header_only(&self) -> bool {
        self.0.header_only() != 0
    }

    /// The response has a `Content-Encoding`.
    pub fn response_encoded(&self) -> bool {
        !self.0.headers_out.content_encoding.is_null()
    }

    /// The response's `Content-Length`, when known.
    pub fn response_length(&self) -> Option<usize> {
        usize::try_from(self.0.headers_out.content_length_n).ok()
    }

    pub fn loc_conf(&self) -> Option<&'static LocConf> {
        Module::location_conf(&*self.0)
    }

    pub fn main_conf(&self) -> Option<&'static MainConf> {
        Module::main_conf(&*self.0)
    }

    /// The module's per-request context, created on first use in the request pool.
    pub fn ctx(&mut self) -> Option<&mut RequestCtx> {
        let module = Module::module();
        // SAFETY: r->ctx has one slot per HTTP module.
        let slot = unsafe { self.0.ctx.add(module.ctx_index) };
        // SAFETY: the slot holds null or a RequestCtx this module allocated.
        if let Some(ctx) = unsafe { (*slot).cast::<RequestCtx>().as_mut() } {
            return Some(ctx);
        }
        // SAFETY: the request pool is valid; allocate() registers a cleanup that drops it.
        let pool = unsafe { ngx::core::Pool::from_ngx_pool(self.0.pool) };
        let ctx = pool.allocate(RequestCtx::default());
        if ctx.is_null() {
            return None;
        }
        // SAFETY: storing our own context in our slot.
        unsafe { *slot = ctx.cast() };
        // SAFETY: freshly allocated and initialised.
        Some(unsafe { &mut *ctx })
    }

    /// The context, if one was created.
    pub fn existing_ctx(&mut self) -> Option<&mut RequestCtx> {
        let module = Module::module();
        // SAFETY: as in ctx(); the context is borrowed from this view, which is the only one.
        unsafe { (*self.0.ctx.add(module.ctx_index)).cast::<RequestCtx>().as_mut() }
    }

    /// Evaluates a complex value; empty on error.
    pub fn complex_value(&mut self, cv: *mut ngx_http_complex_value_t) -> &'r [u8] {
        let mut value = ngx_str_t::default();
        // SAFETY: cv was compiled at configuration time; the result lives in the request pool.
        if unsafe { nginx_sys::ngx_http_complex_value(self.0, cv, &mut value) } != 0 {
            return &[];
        }
        // SAFETY: the value lives in the request pool or in the request itself.
        unsafe { request_bytes(&value) }
    }

    /// The value of a source, however it was compiled.
    pub fn source_value(&mut self, value: crate::conf::SourceValue) -> &'r [u8] {
        use crate::conf::SourceValue;
        match value {
            SourceValue::Variable(index) => {
                // SAFETY: index came from ngx_http_get_variable_index at configuration time.
                let v = unsafe { nginx_sys::ngx_http_get_flushed_variable(self.0, index) };
                // SAFETY: null or a variable value of this request.
                unsafe { variable_bytes(v) }
            }
            SourceValue::Complex(cv) => self.complex_value(cv.as_ptr()),
        }
    }

    /// The value of an indexed variable; empty when not found.
    pub fn variable(&mut self, index: nginx_sys::ngx_int_t) -> &'r [u8] {
        let Ok(index) = nginx_sys::ngx_uint_t::try_from(index) else { return &[] };
        // SAFETY: index was obtained with ngx_http_get_variable_index at configuration time.
        let v = unsafe { nginx_sys::ngx_http_get_indexed_variable(self.0, index) };
        // SAFETY: null or a variable value of this request.
        unsafe { variable_bytes(v) }
    }

    /// `$request_id`. When nothing has evaluated it yet, it is made here from the worker's
    /// generator and stored in the request's variable slot, so whatever evaluates it later
    /// sees the same value. nginx's own handler calls OpenSSL's `RAND_bytes` for each
    /// request (falling back to a non-cryptographic generator itself): the id only has to
    /// be unique, and this keeps a microsecond off the request path.
    pub fn request_id(&mut self, index: nginx_sys::ngx_int_t, rng: &mut fastrand::Rng) -> &'r [u8] {
        let Ok(index) = usize::try_from(index) else { return &[] };
        // SAFETY: r->variables has one slot per indexed variable, index came from
        // ngx_http_get_variable_index.
        let v = unsafe { &mut *self.0.variables.add(index) };
        if v.valid() == 0 && v.not_found() == 0 {
            // SAFETY: an allocation from the request pool, which outlives the request.
            let id = unsafe { nginx_sys::ngx_pnalloc(self.0.pool, 32) }.cast::<u8>();
            if id.is_null() {
                return &[];
            }
            // SAFETY: id has room for 32 bytes, all written below.
            let hex = unsafe { core::slice::from_raw_parts_mut(id, 32) };
            api_sessions_core::hash::hex_to(&rng.u128(..).to_le_bytes(), hex);
            *v = nginx_sys::ngx_variable_value_t {
                _bitfield_align_1: [],
                _bitfield_1: request_id_flags(),
                data: id,
            };
        }
        self.variable(index as nginx_sys::ngx_int_t)
    }

    /// Request start, at nginx's millisecond resolution.
    pub fn start(&self) -> api_sessions_core::time::Millis {
        // time_t is i64 where the module is built, but not everywhere.
        #[allow(clippy::useless_conversion)]
        let sec = i64::from(self.0.start_sec);
        let ms = sec * 1000 + self.0.start_msec as i64;
        api_sessions_core::time::Millis(ms)
    }

    /// `$request_length` and `$bytes_sent`.
    pub fn sizes(&self) -> (u64, u64) {
        // SAFETY: a request always has a connection.
        let sent = unsafe { (*self.0.connection).sent };
        (u64::try_from(self.0.request_length).unwrap_or(0), u64::try_from(sent).unwrap_or(0))
    }

    pub fn request_line(&self) -> &'r [u8] {
        // SAFETY: request strings live as long as the request.
        unsafe { request_bytes(&self.0.request_line) }
    }

    pub fn method(&self) -> &'r [u8] {
        // SAFETY: as above.
        unsafe { request_bytes(&self.0.method_name) }
    }

    /// The path as the client sent it, without the query string.
    pub fn path(&self) -> &'r [u8] {
        // SAFETY: request strings live as long as the request.
        let unparsed = unsafe { request_bytes(&self.0.unparsed_uri) };
        match unparsed.iter().position(|&b| b == b'?') {
            Some(q) => &unparsed[..q],
            // SAFETY: as above.
            None if unparsed.is_empty() => unsafe { request_bytes(&self.0.uri) },
            None => unparsed,
        }
    }

    pub fn args(&self) -> &'r [u8] {
        // SAFETY: as above.
        unsafe { request_bytes(&self.0.args) }
    }

    /// `$host`: the Host header, else the server name.
    pub fn server(&self) -> &'r [u8] {
        // SAFETY: the Host header lives in the request, the server name in the cycle.
        let host = unsafe { request_bytes(&self.0.headers_in.server) };
        if !host.is_empty() {
            return host;
        }
        let cscf = ngx::http::NgxHttpCoreModule::server_conf(&*self.0);
        // SAFETY: the server name lives in the cycle's configuration.
        cscf.map(|c| unsafe { request_bytes(&c.server_name) }).unwrap_or_default()
    }

    /// The client address (after realip).
    pub fn ip(&self) -> &'r [u8] {
        // SAFETY: a request always has a connection; addr_text lives as long as it.
        unsafe { request_bytes(&(*self.0.connection).addr_text) }
    }

    pub fn user_agent(&self) -> Option<&'r [u8]> {
        // SAFETY: header entries live as long as the request.
        let ua = unsafe { self.0.headers_in.user_agent.as_ref() }?;
        // SAFETY: as above.
        Some(unsafe { request_bytes(&ua.value) })
    }

    /// Request headers in received order. The list is part of the request structure, so the
    /// iterator borrows the view; the names and values live as long as the request.
    pub fn headers(&self) -> impl Iterator<Item = (&'r [u8], &'r [u8])> + '_ {
        // SAFETY: headers_in.headers is a valid list for the life of the request.
        let list = unsafe { ngx::http::list_iterator(&self.0.headers_in.headers) };
        list.map(|(k, v)| {
            let (k, v) = (k.as_bytes(), v.as_bytes());
            // SAFETY: header strings live as long as the request.
            unsafe {
                (
                    core::slice::from_raw_parts(k.as_ptr(), k.len()),
                    core::slice::from_raw_parts(v.as_ptr(), v.len()),
                )
            }
        })
    }

    pub fn request_content_type(&self) -> &'r [u8] {
        // SAFETY: header entries live as long as the request.
        match unsafe { self.0.headers_in.content_type.as_ref() } {
            // SAFETY: as above.
            Some(h) => unsafe { request_bytes(&h.value) },
            None => &[],
        }
    }

    pub fn response_content_type(&self) -> &'r [u8] {
        // SAFETY: as above.
        unsafe { request_bytes(&self.0.headers_out.content_type) }
    }

    /// `$status`.
    pub fn status(&self) -> u16 {
        let status =
            if self.0.err_status != 0 { self.0.err_status } else { self.0.headers_out.status };
        u16::try_from(status).unwrap_or(0)
    }

    /// The request has (or announced) a body.
    pub fn has_body(&self) -> bool {
        self.0.headers_in.content_length_n > 0 || self.0.headers_in.chunked() != 0
    }

    /// The request body read so far, up to `limit` bytes, from memory or the temporary file,
    /// into `bytes` (an empty buffer, typically a recycled one).
    pub fn body(&self, limit: usize, mut bytes: Vec<u8>) -> Option<Body> {
        // SAFETY: request_body is null or valid for the life of the request.
        let rb = unsafe { self.0.request_body.as_ref() }?;
        let announced = usize::try_from(self.0.headers_in.content_length_n).unwrap_or(0);
        bytes.clear();
        bytes.reserve(announced.min(limit));
        let mut total = 0usize;
        let mut cl = rb.bufs;
        // SAFETY: the chain and its buffers belong to the request.
        while let Some(link) = unsafe { cl.as_ref() } {
            if let Some(buf) = unsafe { link.buf.as_ref() } {
                total += copy_buf(buf, limit.saturating_sub(bytes.len()), &mut bytes);
            }
            cl = link.next;
        }
        let truncated = total.max(announced) > limit;
        // Less than announced: the client stopped sending, and what came may stop mid-value.
        let extent = Extent::cut_if(truncated || total < announced);
        Some(Body { bytes, truncated, extent, content_type: Default::default() })
    }
}

/// Whether a buffer's data is in a file only, to be read back to be seen.
pub fn file_only(buf: &ngx_buf_t) -> bool {
    let in_memory = buf.temporary() != 0 || buf.memory() != 0 || buf.mmap() != 0;
    !in_memory && buf.in_file() != 0
}

/// Appends up to `room` bytes of `buf` to `out`; returns the buffer's full size.
pub fn copy_buf(buf: &ngx_buf_t, room: usize, out: &mut Vec<u8>) -> usize {
    copy_buf_from(buf, 0, room, out)
}

/// Appends up to `room` bytes of `buf`, from `skip` bytes into it, to `out`; returns the
/// buffer's full size.
pub fn copy_buf_from(buf: &ngx_buf_t, skip: usize, room: usize, out: &mut Vec<u8>) -> usize {
    let in_memory = buf.temporary() != 0 || buf.memory() != 0 || buf.mmap() != 0;
    if in_memory {
        // SAFETY: pos..last is the buffer's valid data.
        let size = unsafe { buf.last.offset_from(buf.pos) }.max(0) as usize;
        let take = size.saturating_sub(skip).min(room);
        if take > 0 {
            // SAFETY: as above; skip + take <= size.
            out.extend_from_slice(unsafe { core::slice::from_raw_parts(buf.pos.add(skip), take) });
        }
        return size;
    }
    if buf.in_file() == 0 {
        return 0;
    }
    let size = (buf.file_last - buf.file_pos).max(0) as usize;
    let take = size.saturating_sub(skip).min(room);
    // SAFETY: an in-file buffer has a valid file.
    let Some(file) = (unsafe { buf.file.as_ref() }) else { return size };
    if take > 0 {
        out.reserve(take);
        let spare = out.spare_capacity_mut();
        // pread leaves nginx's idea of the file offset alone, and reads straight into the
        // spare capacity (no zeroing first).
        let offset = buf.file_pos + skip as libc::off_t;
        // SAFETY: spare has room for at least take bytes.
        let n = unsafe { libc::pread(file.fd, spare.as_mut_ptr().cast(), take, offset) };
        let n = usize::try_from(n).unwrap_or(0).min(take);
        // SAFETY: pread initialised the first n bytes of the spare capacity.
        unsafe { out.set_len(out.len() + n) };
    }
    size
}

/// The bytes of a variable value; empty when there is none or it was not found.
///
/// # Safety
/// `v` is null or a variable value of a request that outlives `'r`.
unsafe fn variable_bytes<'r>(v: *mut nginx_sys::ngx_variable_value_t) -> &'r [u8] {
    // SAFETY: per the contract.
    match unsafe { v.as_ref() } {
        Some(v) if v.not_found() == 0 && !v.data.is_null() => {
            // SAFETY: the value lives in the request.
            unsafe { core::slice::from_raw_parts(v.data, v.len() as usize) }
        }
        _ => &[],
    }
}

/// The flags of a found, cacheable 32-byte value, as bindgen lays them out. Made once:
/// bindgen's bitfield setters and constructor loop over the bits one by one (28 iterations
/// for `len` alone), which showed in the profile of every request.
fn request_id_flags() -> nginx_sys::__BindgenBitfieldUnit<[u8; 4]> {
    static FLAGS: std::sync::OnceLock<nginx_sys::__BindgenBitfieldUnit<[u8; 4]>> =
        std::sync::OnceLock::new();
    *FLAGS.get_or_init(|| nginx_sys::ngx_variable_value_t::new_bitfield_1(32, 1, 0, 0, 0))
}

/// What the module remembers about a request between hooks.
#[derive(Default)]
pub struct RequestCtx {
    /// Response body collected by the body filter.
    pub response: Option<ResponseCapture>,
    /// `$api_session_*` as computed for this request.
    pub session: Option<crate::variables::SessionVars>,
    /// The log phase has started: the response body is complete.
    pub log_phase: bool,
    /// What `api_sessions_block` did with the request.
    pub blocked: Option<api_sessions_core::record::Blocked>,
}

pub struct ResponseCapture {
    pub bytes: Vec<u8>,
    pub limit: usize,
    pub truncated: bool,
    /// Content-Type as the extraction reads it.
    pub format: BodyFormat,
    pub content_type_empty: bool,
    /// The first file buffer was probed (see the body filter).
    pub probed: bool,
    /// What was collected decides every `response_body:` source: the rest is not looked at.
    pub decided: bool,
}
