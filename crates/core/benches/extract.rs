//! Pointer extraction from JSON bodies of the sizes the default body limit sees.

use std::fmt::Write;
use std::hint::black_box;

use api_sessions_core::body::{self, BodyFormat, Extent, Pointer, RequestDocument};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// An API body of about `size` bytes: a user, a list of items, and the session token last,
/// so that one pointer has to walk the whole document.
fn document(size: usize) -> String {
    let mut out = String::from(
        r#"{"request_id": "7f3c9a2e", "user": {"id": 4242, "name": "Alice \"A.\" Liddell",
  "roles": ["admin", "billing"], "address": {"city": "Zürich", "zip": "8001"}},
  "items": ["#,
    );
    let mut i = 0;
    while out.len() + 160 < size {
        if i > 0 {
            out.push_str(",\n    ");
        }
        write!(
            out,
            r#"{{"id": {i}, "name": "item {i} \u00e9", "price": {}.{:02}, "tags": ["a", "b{{"], "ok": true}}"#,
            i * 7 % 1000,
            i % 100
        )
        .unwrap();
        i += 1;
    }
    out.push_str(r#"], "session": {"ttl": 3600, "token": "eyJhbGciOiJIUzI1NiJ9.e30.sig"}}"#);
    out
}

fn extract(c: &mut Criterion) {
    let pointers =
        ["/user/id", "/items/3/name", "/session/token"].map(|p| Pointer::parse(p).unwrap());
    let pointers: Vec<&Pointer> = pointers.iter().collect();

    let mut group = c.benchmark_group("extract_request");
    for (label, size) in [("1KB", 1 << 10), ("64KB", 64 << 10)] {
        let body = document(size);
        let doc = RequestDocument {
            format: BodyFormat::Json,
            body: body.as_bytes(),
            extent: Extent::Whole,
            args: b"",
        };
        let values = body::extract_request(&doc, &pointers);
        assert!(values.iter().all(Option::is_some), "{values:?}");

        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(label, |b| {
            b.iter(|| body::extract_request(black_box(&doc), &pointers))
        });
    }
    group.finish();
}

criterion_group!(benches, extract);
criterion_main!(benches);
