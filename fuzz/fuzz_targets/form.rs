//! Urlencoded form bodies (and, through GraphQL over GET, query strings).
#![no_main]

use api_sessions_core::body::BodyFormat;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some(input) = common::Input::split(data) else { return };
    common::check_request(BodyFormat::Form, &input, b"");
    // An empty body reads the query string as a GraphQL GET.
    let empty = common::Input { pointers: input.pointers.clone(), body: b"", cut: 0 };
    common::check_request(BodyFormat::Other, &empty, input.body);
});
