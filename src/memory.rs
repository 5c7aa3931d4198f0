//! The daemon's allocator settings.
//!
//! A D-Bus message stays in memory until it is answered, and the bus lets a message be up to
//! 32 MiB. glibc's malloc serves a block of 128 KiB or more with `mmap` and unmaps it when it
//! is freed — but after such a block is freed it raises that threshold to the block's size
//! (up to 32 MiB), so every later large message lands on the heap, whose freed memory glibc
//! keeps. One flood of large calls would leave the agent tens of MiB larger for good
//! (measured: 26 MiB idle, 58 MiB after 16 × 31 MiB `Inhibit` calls; see docs/benchmarks.md).
//! Setting the threshold explicitly turns that adjustment off: large blocks always go back to
//! the system when freed.

/// Blocks of at least this size are mapped on their own and returned when freed (glibc's
/// initial threshold, kept fixed).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Applies the settings; call once, first thing in `main`.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's parameters; it is called before any other
        // thread exists.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        if ok != 1 {
            eprintln!("ssu-agent: cannot set malloc's mmap threshold");
        }
    }
}
