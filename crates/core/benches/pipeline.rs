//! The exporter's side of a record: key resolution, hashing, writing the NDJSON line, and
//! the whole thread's throughput into the file sink.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use api_sessions_core::assemble::{Assembler, SessionSplit};
use api_sessions_core::capture::Capture;
use api_sessions_core::counters::CounterBoard;
use api_sessions_core::export::{Destination, ExportSettings, Exporter};
use api_sessions_core::hash::Secret;
use api_sessions_core::keys::BuiltinScanner;
use api_sessions_core::profile::{KeySpec, ParamSpec, Profile, Settings, Source};
use api_sessions_core::record::ParamKind;
use api_sessions_core::time::Millis;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn secret() -> Secret {
    Secret::from_file_contents(b"0123456789abcdef0123456789abcdef").unwrap()
}

/// Scenario 1 of scripts/bench: a cookie key, user and role, a query argument, two hashed
/// parameters.
fn profile() -> Arc<Profile> {
    let param = |source: &str, name: &str, kind, hashed| ParamSpec {
        source: Source::parse(source).unwrap(),
        name: name.into(),
        source_text: source.into(),
        kind,
        hashed,
    };
    Arc::new(Profile::new(Settings {
        keys: vec![KeySpec { source: Source::parse("$cookie_sid").unwrap(), label: "sid".into() }],
        params: vec![
            param("$http_x_user", "user", ParamKind::User, false),
            param("$http_x_role", "role", ParamKind::Role, false),
            param("$arg_q", "q", ParamKind::Context, false),
            param("$http_x_account", "account", ParamKind::Context, true),
            param("$arg_card", "card", ParamKind::Context, true),
        ],
        flows: vec!["billing".into()],
        ..Settings::default()
    }))
}

/// Fills a capture as the request path does; `n` varies the session key and the request id.
fn fill(c: &mut Capture, n: u64) {
    c.seq = n;
    c.ts = Millis(1_795_341_600_000 + n as i64);
    c.duration_us = 1_234;
    c.status = 200;
    c.request_bytes = 412;
    c.response_bytes = 171;
    let mut id = [0u8; 32];
    let hex = b"0123456789abcdef";
    for (i, b) in id.iter_mut().enumerate() {
        *b = hex[((n >> ((i % 16) * 4)) & 0xf) as usize];
    }
    c.request_id = c.push(&id);
    c.server = c.push(b"api.example.com");
    c.method = c.push(b"GET");
    c.path = c.push(b"/items");
    c.ip = c.push(b"203.0.113.7");
    c.user_agent = Some(c.push(b"Mozilla/5.0 (X11; Linux x86_64) DemoShop/1.0"));
    c.args = c.push(b"q=lamp&card=4111111111111111");
    // 1000 sessions, each of many requests.
    let session = n % 1000;
    let key = [
        b's',
        b'-',
        b'0' + (session / 100) as u8,
        b'0' + (session / 10 % 10) as u8,
        b'0' + (session % 10) as u8,
    ];
    c.set_key_value(0, &key);
    c.set_param_value(0, b"alice");
    c.set_param_value(1, b"admin");
    c.set_param_value(2, b"lamp");
    c.set_param_value(3, b"4000-1234");
    c.set_param_value(4, b"4111111111111111");
}

fn capture(profile: &Arc<Profile>, n: u64) -> Box<Capture> {
    let mut c = Box::new(Capture::new(profile.clone(), 512));
    fill(&mut c, n);
    c
}

fn hashing(c: &mut Criterion) {
    let s = secret();
    let mut group = c.benchmark_group("hash");
    group.bench_function("key_hash", |b| {
        b.iter(|| s.key_hash(b"custom", black_box(b"s-8f3a2c91d7")))
    });
    group.bench_function("zone_key", |b| {
        b.iter(|| s.zone_key(b"custom", black_box(b"s-8f3a2c91d7")))
    });
    group.bench_function("param_hmac", |b| {
        b.iter(|| s.param_digest(black_box(b"4111111111111111")))
    });
    group.finish();
}

