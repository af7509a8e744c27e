//! Open-loop, fixed-rate HTTP/1.1 load with latency percentiles.
//!
//! `scripts/bench` needs the p99 latency a module adds at a fixed request rate, in
//! microseconds. General load generators that run on an async runtime show milliseconds of
//! their own timer jitter on a single core, which hides what is measured. This probe runs on
//! one thread that spins on a non-blocking poll: request `i` is due at `start + i / rate`, and
//! its latency is measured from that due time (so a stalled server is not excused by the
//! client waiting for it: no coordinated omission).
//!
//! ```text
//! bench-probe --rate 40000 --seconds 5 --connections 32 [--close] [--header 'Name: value']...
//!             [--method POST --body-file FILE --content-type application/json] URL
//! ```
//!
//! Prints one JSON object: `{"rate":..,"sent":..,"completed":..,"errors":..,"p50_us":..,
//! "p90_us":..,"p99_us":..,"p999_us":..,"max_us":..}`.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

struct Options {
    rate: f64,
    seconds: f64,
    connections: usize,
    close: bool,
    addr: SocketAddr,
    request: Vec<u8>,
}

fn usage(message: &str) -> ! {
    eprintln!("bench-probe: {message}");
    eprintln!(
        "usage: bench-probe --rate N --seconds S [--connections N] [--close] \
         [--header 'Name: value']... [--method M] [--body-file F] [--content-type T] \
         http://HOST:PORT/PATH"
    );
    std::process::exit(2);
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let (mut rate, mut seconds, mut connections, mut close) = (0.0, 0.0, 16usize, false);
    let (mut headers, mut method, mut body, mut content_type) =
        (Vec::new(), "GET".to_string(), Vec::new(), None);
    let mut url = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--rate" => rate = value().parse().unwrap_or_else(|_| usage("bad --rate")),
            "--seconds" => seconds = value().parse().unwrap_or_else(|_| usage("bad --seconds")),
            "--connections" => {
                connections = value().parse().unwrap_or_else(|_| usage("bad --connections"))
            }
            "--close" => close = true,
            "--header" => headers.push(value()),
            "--method" => method = value(),
            "--content-type" => content_type = Some(value()),
            "--body-file" => {
                let path = value();
                body = std::fs::read(&path)
                    .unwrap_or_else(|e| usage(&format!("cannot read {path}: {e}")))
            }
            _ if url.is_none() && !arg.starts_with("--") => url = Some(arg),
            _ => usage(&format!("unknown argument {arg}")),
        }
    }
    if rate <= 0.0 || seconds <= 0.0 || connections == 0 {
        usage("--rate and --seconds are required and must be positive");
    }
    let url = url.unwrap_or_else(|| usage("no URL"));
    let rest = url.strip_prefix("http://").unwrap_or_else(|| usage("only http:// URLs"));
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = host.parse().unwrap_or_else(|_| usage("the host must be IP:PORT"));
    let path = if path.is_empty() { "/" } else { path };

    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for h in &headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    if let Some(t) = content_type {
        request.push_str(&format!("Content-Type: {t}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if close {
        request.push_str("Connection: close\r\n");
    }
    request.push_str("\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(&body);
    Options { rate, seconds, connections, close, addr, request }
}

/// One connection and the request in flight on it.
struct Conn {
    stream: TcpStream,
    /// Due time of the request in flight, if any.
    due: Option<Instant>,
    written: usize,
    response: Vec<u8>,
    connected: bool,
}

/// Length of a complete response in `buf` (headers and a Content-Length body), if complete.
fn response_len(buf: &[u8], closed: bool) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
    });
    match length {
        Some(n) if buf.len() >= end + n => Some(end + n),
        Some(_) => None,
        None if closed => Some(buf.len()),
        None => None,
    }
}

fn main() {
    let opts = options();
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut idle: VecDeque<usize> = VecDeque::new();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut sent, mut completed, mut errors) = (0u64, 0u64, 0u64);

    let connect = |poll: &Poll, slot: usize| -> Conn {
        let mut stream = TcpStream::connect(opts.addr).expect("connect");
        let _ = stream.set_nodelay(true);
        poll.registry()
            .register(&mut stream, Token(slot), Interest::READABLE | Interest::WRITABLE)
            .expect("register");
        Conn { stream, due: None, written: 0, response: Vec::new(), connected: false }
    };
    for slot in 0..opts.connections {
        conns.push(Some(connect(&poll, slot)));
        idle.push_back(slot);
    }

    let interval = Duration::from_secs_f64(1.0 / opts.rate);
    let total = (opts.rate * opts.seconds) as u64;
    let start = Instant::now() + Duration::from_millis(100);
    let mut backlog: VecDeque<Instant> = VecDeque::new();
    let deadline = start + Duration::from_secs_f64(opts.seconds) + Duration::from_secs(5);

    while (completed + errors < total) && Instant::now() < deadline {
        // Requests that are due wait in the backlog until a connection is free.
        let now = Instant::now();
        while sent < total {
            let due = start + interval * sent as u32;
            if due > now {
                break;
            }
            backlog.push_back(due);
            sent += 1;
        }
        while let (Some(&due), Some(slot)) = (backlog.front(), idle.front().copied()) {
            let conn = conns[slot].as_mut().expect("idle connection");
            conn.due = Some(due);
            conn.written = 0;
            conn.response.clear();
            backlog.pop_front();
            idle.pop_front();
            if conn.connected {
                match conn.stream.write(&opts.request) {
                    Ok(n) => conn.written = n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => conn.written = usize::MAX,
                }
            }
        }

        poll.poll(&mut events, Some(Duration::ZERO)).expect("poll");
        for event in events.iter() {
            let slot = event.token().0;
            let Some(conn) = conns[slot].as_mut() else { continue };
            if event.is_writable() {
                conn.connected = true;
            }
            if conn.due.is_some() && conn.written < opts.request.len() {
                match conn.stream.write(&opts.request[conn.written..]) {
                    Ok(n) => conn.written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => conn.written = usize::MAX,
                }
            }
            let mut closed = conn.written == usize::MAX;
            let mut buf = [0u8; 16384];
            loop {
                match conn.stream.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => conn.response.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            let done = conn.due.is_some() && response_len(&conn.response, closed).is_some();
            if done {
                let due = conn.due.take().expect("in flight");
                if conn.response.starts_with(b"HTTP/1.1 2")
                    || conn.response.starts_with(b"HTTP/1.0 2")
                {
                    let us = Instant::now().saturating_duration_since(due).as_micros() as u64;
                    latency.saturating_record(us.max(1));
                    completed += 1;
                } else {
                    errors += 1;
                }
            } else if closed && conn.due.is_some() {
                conn.due = None;
                errors += 1;
            }
            if done || closed {
                if opts.close || closed {
                    let mut old = conns[slot].take().expect("connection");
                    let _ = poll.registry().deregister(&mut old.stream);
                    conns[slot] = Some(connect(&poll, slot));
                }
                idle.push_back(slot);
            }
        }
    }

    let q = |p: f64| latency.value_at_quantile(p);
    println!(
        "{{\"rate\":{},\"sent\":{sent},\"completed\":{completed},\"errors\":{errors},\
         \"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
        opts.rate,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        latency.max()
    );
}
