//! The `jenkins-ha-proxy` binary: everything lives in the library; see `cli`.
#![forbid(unsafe_code)]

/// A proxy allocates and frees small buffers on every request from several threads;
/// glibc's allocator showed up at ~14% of CPU (with lock waits) in a profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    jenkins_ha_proxy::cli::main()
}
