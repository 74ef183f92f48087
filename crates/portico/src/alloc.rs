//! The global allocator: mimalloc, called the way the C library is fastest.
//!
//! The `mimalloc` crate's adapter passes every Rust allocation to `mi_malloc_aligned`, even
//! when the alignment asked for is one every mimalloc block has anyway. In mimalloc 3 that
//! call takes a fast path only for blocks up to 1 KiB that happen to be free at the right
//! place; anything larger whose size is not a power of two goes through an over-allocating
//! slow path. Measured under callgrind (docs/benchmarks.md): ~1,150 instructions per proxied
//! request were spent there, 140 per header-map allocation, ~400 for one boxed future.
//!
//! mimalloc aligns every block to at least 16 bytes (two machine words, `MI_MAX_ALIGN_SIZE`,
//! what C's `malloc` must honour), so a layout asking for no more than that — nearly every
//! Rust type — is served by plain `mi_malloc`, and only over-aligned layouts pay for the
//! aligned call. This is what the standard library's `System` allocator does with
//! `malloc` for the same reason.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every block from `mi_malloc` has (x86-64 and aarch64: 16 bytes).
const MIN_ALIGN: usize = 16;

pub struct Mimalloc;

/// `true` when plain `mi_malloc` of `layout.size()` bytes is aligned enough. The size check
/// matters for tiny layouts: an 8-byte block from the 8-byte size class is only 8-aligned.
#[inline(always)]
fn plain(layout: &Layout) -> bool {
    layout.align() <= MIN_ALIGN && layout.align() <= layout.size()
}

// SAFETY: every pointer handed out comes from mimalloc and is freed by `mi_free`, which
// accepts blocks from both the plain and the aligned calls; alignment is as the layout asks
// (see `plain`).
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation calls have no preconditions beyond a power-of-two
        // alignment, which `Layout` guarantees.
        unsafe {
            if plain(&layout) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(&layout) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new block keeps the
        // layout's alignment, plain when the new size still allows it.
        unsafe {
            if layout.align() <= MIN_ALIGN && layout.align() <= new_size {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size and alignment a program asks for comes back aligned as asked, including
    /// after growing and shrinking; freeing works for blocks from either call.
    #[test]
    fn blocks_are_aligned_as_asked() {
        let a = Mimalloc;
        for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [
                1usize, 7, 8, 9, 16, 24, 40, 100, 1000, 1344, 2760, 5000, 70_000,
            ] {
                let size = size.max(align).next_multiple_of(align);
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; every block is freed with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xA5, size);
                    let bigger = a.realloc(p, layout, size * 3);
                    assert_eq!(bigger as usize % align, 0, "grown {size} align {align}");
                    assert_eq!(*bigger.add(size - 1), 0xA5, "contents kept");
                    let smaller = a.realloc(
                        bigger,
                        Layout::from_size_align(size * 3, align).unwrap(),
                        align,
                    );
                    assert_eq!(smaller as usize % align, 0, "shrunk {size} align {align}");
                    a.dealloc(smaller, Layout::from_size_align(align, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}

/// Seconds since start, counted by a thread of its own (`start_ticker`).
static TICK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    /// The tick at which this thread last gave memory back.
    static COLLECTED: std::cell::Cell<u64> = const { std::cell::Cell::new(u64::MAX) };
}

/// Starts the clock `on_park` reads: an atomic a second, so that parking costs one load.
pub fn start_ticker() {
    let _ = std::thread::Builder::new()
        .name("portico-alloc".into())
        .spawn(|| {
            loop {
                #[allow(clippy::disallowed_methods)] // this thread's own, not a tokio worker's
                std::thread::sleep(std::time::Duration::from_secs(1));
                TICK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
}

/// Called by each runtime thread as it goes idle. mimalloc returns freed pages to the system
/// only from the thread that owns them, while it allocates or frees: a worker that freed a
/// spike's memory (a burst of stalled clients, closed) and then sat idle kept it all, and the
/// process's RSS never came down. Collecting when a thread parks, at most once a second,
/// gives it back within about a second of the thread going quiet.
pub fn on_park() {
    let now = TICK.load(std::sync::atomic::Ordering::Relaxed);
    COLLECTED.with(|c| {
        if c.get() != now {
            c.set(now);
            // SAFETY: no preconditions; collects this thread's heap only.
            unsafe { mi::mi_collect(false) };
        }
    });
}
