//! Measures the detector on a corpus of labelled records; run by t/api_sessions_detect.t.
//!
//! Usage: detect-eval FILE[.gz] [--config FILE.toml] [--sessions]
//!
//! Prints the measures as JSON on stdout and as a table on stderr; `--sessions` adds every
//! session with its risk and signals to the table.

#[path = "../tests/detect_corpus/mod.rs"]
mod detect_corpus;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::ExitCode;

use api_sessions::detect::Config;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut file, mut config, mut sessions) = (None, Config::default(), false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => match args.next().map(|path| Config::load(Path::new(&path))) {
                Some(Ok(loaded)) => config = loaded,
                Some(Err(e)) => return fail(&e.to_string()),
                None => return fail("--config needs a file"),
            },
            "--sessions" => sessions = true,
            _ if file.is_none() => file = Some(arg),
            _ => return fail(&format!("unexpected argument \"{arg}\"")),
        }
    }
    let Some(file) = file else {
        return fail("usage: detect-eval FILE [--config FILE] [--sessions]");
    };
    let input: Box<dyn BufRead> = match File::open(&file) {
        Ok(f) if file.ends_with(".gz") => Box::new(BufReader::new(flate2::read::GzDecoder::new(f))),
        Ok(f) => Box::new(BufReader::new(f)),
        Err(e) => return fail(&format!("{file}: {e}")),
    };
    let evaluation = match detect_corpus::evaluate(input, &config) {
        Ok(evaluation) => evaluation,
        Err(e) => return fail(&format!("{file}: {e}")),
    };
    if sessions {
        for s in &evaluation.sessions {
            eprintln!(
                "{} {:<26} {:>6} requests  risk {:>3}",
                s.session_id, s.label, s.requests, s.risk
            );
            for signal in &s.signals {
                eprintln!(
                    "      {:<18} {:.2}  {}",
                    signal.name.as_str(),
                    signal.score,
                    signal.detail
                );
            }
        }
    }
    eprint!("{}", evaluation.table());
    println!("{}", evaluation.to_json());
    ExitCode::SUCCESS
}

fn fail(message: &str) -> ExitCode {
    eprintln!("detect-eval: {message}");
    ExitCode::FAILURE
}
