//! What the request path hands to the exporter: the raw material of one record.
//!
//! The request path only copies bytes. Parsing bodies, resolving body keys, hashing,
//! splitting sessions and serialising all happen on the exporter thread (see
//! [`crate::assemble`]), so the cost on nginx's event loop stays a few copies and one
//! channel send. Small strings share one arena; bodies are separate buffers so that a
//! response body collected by the body filter is moved, not copied.

use std::sync::Arc;

use crate::body::Extent;
use crate::keys::Builtin;
use crate::profile::Profile;
use crate::record::Blocked;
use crate::time::Millis;

/// A byte range in the capture's arena.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    len: u32,
}

/// The full content of a request marked as an attack.
#[derive(Clone, Debug, Default)]
pub struct CapturedAttack {
    pub kind: Span,
    pub line: Span,
    pub headers: Vec<(Span, Span)>,
}

/// A captured body, cut at `api_sessions_body_limit`.
#[derive(Clone, Debug, Default)]
pub struct Body {
    pub bytes: Vec<u8>,
    /// Cut at the limit: the record says so.
    pub truncated: bool,
    /// Whether `bytes` are the whole body. Cut when truncated, and also when the client
    /// stopped sending or the response filter stopped reading once the start decided every
    /// `response_body:` source: the parsers then take nothing that reaches the end as whole.
    pub extent: Extent,
    /// The Content-Type header of that body.
    pub content_type: Span,
}

/// Raw material of one record.
#[derive(Clone, Debug)]
pub struct Capture {
    pub profile: Arc<Profile>,
    pub seq: u64,
    pub ts: Millis,
    pub duration_us: u64,
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub request_id: Span,
    pub server: Span,
    pub method: Span,
    pub path: Span,
    pub ip: Span,
    pub user_agent: Option<Span>,
    /// The query string, for GraphQL over GET.
    pub args: Span,
    /// Values of variable keys then variable parameters, in profile order; `None` for body
    /// sources and for variables that were empty or not evaluated.
    values: Vec<Option<Span>>,
    /// The built-in key, looked up on the request path when no variable key had a value.
    pub builtin: Option<(Builtin, Span)>,
    /// The session start, when the request path updated the session table itself (see
    /// [`crate::assemble::early_zone_key`]).
    pub session_start: Option<Millis>,
    pub request_body: Option<Body>,
    pub response_body: Option<Body>,
    pub attack: Option<CapturedAttack>,
    /// Set when the request's key was on the denylist.
    pub blocked: Option<Blocked>,
    arena: Vec<u8>,
}

impl Capture {
    /// An empty capture for a request of a location with this profile.
    pub fn new(profile: Arc<Profile>, arena_capacity: usize) -> Capture {
        let slots = profile.keys.len() + profile.params.len();
        Capture {
            profile,
            seq: 0,
            ts: Millis(0),
            duration_us: 0,
            status: 0,
            request_bytes: 0,
            response_bytes: 0,
            request_id: Span::default(),
            server: Span::default(),
            method: Span::default(),
            path: Span::default(),
            ip: Span::default(),
            user_agent: None,
            args: Span::default(),
            values: vec![None; slots],
            builtin: None,
            session_start: None,
            request_body: None,
            response_body: None,
            attack: None,
            blocked: None,
            arena: Vec::with_capacity(arena_capacity),
        }
    }

    /// Makes a used capture new again for a request with `profile`, keeping its buffers.
    ///
    /// The profile is borrowed and replaced only when it differs: a capture mostly serves
    /// the same location again, and a clone and a drop of the `Arc` per request were two
    /// locked instructions on the request path (measured at about 1.5% of a small request).
    pub fn recycle(&mut self, profile: &Arc<Profile>) {
        let slots = profile.keys.len() + profile.params.len();
        if !Arc::ptr_eq(&self.profile, profile) {
            self.profile = Arc::clone(profile);
        }
        self.seq = 0;
        self.ts = Millis(0);
        self.duration_us = 0;
        self.status = 0;
        self.request_bytes = 0;
        self.response_bytes = 0;
        self.request_id = Span::default();
        self.server = Span::default();
        self.method = Span::default();
        self.path = Span::default();
        self.ip = Span::default();
        self.user_agent = None;
        self.args = Span::default();
        self.values.clear();
        self.values.resize(slots, None);
        self.builtin = None;
        self.session_start = None;
        self.request_body = None;
        self.response_body = None;
        self.attack = None;
        self.blocked = None;
        self.arena.clear();
    }

    /// Asks the CPU to bring this capture into its caches: the struct itself and, when
    /// `buffers`, the start of its arena and value slots (reading their addresses is a load
    /// from the struct, so that is for a capture whose struct was prefetched earlier).
    ///
    /// A recycled capture was last touched by the exporter thread up to a poll interval ago,
    /// and the event loop has since gone through enough requests to push it out of the core's
    /// caches: its first touch was a cache miss, the largest single cost of the module on the
    /// event loop in a profile of small requests.
    pub fn prefetch(&self, buffers: bool) {
        prefetch_bytes(core::ptr::from_ref(self).cast(), core::mem::size_of::<Capture>());
        if buffers {
            prefetch_bytes(self.arena.as_ptr(), self.arena.capacity().min(ARENA_PREFETCH));
            prefetch_bytes(self.values.as_ptr().cast(), core::mem::size_of_val(&self.values[..]));
        }
    }

    /// Arena bytes a capture may keep when it is recycled; bigger ones are freed so the
    /// pool of recycled captures stays small.
    pub const RECYCLE_LIMIT: usize = 16 * 1024;

