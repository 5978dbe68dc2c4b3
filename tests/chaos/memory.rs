//! Memory of the test process: live heap bytes (a counting global
//! allocator, exact and blind to the allocator's caching) and resident
//! memory (`/proc/self/statm`, what the operating system sees).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap bytes allocated and not yet freed, by every thread.
pub fn live_heap() -> i64 {
    LIVE.load(Ordering::Relaxed) as i64
}

/// Resident memory in bytes: (all, anonymous). Anonymous memory (heap,
/// stacks) leaves out the pages of the executable and libraries, which
/// count once they are first run and never leave.
pub fn rss() -> (u64, u64) {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let field = |i: usize| -> u64 {
        statm
            .split_whitespace()
            .nth(i)
            .and_then(|f| f.parse().ok())
            .expect("a field of /proc/self/statm")
    };
    let (resident, shared) = (field(1), field(2));
    (resident * page_size(), (resident - shared) * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).expect("a page size")
}

/// A memory reading.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    /// Live heap bytes.
    pub heap: i64,
    /// Resident bytes.
    pub rss: u64,
    /// Anonymous resident bytes.
    pub anon: u64,
}

impl Reading {
    /// Now, after handing the allocator's free pages back to the system,
    /// so that resident memory tracks what is in use rather than what the
    /// allocator keeps cached (per-thread arenas would otherwise hold the
    /// peak of a run for good).
    pub fn now() -> Reading {
        trim();
        let (rss, anon) = rss();
        Reading {
            heap: live_heap(),
            rss,
            anon,
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks glibc's own free lists; it has no
    // preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// Bytes as MiB, for reports.
pub fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}
