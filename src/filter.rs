//! Header and body filters: collect the response body for `response_body:` sources.
//!
//! Every buffer is passed on untouched; the filter only copies up to
//! `api_sessions_body_limit` bytes of JSON-looking, unencoded responses of main requests.
//! Being registered after nginx's own filters puts it first in the chain, so it sees the
//! body before gzip.

use nginx_sys::{
    ngx_buf_t, ngx_chain_t, ngx_http_output_body_filter_pt, ngx_http_output_header_filter_pt,
    ngx_http_request_t, ngx_int_t, NGX_ERROR,
};
use ngx::core::Status;

use api_sessions_core::body::{response_decided, BodyFormat, Pointer};
use api_sessions_core::profile::Profile;

use crate::request::{copy_buf, copy_buf_from, file_only, Request, ResponseCapture};
use crate::util::guard;

static mut NEXT_HEADER_FILTER: ngx_http_output_header_filter_pt = None;
static mut NEXT_BODY_FILTER: ngx_http_output_body_filter_pt = None;

pub fn postconfiguration() -> Result<(), Status> {
    // SAFETY: configuration runs single-threaded; the chain is nginx's documented pattern.
    unsafe {
        NEXT_HEADER_FILTER = nginx_sys::ngx_http_top_header_filter;
        nginx_sys::ngx_http_top_header_filter = Some(header_filter);
        NEXT_BODY_FILTER = nginx_sys::ngx_http_top_body_filter;
        nginx_sys::ngx_http_top_body_filter = Some(body_filter);
    }
    Ok(())
}

/// JSON by its Content-Type, or no Content-Type at all (then the exporter sniffs).
fn json_like(content_type: &[u8]) -> bool {
    content_type.is_empty() || content_type.windows(4).any(|w| w.eq_ignore_ascii_case(b"json"))
}

extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard((), || {
        // SAFETY: nginx passes a valid request, used only through this view until the next
        // filter is called.
        let mut req = unsafe { Request::from_raw(r) };
        let Some(profile) = req.loc_conf().and_then(|lcf| lcf.profile.as_ref()) else { return };
        if !req.is_main()
            || !profile.needs_response_body()
            || req.header_only()
            || req.response_encoded()
            || !json_like(req.response_content_type())
        {
            return;
        }
        let limit = profile.body_limit;
        let Some(worker) = req.main_conf().and_then(|amcf| amcf.worker.as_ref()) else {
            return;
        };
        let content_type = req.response_content_type();
        let (format, content_type_empty) =
            (BodyFormat::from_content_type(content_type), content_type.is_empty());
        let expected = req.response_length().unwrap_or(4096);
        if let Some(ctx) = req.ctx() {
            ctx.response = Some(ResponseCapture {
                bytes: worker.body_buffer(expected.min(limit)),
                limit,
                truncated: false,
                format,
                content_type_empty,
                probed: false,
                decided: false,
            });
        }
    });
    // SAFETY: set once in postconfiguration, before any request.
    match unsafe { NEXT_HEADER_FILTER } {
        // SAFETY: the next filter of the chain, with the request nginx passed.
        Some(next) => unsafe { next(r) },
        None => NGX_ERROR as ngx_int_t,
    }
}

/// Bytes of a file buffer read at most before the rest is read whole. nginx sends a file
/// with `sendfile`, without reading it; the module has to read it back from the page cache
/// on the event loop, and for a large JSON file that copy was most of its cost. When the
/// first bytes already decide every `response_body:` pointer (as they do for values near the
/// top of a document), the rest is not read.
const FILE_PROBE: usize = 4096;

/// What is read first, before [`FILE_PROBE`]: a pointer near the top of a document is
/// decided within a few hundred bytes, and in a profile of a 64 KB file whose first item was
/// wanted, the kernel's copy of the 4 KB probe into the buffer took more of the event loop
/// than the read's system call.
const FIRST_PROBE: usize = 512;

/// Collects a file buffer with more than [`FILE_PROBE`] bytes of room, once per response
/// (asking again at every buffer of a long chain would walk the body again each time): the
/// first probe, the second when the first does not decide, then the rest only when neither
/// does. Returns the buffer's full size.
fn collect_file(
    buf: &ngx_buf_t,
    room: usize,
    capture: &mut ResponseCapture,
    profile: &Profile,
) -> usize {
    capture.probed = true;
    let before = capture.bytes.len();
    let mut read = 0;
    for probe in [FIRST_PROBE, FILE_PROBE] {
        let size = copy_buf_from(buf, read, probe - read, &mut capture.bytes);
        let short = capture.bytes.len() - before < probe;
        read = capture.bytes.len() - before;
        if size <= probe {
            return size;
        }
        // A short read decides nothing: the rest is read from where it stopped.
        if short {
            break;
        }
        let pointers: Vec<&Pointer> = profile.response_pointers().collect();
        if response_decided(capture.format, capture.content_type_empty, &capture.bytes, &pointers) {
            capture.decided = true;
            return size;
        }
    }
    copy_buf_from(buf, read, room - read, &mut capture.bytes)
}

extern "C" fn body_filter(r: *mut ngx_http_request_t, chain: *mut ngx_chain_t) -> ngx_int_t {
    guard((), || {
        // SAFETY: nginx passes a valid request, used only through this view until the next
        // filter is called.
        let mut req = unsafe { Request::from_raw(r) };
        if !req.is_main() {
            return;
        }
        let Some(profile) = req.loc_conf().and_then(|lcf| lcf.profile.as_deref()) else { return };
        let Some(capture) = req.existing_ctx().and_then(|ctx| ctx.response.as_mut()) else {
            return;
        };
        let mut cl = chain;
        // SAFETY: the chain and its buffers are valid for this call.
        while let Some(link) = unsafe { cl.as_ref() } {
            if capture.decided {
                break;
            }
            // SAFETY: as above.
            if let Some(buf) = unsafe { link.buf.as_ref() } {
                let room = capture.limit - capture.bytes.len();
                let size = if file_only(buf) && room > FILE_PROBE && !capture.probed {
                    collect_file(buf, room, capture, profile)
                } else {
                    copy_buf(buf, room, &mut capture.bytes)
                };
                if size > room && !capture.decided {
                    capture.truncated = true;
                }
            }
            cl = link.next;
        }
    });
    // SAFETY: set once in postconfiguration, before any request.
    match unsafe { NEXT_BODY_FILTER } {
        // SAFETY: the next filter of the chain, with what nginx passed.
        Some(next) => unsafe { next(r, chain) },
        None => NGX_ERROR as ngx_int_t,
    }
}
