//! Handing the allocator's free memory back to the system before a load is measured. Without it, a load after
//! evictions reuses the memory they freed, the process's resident memory barely grows, and the load is measured
//! at a fraction of its cost: under churn the budget then admits several times what fits (measured: 340 versions
//! of ~1.6 MB under a 50-version budget, resident memory six times over).
#![allow(unsafe_code)]

/// Returns the allocator's free pages to the system (glibc's `malloc_trim`, over every arena); elsewhere nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only walks glibc's own heaps, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
