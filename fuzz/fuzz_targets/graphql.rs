//! GraphQL: `application/graphql` text with its arguments, JSON documents, and the operation
//! lexer.
#![no_main]

use api_sessions_core::body::graphql::operation;
use api_sessions_core::body::{BodyFormat, Extent};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some(input) = common::Input::split(data) else { return };
    // The body's second half doubles as the query string.
    let args = &input.body[input.body.len() / 2..];
    common::check_request(BodyFormat::GraphQl, &input, args);
    common::check_request(BodyFormat::Json, &input, b"");

    let whole = operation(input.body, Extent::Whole);
    if let Some(part) = operation(&input.body[..input.cut], Extent::Cut) {
        assert_eq!(Some(&part), whole.as_ref(), "the operation of a prefix");
    }
});
