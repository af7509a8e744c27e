//! The detector measured on real traffic: records t/api_sessions_detect.t had nginx with the
//! module write while real tools (sqlmap, hydra, ffuf, gobuster, wrk, siege), scripted bots and
//! scripted people used a small shop API. `API_SESSIONS_DETECT_CORPUS=FILE[.gz]` measures
//! another recording.

mod detect_corpus;

use std::fs::File;
use std::io::{Cursor, Read};

use api_sessions::detect::Config;
use detect_corpus::evaluate;

fn corpus() -> Vec<u8> {
    let path = std::env::var("API_SESSIONS_DETECT_CORPUS").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/detect-corpus.ndjson.gz").to_owned()
    });
    let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut text = Vec::new();
    let mut reader: Box<dyn Read> = if path.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    reader.read_to_end(&mut text).unwrap();
    text
}

#[test]
fn real_traffic_meets_the_targets() {
    let evaluation = evaluate(Cursor::new(corpus()), &Config::default()).unwrap();
    eprint!("{}", evaluation.table());
    // Every kind of actor of the recording is there.
    assert!(evaluation.labels.len() >= 20, "{} actors", evaluation.labels.len());
    let shortfalls = evaluation.shortfalls();
    assert!(shortfalls.is_empty(), "{}", shortfalls.join("\n"));
}

#[test]
fn arrival_order_does_not_change_a_verdict() {
    let text = corpus();
    let in_order = evaluate(Cursor::new(&text), &Config::default()).unwrap();
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    fastrand::Rng::with_seed(7).shuffle(&mut lines);
    let shuffled = evaluate(Cursor::new(lines.join(&b'\n')), &Config::default()).unwrap();
    assert_eq!(in_order.sessions.len(), shuffled.sessions.len());
    for (a, b) in in_order.sessions.iter().zip(&shuffled.sessions) {
        assert_eq!((&a.session_id, a.risk), (&b.session_id, b.risk));
        assert_eq!(a.signals, b.signals, "{}", a.session_id);
    }
}
