use super::*;
use crate::shm_testing::{in_children, Region, SharedMapping};
use proptest::prelude::*;

fn list(region: &mut Region) -> Denylist {
    // SAFETY: the region outlives the list in each test.
    unsafe { Denylist::init(region.ptr(), region.len()) }.unwrap()
}

fn key(n: u64) -> KeyHash {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1).to_le_bytes());
    k[8..].copy_from_slice(&n.to_le_bytes());
    KeyHash(k)
}

fn list_of(version: u64, keys: impl IntoIterator<Item = (u64, Option<i64>)>) -> List {
    List { version, entries: keys.into_iter().map(|(n, e)| (key(n), e.map(Millis))).collect() }
}

const NOW: Millis = Millis(1_700_000_000_000);

#[test]
fn finds_what_is_listed_until_it_expires() {
    let mut region = Region::new(16 * 1024);
    let d = list(&mut region);
    assert!(!d.contains(&key(1), NOW));
    let guard = d.try_fetch(NOW, 0).unwrap();
    guard.replace(&list_of(3, [(1, None), (2, Some(NOW.0 + 1000))])).unwrap();
    drop(guard);
    assert!(d.contains(&key(1), NOW));
    assert!(d.contains(&key(2), NOW));
    assert!(d.contains(&key(2), Millis(NOW.0 + 999)));
    assert!(!d.contains(&key(2), Millis(NOW.0 + 1000)), "expired at its expiry");
    assert!(d.contains(&key(1), Millis(i64::MAX - 1)), "no expiry");
    assert!(!d.contains(&key(3), NOW));
    let stats = d.stats();
    assert_eq!((stats.entries, stats.version), (2, 3));
}

#[test]
fn a_new_list_replaces_the_old_one_whole() {
    let mut region = Region::new(16 * 1024);
    let d = list(&mut region);
    let guard = d.try_fetch(NOW, 0).unwrap();
    guard.replace(&list_of(1, [(1, None), (2, None)])).unwrap();
    guard.replace(&list_of(2, [(2, None), (3, None)])).unwrap();
    assert!(!d.contains(&key(1), NOW), "unblocked");
    assert!(d.contains(&key(2), NOW));
    assert!(d.contains(&key(3), NOW));
    guard.replace(&list_of(3, [])).unwrap();
    assert!(!d.contains(&key(2), NOW));
    assert_eq!(d.stats().entries, 0);
    assert_eq!(d.stats().version, 3);
}

#[test]
fn a_list_too_large_is_refused_and_the_old_one_stays() {
    let mut region = Region::new(4096);
    let d = list(&mut region);
    let capacity = d.capacity();
    assert_eq!(capacity, Denylist::capacity_for(4096));
    assert!(capacity >= 6);
    let guard = d.try_fetch(NOW, 0).unwrap();
    guard.replace(&list_of(1, (0..capacity as u64).map(|n| (n, None)))).unwrap();
    for n in 0..capacity as u64 {
        assert!(d.contains(&key(n), NOW));
    }
    let err = guard.replace(&list_of(2, (0..=capacity as u64).map(|n| (n + 1000, None))));
    assert_eq!(err, Err(TooLarge { entries: capacity + 1, capacity }));
    assert!(d.contains(&key(0), NOW));
    assert!(!d.contains(&key(1000), NOW));
    assert_eq!(d.stats().version, 1);
}

#[test]
fn one_fetcher_at_a_time_and_only_when_due() {
    let mut region = Region::new(16 * 1024);
    let d = list(&mut region);
    let guard = d.try_fetch(NOW, 0).unwrap();
    assert!(d.try_fetch(NOW, 0).is_none(), "locked");
    guard.schedule(Millis(NOW.0 + 5000));
    drop(guard);
    assert!(d.try_fetch(Millis(NOW.0 + 4999), 0).is_none(), "not due");
    assert!(d.try_fetch(Millis(NOW.0 + 5000), 0).is_some());
}

