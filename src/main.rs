//! The `jenkins-ha-proxy` binary: everything lives in the library; see `cli`.
#![forbid(unsafe_code)]

// The system allocator, on purpose. With one single-threaded runtime per proxy worker
// (nothing on the request path is freed on another thread), mimalloc no longer brought
// more requests/s (wrk -c64: 77.6k vs 78.9k with glibc) but held 38 MiB at peak under
// wrk -c256 (glibc: 26 MiB) and grew 11 MiB while streaming 1 GiB (glibc: 0).

fn main() -> std::process::ExitCode {
    jenkins_ha_proxy::cli::main()
}
