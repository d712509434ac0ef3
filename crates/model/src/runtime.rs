//! Process-level settings that make CPU training and decoding faster.
//!
//! A training step allocates and frees hundreds of tensors of a few megabytes. glibc serves blocks
//! above its mmap threshold with fresh `mmap`s and gives them back on free, so every step pays for
//! page faults and for the kernel zeroing the same memory again (about an eighth of the CPU time
//! of a `tiny` training step, measured). [`tune_allocator`] keeps such blocks in the heap instead.

/// Makes glibc serve every block from its heap (no per-block `mmap`) and stops it trimming the
/// heap, so tensor buffers are reused rather than returned to the kernel. Idempotent and cheap; the
/// training loops and the benchmarks call it. A no-op on other platforms and allocators.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // Safety: mallopt only adjusts allocator parameters; it is thread-safe in glibc.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        }
    }
}
