//! The disk spool of `spool=DIR`: batches that could not be delivered wait here.
//!
//! Each worker spools into its own directory `DIR/<pid>/`, held with an advisory lock for
//! the life of the worker. A batch is one file, written under a temporary name, synced and
//! renamed, so a worker killed mid-write leaves either a whole batch or a temporary file
//! that is discarded. Each file starts with a header carrying its record count and a CRC32
//! of the payload; a file that fails the check is dropped and counted, never replayed.
//!
//! File names start with the spool time, so sorting by name replays the oldest batch first.
//! When a worker exits with batches left (the receiver was still down), another worker finds
//! the directory unlocked and adopts its batches.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"APISPL01";
/// magic, record count (u64), payload length (u64), CRC32 of the payload (u32).
const HEADER_LEN: usize = 8 + 8 + 8 + 4;
const SUFFIX: &str = ".batch";
const TEMP_PREFIX: &str = "tmp-";
const LOCK_FILE: &str = "lock";

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    records: u64,
    bytes: u64,
}

/// A batch read back from the spool.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    Batch {
        payload: Vec<u8>,
        records: u64,
    },
    /// The file was damaged; its records are lost.
    Corrupt {
        records: u64,
        reason: String,
    },
}

#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    dir: PathBuf,
    /// Keeps our directory locked while the worker lives.
    _lock: File,
    queue: VecDeque<Entry>,
    bytes: u64,
    max_bytes: u64,
    pid: u32,
    counter: u64,
}

fn try_lock(file: &File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

impl Spool {
    /// Opens this worker's spool directory under `root`, creating it.
    pub fn open(root: &Path, max_bytes: u64, pid: u32) -> io::Result<Spool> {
        let dir = root.join(pid.to_string());
        fs::create_dir_all(&dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        if !try_lock(&lock)? {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("spool directory \"{}\" is locked by another process", dir.display()),
            ));
        }
        let mut spool = Spool {
            root: root.to_path_buf(),
            dir,
            _lock: lock,
            queue: VecDeque::new(),
            bytes: 0,
            max_bytes,
            pid,
            counter: 0,
        };
        // A directory left by an earlier process with our pid: take what it holds.
        let dir = spool.dir.clone();
        spool.collect(&dir)?;
        Ok(spool)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Records currently spooled.
    pub fn records(&self) -> u64 {
        self.queue.iter().map(|e| e.records).sum()
    }

    /// Adds the batch files of `dir` to the queue (moving them into ours if `dir` is
    /// another's) and returns how many records they hold. Temporary files are removed.
    fn collect(&mut self, dir: &Path) -> io::Result<u64> {
        let mut records = 0;
        for item in fs::read_dir(dir)? {
            let item = item?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TEMP_PREFIX) {
                let _ = fs::remove_file(item.path());
                continue;
            }
            if !name.ends_with(SUFFIX) {
                continue;
            }
            let mut path = item.path();
            if dir != self.dir {
                let target = self.dir.join(name);
                fs::rename(&path, &target)?;
                path = target;
            }
            let (count, bytes) = match read_header(&path) {
                Ok(header) => header,
                // Damaged beyond its header: replay will count and drop it.
                Err(_) => (0, item.metadata().map(|m| m.len()).unwrap_or(0)),
            };
            records += count;
            self.bytes += bytes;
            self.queue.push_back(Entry { path, records: count, bytes });
        }
        self.queue.make_contiguous().sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
        Ok(records)
    }

    /// Takes over the spools of workers that have exited. Returns the records adopted.
    pub fn adopt_orphans(&mut self) -> io::Result<u64> {
        let mut adopted = 0;
        for item in fs::read_dir(&self.root)? {
            let item = item?;
            let path = item.path();
            if path == self.dir || !item.file_type()?.is_dir() {
                continue;
            }
            let Ok(lock) = OpenOptions::new().write(true).open(path.join(LOCK_FILE)) else {
                continue;
            };
            if !try_lock(&lock)? {
                continue;
            }
            adopted += self.collect(&path)?;
            fs::remove_file(path.join(LOCK_FILE))?;
            drop(lock);
            fs::remove_dir(&path)?;
        }
        Ok(adopted)
    }

    /// Writes a batch. Returns the record counts of the oldest batches removed to stay
    /// within `spool_max`.
    pub fn push(&mut self, payload: &[u8], records: u64) -> io::Result<Vec<u64>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        self.counter += 1;
        let name = format!("{now:016x}-{:08x}-{:08x}{SUFFIX}", self.pid, self.counter);
        let temp = self.dir.join(format!("{TEMP_PREFIX}{name}"));
        let path = self.dir.join(&name);

        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&records.to_le_bytes());
        header[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        header[24..28].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());

        let mut file = File::create(&temp)?;
        let written = file.write_all(&header).and_then(|_| file.write_all(payload));
        if let Err(e) =
            written.and_then(|_| file.sync_data()).and_then(|_| fs::rename(&temp, &path))
        {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }

        let bytes = (HEADER_LEN + payload.len()) as u64;
        self.bytes += bytes;
        self.queue.push_back(Entry { path, records, bytes });

        let mut evicted = Vec::new();
        while self.bytes > self.max_bytes && self.queue.len() > 1 {
            let oldest = self.queue.pop_front().expect("non-empty");
            let _ = fs::remove_file(&oldest.path);
            self.bytes -= oldest.bytes;
            evicted.push(oldest.records);
        }
        Ok(evicted)
    }

    /// Reads the oldest batch, verifying it.
    pub fn front(&self) -> Option<io::Result<Replay>> {
        let entry = self.queue.front()?;
        Some(read_batch(&entry.path, entry.records))
    }

    /// Removes the oldest batch (delivered or corrupt).
    pub fn pop_front(&mut self) -> io::Result<()> {
        if let Some(entry) = self.queue.pop_front() {
            self.bytes -= entry.bytes;
            fs::remove_file(&entry.path)?;
        }
        Ok(())
    }
}

