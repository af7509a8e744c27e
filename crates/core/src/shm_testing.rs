//! Memory for the tests of the structures that live in a shared zone (the session table, the
//! denylist, the counter board): zeroed heap memory in place of a zone, and an anonymous
//! shared mapping that forked processes share as nginx's workers share a zone.

/// Zeroed, 8-aligned heap memory standing in for a zone.
pub struct Region(Vec<u64>);

impl Region {
    pub fn new(bytes: usize) -> Region {
        Region(vec![0u64; bytes.div_ceil(8)])
    }

    pub fn ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr().cast()
    }

    pub fn len(&self) -> usize {
        self.0.len() * 8
    }
}

/// An anonymous `MAP_SHARED` mapping, as nginx makes a zone before it forks its workers;
/// unmapped when dropped, so whatever views it must be dropped first.
pub struct SharedMapping {
    ptr: *mut u8,
    len: usize,
}

impl SharedMapping {
    pub fn new(len: usize) -> SharedMapping {
        // SAFETY: a fresh anonymous mapping; no memory of ours is touched.
        let ptr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        SharedMapping { ptr: ptr.cast(), len }
    }

    /// The start of the mapping: page-aligned, zeroed when new.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(), unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Runs `child(i)` in `n` forked processes, all at once, and waits for them: each must
/// return without a panic. A child leaves with `_exit`, so that the test harness's state
/// copied into it is never run down twice.
pub fn in_children(n: usize, child: impl Fn(usize)) {
    let pids: Vec<_> = (0..n)
        .map(|i| {
            // SAFETY: the child only runs `child` and leaves with _exit.
            match unsafe { libc::fork() } {
                -1 => panic!("fork: {}", std::io::Error::last_os_error()),
                0 => {
                    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child(i)));
                    // SAFETY: leave the child without unwinding into the harness.
                    unsafe { libc::_exit(if ok.is_ok() { 0 } else { 1 }) }
                }
                pid => pid,
            }
        })
        .collect();
    for pid in pids {
        let mut status = 0;
        // SAFETY: waiting for a child of ours.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert_eq!(status, 0, "child {pid} failed");
    }
}