#[test]
fn only_the_current_configuration_fetches() {
    let mut region = Region::new(16 * 1024);
    let d = list(&mut region);
    let old = d.new_generation();
    assert!(d.try_fetch(NOW, old).is_some());
    let new = d.new_generation();
    assert_ne!(old, new);
    assert!(d.try_fetch(NOW, old).is_none(), "a reloaded configuration's workers");
    assert!(d.try_fetch(NOW, new).is_some());
}

#[test]
fn the_lock_of_a_dead_fetcher_is_taken_over() {
    let mut region = Region::new(16 * 1024);
    let d = list(&mut region);
    // A pid that cannot exist on Linux (above PID_MAX_LIMIT).
    d.header().fetch_lock.store(4_194_305, Ordering::Relaxed);
    assert!(d.try_fetch(NOW, 0).is_some());
}

#[test]
fn a_writer_that_died_mid_rewrite_leaves_readers_on_the_good_half() {
    let mut region = Region::new(16 * 1024);
    let d = list(&mut region);
    let guard = d.try_fetch(NOW, 0).unwrap();
    guard.replace(&list_of(1, [(1, None)])).unwrap();
    // The inactive half left odd, as by a writer killed half-way.
    let inactive = 1 - d.header().active.load(Ordering::Relaxed) as usize;
    d.header().halves[inactive].seq.store(7, Ordering::Relaxed);
    assert!(d.contains(&key(1), NOW));
    guard.replace(&list_of(2, [(2, None)])).unwrap();
    assert_eq!(d.header().halves[inactive].seq.load(Ordering::Relaxed), 8);
    assert!(d.contains(&key(2), NOW));
    assert!(!d.contains(&key(1), NOW));
}

#[test]
fn validators_belong_to_their_source() {
    let mut region = Region::new(16 * 1024);
    let d = list(&mut region);
    let guard = d.try_fetch(NOW, 0).unwrap();
    assert_eq!(guard.validator(7), None);
    guard.set_validator(7, Some(b"\"v1-abcdefgh\""));
    assert_eq!(guard.validator(7).as_deref(), Some(&b"\"v1-abcdefgh\""[..]));
    assert_eq!(guard.validator(8), None, "another source");
    guard.set_validator(7, Some(&[b'x'; VALIDATOR_MAX + 1]));
    assert_eq!(guard.validator(7), None, "too long to keep");
    guard.set_validator(7, None);
    assert_eq!(guard.validator(7), None);
}

#[test]
fn attach_sees_the_same_list_and_rejects_garbage() {
    let mut region = Region::new(16 * 1024);
    let d = list(&mut region);
    d.try_fetch(NOW, 0).unwrap().replace(&list_of(4, [(9, None)])).unwrap();
    d.count_blocked();
    // SAFETY: the region was formatted above.
    let again = unsafe { Denylist::attach(region.ptr()) }.unwrap();
    assert!(again.contains(&key(9), NOW));
    assert_eq!(again.stats().blocked, 1);
    let mut junk = Region::new(4096);
    // SAFETY: valid memory, just not a denylist.
    assert!(unsafe { Denylist::attach(junk.ptr()) }.is_none());
    // SAFETY: as above.
    assert!(unsafe { Denylist::init(junk.ptr(), 64) }.is_none());
}

#[test]
fn lookups_racing_rewrites_never_find_an_unlisted_key() {
    // Each list holds keys [v*100, v*100+50); readers look up keys no list holds while the
    // writer replaces the list, and the last list is whole once the writer is done.
    let mut region = Region::new(64 * 1024);
    let d = list(&mut region);
    let rounds = if cfg!(miri) { 20 } else { 2000 };
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for v in 1..=rounds {
                let guard = d.try_fetch(NOW, 0).unwrap();
                guard.replace(&list_of(v, (0..50).map(|i| (v * 100 + i, None)))).unwrap();
            }
        });
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..rounds * 5 {
                    let v = d.stats().version;
                    if v > 0 {
                        // The lookups race with the next rewrites: a slot read while it is
                        // rewritten must not answer for a key that no list ever held.
                        assert!(!d.contains(&key(v * 100 + 50), NOW));
                        assert!(!d.contains(&key(v * 100 + 99), NOW));
                    }
                }
            });
        }
        writer.join().unwrap();
    });
    assert_eq!(d.stats().version, rounds);
    for i in 0..50 {
        assert!(d.contains(&key(rounds * 100 + i), NOW));
    }
}

