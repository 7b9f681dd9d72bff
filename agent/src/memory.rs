//! Memory given back after large operations. An import or a pull moves
//! hundreds of megabytes through buffers on several threads; glibc's
//! allocator keeps what they freed in per-thread arenas, so an idle agent
//! stayed at twice its size after one. Once such an operation ends, the
//! free pages of every arena go back to the system (bench/README.md, load),
//! and so do they every half minute.

/// How often an agent gives back what its allocator holds free: after a
/// burst of calls (100 clients polling, then quiet) the peak is not kept.
pub const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Every [`TRIM_INTERVAL`], [`trim`] (on a blocking thread; it takes a few
/// milliseconds at most).
pub async fn trim_now_and_then() {
    loop {
        tokio::time::sleep(TRIM_INTERVAL).await;
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

/// Keep glibc to one arena (its default is eight per core): threads that
/// come and go (the runtime's blocking pool) each took one, and every arena
/// kept its own free and fragmented pages; a soak of 1,000 run and exec
/// cycles grew the agent by 2.4 MB with the default and 0.8 MB with two.
/// After bench/load.sh's loads (5.8 MB in use), two arenas left 14.4 MB of
/// the heap resident, one 12.7 MB, at the same throughput: each thread's
/// cache (tcache) takes most allocations without the arena's lock. Called
/// first thing, before any thread starts.
pub fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    // SAFETY: mallopt takes two integers and changes a setting of the
    // allocator under its own lock.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Return the allocator's free memory to the system (glibc's `malloc_trim`).
pub fn trim() {
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes no pointer and only walks the allocator's own
    // free lists under its locks; it is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