fn keys(c: &mut Criterion) {
    let headers: [(&[u8], &[u8]); 6] = [
        (b"Host", b"api.example.com"),
        (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64) DemoShop/1.0"),
        (b"Accept", b"application/json"),
        (b"Cookie", b"theme=dark; lang=en; PHPSESSID=7f3c9a2e51b04d6f"),
        (b"X-Request-Id", b"abc"),
        (b"Accept-Encoding", b"gzip"),
    ];
    c.bench_function("builtin_key_scan", |b| {
        b.iter(|| {
            let mut scanner = BuiltinScanner::new();
            for (name, value) in black_box(&headers) {
                scanner.header(name, value);
            }
            scanner.finish(b"203.0.113.7", Some(b"ua")).map(|k| k.entry)
        })
    });
}

fn records(c: &mut Criterion) {
    let profile = profile();
    let captures: Vec<Box<Capture>> = (0..1000).map(|n| capture(&profile, n)).collect();
    let mut assembler = Assembler::new(secret(), "web-1".into(), 4242, SessionSplit::Daily);
    let mut out = Vec::with_capacity(1 << 20);
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("write_record", |b| {
        b.iter(|| {
            out.clear();
            assembler.write_record(&captures[i % captures.len()], &mut out);
            i += 1;
        })
    });
    group.finish();
}

/// A receiver that takes every POST and answers 204, as fast as one thread can read.
fn null_receiver() -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::with_capacity(1 << 20, stream);
                let mut body = Vec::new();
                loop {
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    body.resize(length, 0);
                    if reader.read_exact(&mut body).is_err()
                        || writer.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}/v1/records")
}

/// CPU time the exporter thread of this process has used (its `schedstat`).
fn exporter_cpu() -> Duration {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with("api_sessions ex") {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap();
            total += stat.split_whitespace().next().unwrap().parse::<u64>().unwrap();
        }
    }
    Duration::from_nanos(total)
}

/// The whole exporter thread: captures pushed as fast as the queue takes them, records
/// written in batches to the destination, until all are counted as exported. What is
/// measured is the exporter thread's own CPU time, so the figure is the records per second
/// one thread sustains, whatever the producer (this thread) costs.
fn exporter(c: &mut Criterion) {
    let profile = profile();
    // /dev/null measures the exporter itself; a real file adds the kernel's page-cache
    // copy, which on some machines costs more than the whole record.
    let dir = tempfile::tempdir().unwrap();
    let devnull = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
    let destinations = [
        ("file_sink_devnull", Destination::File(devnull)),
        (
            "file_sink_disk",
            Destination::File(std::fs::File::create(dir.path().join("r.ndjson")).unwrap()),
        ),
        ("http_sink", Destination::Http { url: null_receiver(), headers: Vec::new() }),
    ];

    let mut group = c.benchmark_group("exporter");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    for (name, destination) in destinations {
        // Leaked: the exporter thread needs 'static counters, as in a worker.
        let region: &'static mut [u64] = vec![0u64; CounterBoard::SIZE / 8 + 1].leak();
        // SAFETY: the region is valid, zeroed, 8-aligned and never freed.
        let board: &'static CounterBoard =
            Box::leak(Box::new(unsafe { CounterBoard::init(region.as_mut_ptr().cast()) }));
        let counters = board.attach_worker(std::process::id()).unwrap();
        // A short flush, so a measurement does not wait out the default second at its end.
        let settings = ExportSettings {
            batch: 512,
            flush: Duration::from_millis(5),
            queue: 65_536,
            ..ExportSettings::default()
        };
        let assembler = Assembler::new(secret(), "web-1".into(), 4242, SessionSplit::Daily);
        let exporter = Exporter::start(settings, destination, assembler, counters).unwrap();
        let mut n = 0u64;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let target = counters.values().exported + iters;
                let start = exporter_cpu();
                for _ in 0..iters {
                    n += 1;
                    // Recycled captures, as on the request path: no allocation in steady state.
                    let mut c = exporter.capture(&profile);
                    fill(&mut c, n);
                    while let Err(full) = exporter.submit(c) {
                        // Queue full: wait for the exporter (the drop is counted, the record
                        // is sent again, so `exported` still reaches the target).
                        c = full.0;
                        std::thread::yield_now();
                    }
                }
                while counters.values().exported < target {
                    std::thread::sleep(Duration::from_micros(100));
                }
                exporter_cpu() - start
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hashing, keys, records, exporter);
criterion_main!(benches);
