//! The C allocator's settings for tensor work.
//!
//! libtorch allocates CPU tensors with `malloc`. glibc serves blocks above 32 MiB with a fresh
//! `mmap` and unmaps them on `free`, so every large temporary of a bound computation (the
//! `[B, rows, inputs]` coefficient matrices of exact CROWN are 80-160 MiB) costs page faults and
//! zeroing by the kernel, every step: `certlab bench --bounds` spent as much time in the kernel
//! as in user code. Keeping freed memory in the process (one arena, no `mmap` for big blocks,
//! no trimming) halves the time of the exact bounds. The price is that the resident size stays
//! at its peak, which a training run reaches again on its next step anyway.

/// Applies the settings; call first thing in `main`, before any thread starts (the one-arena
/// setting only holds for threads whose first allocation comes after it). Idempotent. No-op
/// outside glibc, and when `CERTLAB_MALLOC=default` is set (to compare).
pub fn tune() {
    if std::env::var("CERTLAB_MALLOC").is_ok_and(|v| v == "default") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is thread-safe and has no
    // memory-safety preconditions.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
