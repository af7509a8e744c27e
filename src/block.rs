//! The access-phase decision of `api_sessions_block`: resolve the request's session key as
//! the record will, hash it as the record does, and look the hash up in the denylist.
//!
//! Keys are tried in the record's order: custom keys first (variables evaluated now,
//! `request_body:` sources from the body the access handler has read), then the built-in
//! chain. A `response_body:` source has no value yet at this point and is passed over, so a
//! key that only a response carries cannot be blocked here; the token a login response
//! returned is blocked on the later requests that send it, under whichever key carries it.
//!
//! A blocked request is finalized with the block status right here rather than by returning
//! it, so that `satisfy any` cannot let another access module override the block.

use api_sessions_core::assemble::{body_values, choose_key, BodyDocument};
use api_sessions_core::hash::{KeyHash, Secret};
use api_sessions_core::keys::BuiltinScanner;
use api_sessions_core::profile::{Profile, Source};
use api_sessions_core::record::Blocked;
use nginx_sys::ngx_int_t;
use ngx::core::Status;

use crate::conf::{LocConf, MainConf, BLOCK_DRY_RUN, BLOCK_OFF};
use crate::request::Request;
use crate::worker::Worker;

/// Decides on a main request whose body, if a key needs it, has been read (once per run of
/// the access phase: after an internal redirect the new location decides again). Returns
/// what the access handler returns.
pub fn decide(
    req: &mut Request<'_>,
    lcf: &LocConf,
    profile: &Profile,
    amcf: &MainConf,
) -> ngx_int_t {
    let declined = Status::NGX_DECLINED.into();
    if lcf.block == BLOCK_OFF {
        return declined;
    }
    let Some(list) = amcf.denylist.as_ref().and_then(|d| d.list.as_ref()) else {
        return declined;
    };
    let Some(worker) = amcf.worker.as_ref() else {
        return declined;
    };
    let Some(hash) = request_key_hash(req, lcf, profile, amcf.secret(), worker) else {
        return declined;
    };
    if !list.contains(&hash, req.start()) {
        return declined;
    }
    let dry_run = lcf.block == BLOCK_DRY_RUN;
    if let Some(ctx) = req.ctx() {
        ctx.blocked = Some(if dry_run { Blocked::DryRun } else { Blocked::Blocked });
    }
    if dry_run {
        list.count_dry_run();
        log!(req.log(), Info, "key hash {hash} is on the denylist, passed (dry run)");
        return declined;
    }
    list.count_blocked();
    log!(req.log(), Info, "key hash {hash} is on the denylist, answered {}", lcf.block_status);
    req.finalize(lcf.block_status);
    Status::NGX_DONE.into()
}

/// The key hash the record will have, as far as the request alone tells it.
fn request_key_hash(
    req: &mut Request<'_>,
    lcf: &LocConf,
    profile: &Profile,
    secret: &Secret,
    worker: &Worker,
) -> Option<KeyHash> {
    // Variable keys up to the first with a value: later ones cannot win. Only that one is
    // kept, without a vector of them all: this runs on every request of a blocking location.
    let mut first: Option<(usize, &[u8])> = None;
    for (i, key) in lcf.keys().iter().enumerate().take(profile.keys.len()) {
        if let Some(source) = key.value {
            let value = req.source_value(source);
            if !value.is_empty() {
                first = Some((i, value));
                break;
            }
        }
    }
    let variable = |i: usize| first.filter(|&(at, _)| at == i).map(|(_, value)| value);
    let has_request_body_keys =
        profile.keys.iter().any(|k| matches!(k.source, Source::RequestBody(_)));
    let bodies = if has_request_body_keys {
        let body = req.body(profile.body_limit, Vec::new());
        let content_type = req.request_content_type();
        let document = body.as_ref().map(|b| BodyDocument::new(content_type, &b.bytes, b.extent));
        // No response yet: its sources have no value.
        body_values(profile, document.as_ref(), req.args(), None)
    } else {
        Vec::new()
    };
    let body = |slot: usize| bodies.get(slot).and_then(|v| v.as_deref());
    if let Some(key) = choose_key(profile, variable, body, None) {
        return Some(worker.key_hashes().key_hash(secret, key.space.as_bytes(), key.value));
    }
    if !profile.builtin_keys {
        return None;
    }
    let mut scanner = BuiltinScanner::new();
    for (name, value) in req.headers() {
        scanner.header(name, value);
    }
    let builtin = scanner.finish(req.ip(), req.user_agent())?;
    let space = builtin.entry.label().as_bytes();
    Some(worker.key_hashes().key_hash(secret, space, &builtin.value))
}
