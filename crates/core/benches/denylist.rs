//! Denylist lookups, as the access phase does them: a zone holding 100,000 entries, asked
//! for a key it does not hold (the common case) and for one it holds.

use std::hint::black_box;

use api_sessions_core::denylist::{Denylist, KeyHashCache, List};
use api_sessions_core::hash::{KeyHash, Secret};
use api_sessions_core::time::Millis;
use criterion::{criterion_group, criterion_main, Criterion};

const ENTRIES: u64 = 100_000;

fn lookup(c: &mut Criterion) {
    let secret = Secret::unkeyed();
    let hash = |n: u64| secret.key_hash(b"custom", format!("token-{n}").as_bytes());
    let len = ENTRIES as usize * Denylist::BYTES_PER_ENTRY * 2;
    let mut region = vec![0u64; len / 8];
    // SAFETY: the Vec outlives the list and is 8-aligned.
    let list = unsafe { Denylist::init(region.as_mut_ptr().cast(), len) }.expect("zone");
    let entries = (0..ENTRIES).map(|n| (hash(n), None)).collect();
    let guard = list.try_fetch(Millis(0), 0).expect("fetch lock");
    guard.replace(&List { version: 1, entries }).expect("fits");
    drop(guard);
    println!(
        "denylist: {ENTRIES} entries, capacity {}, {} zone bytes per entry",
        list.capacity(),
        Denylist::BYTES_PER_ENTRY
    );

    let now = Millis::now();
    let absent: Vec<KeyHash> = (ENTRIES..ENTRIES + 1024).map(hash).collect();
    let present: Vec<KeyHash> = (0..1024).map(hash).collect();
    let mut group = c.benchmark_group("denylist_lookup");
    let mut i = 0;
    group.bench_function("absent", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(list.contains(black_box(&absent[i]), now))
        })
    });
    group.bench_function("present", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(list.contains(black_box(&present[i]), now))
        })
    });
    group.bench_function("key_hash", |b| {
        b.iter(|| black_box(secret.key_hash(b"custom", black_box(b"eyJhbGciOiJIUzI1NiJ9.e30.sig"))))
    });
    let mut cache = KeyHashCache::default();
    group.bench_function("key_hash_cached", |b| {
        b.iter(|| {
            black_box(cache.key_hash(
                &secret,
                b"custom",
                black_box(b"eyJhbGciOiJIUzI1NiJ9.e30.sig"),
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