#[test]
fn bytes_per_entry_is_what_the_zone_costs() {
    let len = 16 << 20;
    let capacity = Denylist::capacity_for(len);
    // Whole powers of two of slots: between one and two times the ideal.
    assert!(capacity * Denylist::BYTES_PER_ENTRY <= len);
    assert!(capacity * Denylist::BYTES_PER_ENTRY * 2 > len - size_of::<Header>());
    assert_eq!(Denylist::BYTES_PER_ENTRY, 64);
}

const HASH_A: &str = "00112233445566778899aabbccddeeff";
const HASH_B: &str = "ffeeddccbbaa99887766554433221100";

#[test]
fn documents_are_parsed() {
    let doc = format!(
        r#"{{"version":12,"entries":[
            {{"key_hash":"{HASH_A}","expires":"2026-12-06T20:00:00Z","reason":"scraper"}},
            {{"key_hash":"{HASH_B}","expires":null,"reason":"fraud"}},
            {{"key_hash":"{HASH_A}","expires":"2026-12-06T21:00:00.500+01:00","reason":"again"}}
        ],"generated":"ignored"}}"#
    );
    let list = List::parse(doc.as_bytes()).unwrap();
    assert_eq!(list.version, 12);
    let a = parse_key_hash(HASH_A).unwrap();
    let b = parse_key_hash(HASH_B).unwrap();
    assert_eq!(a.to_hex(), HASH_A, "the form records carry");
    // The duplicate keeps its longest expiry (20:00:00.500Z beats 20:00:00Z).
    let expiry = Millis::parse("2026-12-06T20:00:00.500Z");
    assert_eq!(list.entries, vec![(a, expiry), (b, None)]);
    assert_eq!(List::parse(br#"{"version":0,"entries":[]}"#).unwrap(), List::default());
    let no_reason =
        format!(r#"{{"version":1,"entries":[{{"key_hash":"{HASH_A}","expires":null}}]}}"#);
    assert_eq!(List::parse(no_reason.as_bytes()).unwrap().entries.len(), 1);
}

#[test]
fn bad_documents_are_refused_whole_with_a_reason() {
    let entry = |hash: &str, expires: &str| {
        format!(
            r#"{{"version":1,"entries":[{{"key_hash":"{HASH_A}","expires":null}},{{"key_hash":"{hash}","expires":{expires}}}]}}"#
        )
    };
    for (doc, reason) in [
        ("".to_string(), "invalid document: EOF while parsing a value at line 1 column 0"),
        ("3".into(), "invalid document: invalid type: integer `3`, expected struct Document at line 1 column 1"),
        (r#"{"entries":[]}"#.into(), "invalid document: missing field `version` at line 1 column 14"),
        (r#"{"version":-1,"entries":[]}"#.into(), "invalid document: invalid value: integer `-1`, expected u64 at line 1 column 13"),
        (entry("00112233445566778899AABBCCDDEEFF", "null"), "invalid key_hash \"00112233445566778899AABBCCDDEEFF\" in entry 1"),
        (entry("0011", "null"), "invalid key_hash \"0011\" in entry 1"),
        (entry(&"0".repeat(32), "null"), "invalid key_hash \"00000000000000000000000000000000\" in entry 1"),
        (entry(HASH_B, "\"tomorrow\""), "invalid expires \"tomorrow\" in entry 1"),
        (entry(HASH_B, "\"2026-12-06\""), "invalid expires \"2026-12-06\" in entry 1"),
        (entry(HASH_B, "\"2026-12-06T20:00:00\""), "invalid expires \"2026-12-06T20:00:00\" in entry 1"),
        (entry(HASH_B, "3"), "invalid document: invalid type: integer `3`, expected a string at line 1 column 145"),
    ] {
        assert_eq!(List::parse(doc.as_bytes()).unwrap_err().0, reason, "{doc}");
    }
    let long = "x".repeat(100);
    let err = List::parse(entry(&long, "null").as_bytes()).unwrap_err().0;
    assert_eq!(err, format!("invalid key_hash \"{}...\" in entry 1", "x".repeat(40)));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 64 }, ..ProptestConfig::default() })]

    /// Whatever lists are loaded one after the other, a lookup answers for the last one:
    /// listed and not expired.
    #[test]
    fn lookups_answer_for_the_last_list(
        lists in prop::collection::vec(
            prop::collection::vec((0u64..300, prop::option::of(-5i64..5)), 0..100),
            1..4,
        ),
    ) {
        let mut region = Region::new(16 * 1024);
        let d = list(&mut region);
        let guard = d.try_fetch(NOW, 0).unwrap();
        let mut last = Vec::new();
        for (v, entries) in lists.iter().enumerate() {
            let mut doc = String::from("{\"version\":");
            doc.push_str(&v.to_string());
            doc.push_str(",\"entries\":[");
            for (i, (n, expires)) in entries.iter().enumerate() {
                if i > 0 {
                    doc.push(',');
                }
                let expires = match expires {
                    Some(s) => format!("\"{}\"", Millis(NOW.0 + s * 1000).to_rfc3339()),
                    None => "null".into(),
                };
                doc.push_str(&format!("{{\"key_hash\":\"{}\",\"expires\":{expires}}}", key(*n).to_hex()));
            }
            doc.push_str("]}");
            let list = List::parse(doc.as_bytes()).unwrap();
            guard.replace(&list).unwrap();
            last = entries.clone();
        }
        for n in 0..300u64 {
            let live = last.iter().any(|(k, e)| *k == n && e.is_none_or(|s| s > 0));
            prop_assert_eq!(d.contains(&key(n), NOW), live, "key {}", n);
        }
    }

    #[test]
    fn key_hashes_round_trip(bytes in prop::array::uniform16(any::<u8>())) {
        let hash = KeyHash(bytes);
        prop_assert_eq!(parse_key_hash(&hash.to_hex()), Some(hash));
    }
}

