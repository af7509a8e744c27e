//! The JSON walker and pointers: request and response extraction, the response probe, and
//! pointer parsing.
#![no_main]

use api_sessions_core::body::{BodyFormat, Pointer};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(pointer) = Pointer::parse(text) {
            assert_eq!(pointer.as_str(), text);
        }
    }
    let Some(input) = common::Input::split(data) else { return };
    common::check_request(BodyFormat::Json, &input, b"");
    common::check_response(BodyFormat::Json, false, &input);
    common::check_response(BodyFormat::Other, true, &input);
});