    /// Copies `bytes` into the arena. Captures are bounded by nginx's header and body limits,
    /// far below 4 GiB; anything beyond is cut rather than wrapped.
    pub fn push(&mut self, bytes: &[u8]) -> Span {
        let start = self.arena.len().min(u32::MAX as usize);
        let len = bytes.len().min(u32::MAX as usize - start);
        self.arena.extend_from_slice(&bytes[..len]);
        Span { start: start as u32, len: len as u32 }
    }

    /// The bytes of a span of this capture.
    pub fn get(&self, span: Span) -> &[u8] {
        let start = span.start as usize;
        &self.arena[start..start + span.len as usize]
    }

    /// Sets the value of variable key `index`.
    pub fn set_key_value(&mut self, index: usize, value: &[u8]) {
        if !value.is_empty() {
            self.values[index] = Some(self.push(value));
        }
    }

    /// Sets the value of variable parameter `index`.
    pub fn set_param_value(&mut self, index: usize, value: &[u8]) {
        if !value.is_empty() {
            let slot = self.profile.keys.len() + index;
            self.values[slot] = Some(self.push(value));
        }
    }

    pub fn key_value(&self, index: usize) -> Option<&[u8]> {
        self.values[index].map(|s| self.get(s))
    }

    pub fn param_value(&self, index: usize) -> Option<&[u8]> {
        self.values[self.profile.keys.len() + index].map(|s| self.get(s))
    }

    /// Heap bytes held, for the exporter queue's memory accounting.
    pub fn heap_size(&self) -> usize {
        let body = |b: &Option<Body>| b.as_ref().map_or(0, |b| b.bytes.capacity());
        self.arena.capacity()
            + body(&self.request_body)
            + body(&self.response_body)
            + self.values.capacity() * core::mem::size_of::<Option<Span>>()
            + self.attack.as_ref().map_or(0, |a| a.headers.capacity() * 16)
    }
}

/// Arena bytes worth prefetching: the strings of a typical request.
const ARENA_PREFETCH: usize = 512;

/// Prefetches the cache lines of `len` bytes at `start`. A prefetch never faults, whatever
/// the address, so this is safe for any pointer.
fn prefetch_bytes(start: *const u8, len: usize) {
    const LINE: usize = 64;
    let end = start.wrapping_add(len);
    let mut line = start;
    while line < end {
        prefetch_line(line);
        line = line.wrapping_add(LINE);
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_line(p: *const u8) {
    // Safe to call from Rust 1.87 on; unsafe in the older releases this crate supports.
    #[allow(unused_unsafe)]
    // SAFETY: SSE is part of x86_64; a prefetch reads nothing and never faults.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn prefetch_line(p: *const u8) {
    // SAFETY: PRFM is a hint: it reads nothing architecturally and never faults.
    unsafe {
        core::arch::asm!("prfm pldl1keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags))
    };
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn prefetch_line(_: *const u8) {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{KeySpec, ParamSpec, Settings, Source};
    use crate::record::ParamKind;

    #[test]
    fn a_recycled_capture_is_like_a_new_one() {
        let profile = Arc::new(Profile::new(Settings {
            keys: vec![KeySpec { source: Source::parse("$arg_t").unwrap(), label: "t".into() }],
            ..Settings::default()
        }));
        let mut c = Capture::new(profile.clone(), 64);
        c.seq = 9;
        c.path = c.push(b"/old");
        c.set_key_value(0, b"old");
        c.request_body = Some(Body::default());
        c.recycle(&Arc::new(Profile::default()));
        assert_eq!((c.seq, c.get(c.path), c.request_body.is_none()), (0, &b""[..], true));
        assert_eq!(c.values.len(), 0, "slots of the new profile");
        c.recycle(&profile);
        assert!(Arc::ptr_eq(&c.profile, &profile));
        assert_eq!(c.values.len(), 1);
        assert_eq!(c.key_value(0), None);
        assert!(c.heap_size() >= 64, "buffers kept");
    }

    #[test]
    fn prefetching_never_faults() {
        // Null, unmapped and freed memory: a prefetch is a hint, whatever the address.
        prefetch_bytes(core::ptr::null(), 4096);
        prefetch_bytes(core::ptr::without_provenance(usize::MAX - 4095), 128);
        let freed = Box::new(Capture::new(Arc::new(Profile::default()), 64));
        let capture: *const Capture = &*freed;
        drop(freed);
        prefetch_bytes(capture.cast(), core::mem::size_of::<Capture>());
        // And it leaves what it touches as it was.
        let c = Capture::new(Arc::new(Profile::default()), 64);
        c.prefetch(true);
        assert_eq!(c.heap_size(), 64);
    }

    #[test]
    fn values_land_in_their_slots() {
        let profile = Profile::new(Settings {
            keys: vec![KeySpec { source: Source::parse("$arg_t").unwrap(), label: "t".into() }],
            params: vec![ParamSpec {
                source: Source::parse("$arg_u").unwrap(),
                name: "u".into(),
                source_text: "$arg_u".into(),
                kind: ParamKind::User,
                hashed: false,
            }],
            ..Settings::default()
        });
        let mut c = Capture::new(Arc::new(profile), 64);
        c.path = c.push(b"/login");
        c.set_key_value(0, b"aaa");
        c.set_param_value(0, b"");
        assert_eq!(c.get(c.path), b"/login");
        assert_eq!(c.key_value(0), Some(&b"aaa"[..]));
        assert_eq!(c.param_value(0), None, "empty values are absent");
        c.set_param_value(0, b"alice");
        assert_eq!(c.param_value(0), Some(&b"alice"[..]));
        assert!(c.heap_size() >= 64);
    }
}