#[test]
#[cfg_attr(miri, ignore = "Miri does not emulate fork")]
fn shared_between_processes() {
    let shm = SharedMapping::new(256 * 1024);
    // SAFETY: a fresh mapping, which outlives the list.
    let d = unsafe { Denylist::init(shm.ptr(), shm.len()) }.unwrap();
    in_children(1, |_| {
        let guard = d.try_fetch(NOW, 0).unwrap();
        guard.replace(&list_of(5, (0..1000).map(|n| (n, None)))).unwrap();
    });
    assert_eq!(d.stats().version, 5);
    assert!((0..1000).all(|n| d.contains(&key(n), NOW)));
    assert!(!d.contains(&key(1000), NOW));
}

#[test]
fn the_cache_gives_the_records_key_hash() {
    let secret = Secret::from_file_contents(b"0123456789abcdef0123456789abcdef").unwrap();
    let mut cache = KeyHashCache::default();
    // Fewer under Miri, which runs a thousand times slower: still more keys than slots.
    let keys = if cfg!(miri) { 1100 } else { 3000u32 };
    for round in 0..3 {
        for n in 0..keys {
            let value = format!("token-{n}");
            let space: &[u8] = if n % 2 == 0 { b"custom" } else { b"header:Authorization" };
            assert_eq!(
                cache.key_hash(&secret, space, value.as_bytes()),
                secret.key_hash(space, value.as_bytes()),
                "round {round}, key {n}"
            );
        }
    }
}