fn read_header(path: &Path) -> io::Result<(u64, u64)> {
    let mut header = [0u8; HEADER_LEN];
    File::open(path)?.read_exact(&mut header)?;
    if &header[..8] != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad magic"));
    }
    let records = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let len = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    Ok((records, HEADER_LEN as u64 + len))
}

fn read_batch(path: &Path, records: u64) -> io::Result<Replay> {
    let data = fs::read(path)?;
    let corrupt = |reason: &str| Ok(Replay::Corrupt { records, reason: reason.to_string() });
    if data.len() < HEADER_LEN || &data[..8] != MAGIC {
        return corrupt("bad header");
    }
    let len = u64::from_le_bytes(data[16..24].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(data[24..28].try_into().expect("4 bytes"));
    let payload = &data[HEADER_LEN..];
    if payload.len() as u64 != len {
        return corrupt("length mismatch");
    }
    if crc32fast::hash(payload) != crc {
        return corrupt("checksum mismatch");
    }
    Ok(Replay::Batch { payload: payload.to_vec(), records })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u64) -> Vec<u8> {
        (0..n).map(|i| format!("{{\"seq\":{i}}}\n")).collect::<String>().into_bytes()
    }

    #[test]
    fn replays_oldest_first_and_survives_reopen() {
        let root = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(root.path(), 1 << 20, 100).unwrap();
        spool.push(&batch(2), 2).unwrap();
        spool.push(b"second\n", 1).unwrap();
        assert_eq!(spool.records(), 3);
        assert_eq!(
            spool.front().unwrap().unwrap(),
            Replay::Batch { payload: batch(2), records: 2 }
        );
        drop(spool);

        // A new process with the same pid (pids are reused) finds the batches again.
        let mut spool = Spool::open(root.path(), 1 << 20, 100).unwrap();
        assert_eq!(spool.records(), 3);
        spool.pop_front().unwrap();
        assert_eq!(
            spool.front().unwrap().unwrap(),
            Replay::Batch { payload: b"second\n".to_vec(), records: 1 }
        );
        spool.pop_front().unwrap();
        assert!(spool.is_empty() && spool.front().is_none());
    }

    #[test]
    fn full_spool_drops_the_oldest_batches() {
        let root = tempfile::tempdir().unwrap();
        let one = (HEADER_LEN + batch(10).len()) as u64;
        let mut spool = Spool::open(root.path(), one * 3, 1).unwrap();
        for _ in 0..3 {
            assert!(spool.push(&batch(10), 10).unwrap().is_empty());
        }
        assert_eq!(spool.push(&batch(10), 10).unwrap(), [10]);
        assert_eq!(spool.records(), 30);
    }

    #[test]
    fn damaged_batches_are_reported_not_replayed() {
        let root = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(root.path(), 1 << 20, 1).unwrap();
        spool.push(&batch(4), 4).unwrap();
        let path = &spool.queue[0].path;
        let mut bytes = fs::read(path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x20;
        fs::write(path, &bytes).unwrap();
        match spool.front().unwrap().unwrap() {
            Replay::Corrupt { records, reason } => {
                assert_eq!(records, 4);
                assert_eq!(reason, "checksum mismatch");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn temporary_files_of_a_killed_writer_are_discarded() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("7")).unwrap();
        fs::write(root.path().join("7").join("tmp-0001.batch"), b"half a batch").unwrap();
        let spool = Spool::open(root.path(), 1 << 20, 7).unwrap();
        assert!(spool.is_empty());
        assert!(!root.path().join("7").join("tmp-0001.batch").exists());
    }

    #[test]
    fn adopts_only_unlocked_spools() {
        let root = tempfile::tempdir().unwrap();
        let mut exited = Spool::open(root.path(), 1 << 20, 1).unwrap();
        exited.push(&batch(3), 3).unwrap();
        let mut running = Spool::open(root.path(), 1 << 20, 2).unwrap();
        running.push(&batch(5), 5).unwrap();
        let mut me = Spool::open(root.path(), 1 << 20, 3).unwrap();
        // flock is per open file description: a separate open in this process still
        // conflicts, as another process would.
        assert_eq!(me.adopt_orphans().unwrap(), 0);
        drop(exited);
        assert_eq!(me.adopt_orphans().unwrap(), 3);
        assert!(!root.path().join("1").exists());
        assert!(root.path().join("2").exists());
        assert_eq!(me.records(), 3);
        assert_eq!(me.front().unwrap().unwrap(), Replay::Batch { payload: batch(3), records: 3 });
    }
}
