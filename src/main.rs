//! The `jenkins-ha-proxy` binary: everything lives in the library; see `cli`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    jenkins_ha_proxy::cli::main()
}
