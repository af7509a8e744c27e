//! A spin lock that lives in memory shared between nginx worker processes.
//!
//! nginx's own `ngx_shmtx_t` cannot be used from the exporter threads (they never call nginx
//! APIs), so the shared structures carry this lock instead. The lock word holds the owner's
//! pid; a waiter that finds the owner dead (a worker killed in the middle of a critical
//! section) takes the lock over and is told so, so the structure can be repaired. Critical
//! sections are a few hundred nanoseconds with no system calls, so spinning is cheap.

use core::hint;
use core::sync::atomic::{AtomicU32, Ordering};

/// Spins before starting to yield the CPU.
const SPINS_BEFORE_YIELD: u32 = 64;
/// Yields between two checks of whether the owner is still alive.
const YIELDS_BETWEEN_OWNER_CHECKS: u32 = 1024;

/// Held lock; unlocks on drop.
pub struct ShmGuard<'a> {
    word: &'a AtomicU32,
    /// The previous owner died while holding the lock: protected data may be inconsistent.
    pub recovered: bool,
}

impl Drop for ShmGuard<'_> {
    fn drop(&mut self) {
        self.word.store(0, Ordering::Release);
    }
}

/// Locks `word` (0 = free, otherwise the owner's pid).
pub fn lock(word: &AtomicU32) -> ShmGuard<'_> {
    let me = std::process::id();
    let mut spins = 0u32;
    let mut yields = 0u32;

    loop {
        match word.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return ShmGuard { word, recovered: false },
            Err(owner) if owner != 0 => {
                if spins < SPINS_BEFORE_YIELD {
                    spins += 1;
                    hint::spin_loop();
                    continue;
                }
                std::thread::yield_now();
                yields += 1;
                if yields % YIELDS_BETWEEN_OWNER_CHECKS == 0
                    && owner != me
                    && !process_alive(owner)
                    && word
                        .compare_exchange(owner, me, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    return ShmGuard { word, recovered: true };
                }
            }
            Err(_) => hint::spin_loop(),
        }
    }
}

/// Whether a process with this pid exists (it may belong to another user).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // Miri cannot send signals; /proc answers the same question on the systems it runs on.
    if cfg!(miri) {
        return std::path::Path::new(&format!("/proc/{pid}")).exists();
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn excludes_threads() {
        // Fewer under Miri, which runs a thousand times slower.
        const ROUNDS: u64 = if cfg!(miri) { 500 } else { 20_000 };
        // A non-atomic counter: lost updates would show if the lock did not exclude.
        struct Counter(core::cell::UnsafeCell<u64>);
        // SAFETY: access to the cell is serialised by the lock under test.
        unsafe impl Sync for Counter {}

        let word = Arc::new(AtomicU32::new(0));
        let counter = Arc::new(Counter(core::cell::UnsafeCell::new(0)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let word = word.clone();
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        let _guard = lock(&word);
                        // SAFETY: the lock is held.
                        unsafe { *counter.0.get() += 1 };
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // SAFETY: all threads joined.
        assert_eq!(unsafe { *counter.0.get() }, 4 * ROUNDS);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn recovers_from_a_dead_owner() {
        // A pid that cannot exist on Linux (above PID_MAX_LIMIT).
        let dead = 4_194_305;
        assert!(!process_alive(dead));
        let word = AtomicU32::new(dead);
        let guard = lock(&word);
        assert!(guard.recovered);
        assert_eq!(word.load(Ordering::Relaxed), std::process::id());
        drop(guard);
        assert_eq!(word.load(Ordering::Relaxed), 0);
        assert!(!lock(&word).recovered);
    }

    #[test]
    fn live_processes_are_alive() {
        assert!(process_alive(std::process::id()));
        assert!(process_alive(1));
    }
}
