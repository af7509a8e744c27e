//! The NDJSON file sink.
//!
//! The file is opened by nginx (so it is created by the master with the right owner and is
//! reopened on `nginx -s reopen`); the exporter writes to its own duplicate of the descriptor.
//! The file is in append mode and each batch of whole lines goes out in as few `write` calls
//! as the kernel allows, so lines from several workers never interleave.

use std::fs::File;
use std::io::{self, Write};

use super::{os_error, SendError};

#[derive(Debug)]
pub struct FileSink {
    file: File,
    /// Bytes of the current batch already written before an error, so a retry of the same
    /// batch continues where the failed write stopped instead of duplicating lines.
    written: usize,
}

impl FileSink {
    pub fn new(file: File) -> FileSink {
        FileSink { file, written: 0 }
    }

    /// Switches to a reopened file. Lines written so far stay in the old (rotated) file.
    pub fn replace(&mut self, file: File) {
        self.file = file;
    }

    pub fn send(&mut self, batch: &[u8]) -> Result<(), SendError> {
        while self.written < batch.len() {
            match self.file.write(&batch[self.written..]) {
                Ok(0) => {
                    return Err(SendError::Retryable("write() wrote nothing".to_string()));
                }
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(SendError::Retryable(format!("write() failed ({})", os_error(&e))))
                }
            }
        }
        self.written = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn appends_batches_and_follows_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        let open = || OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let mut sink = FileSink::new(open());
        sink.send(b"{\"a\":1}\n{\"a\":2}\n").unwrap();
        std::fs::rename(&path, dir.path().join("out.ndjson.1")).unwrap();
        sink.send(b"{\"a\":3}\n").unwrap();
        sink.replace(open());
        sink.send(b"{\"a\":4}\n").unwrap();
        let rotated = std::fs::read_to_string(dir.path().join("out.ndjson.1")).unwrap();
        assert_eq!(rotated, "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":4}\n");
    }

    #[test]
    fn errors_are_retryable() {
        let dir = tempfile::tempdir().unwrap();
        let read_only = File::open(dir.path()).unwrap();
        let mut sink = FileSink::new(read_only);
        assert!(matches!(sink.send(b"x\n"), Err(SendError::Retryable(_))));
    }
}
