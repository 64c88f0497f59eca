//! The `jenkins-ha-proxy` binary: everything lives in the library; see `cli`.
#![forbid(unsafe_code)]

// jemalloc, with background threads that give freed pages back to the system within
// about ten seconds. With glibc's allocator every proxy worker thread has an arena of
// its own, and pages freed in the middle of an arena stay resident: 4 bursts of 5,000
// idle client connections left the daemon at 150, 192, 209 and 217 MiB, where
// malloc_trim(0) (called from gdb) brought it back to 24 MiB, so it was the allocator
// keeping pages, not a leak. With jemalloc the same bursts come back to 17 MiB 12 s
// after the last one (tests/memory.rs). Under wrk -c64 and -c256, in alternating runs,
// it held 1-3 MiB more at peak and served as many requests; an idle client connection
// costs 25 KiB instead of 20 (benches/RESULTS.md). An earlier measurement of
// mimalloc (38 MiB at peak under wrk -c256, growing while streaming 1 GiB) is why
// that one is not used.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    jenkins_ha_proxy::cli::main()
}
