//! Shared by both benches: child processes, /proc readings, the proxies under test and
//! their configs, a blocking readiness client, Markdown reports, a few system calls.
#![allow(dead_code)] // each bench binary uses a different part

pub mod child;
pub mod http;
pub mod master;
pub mod peers;
pub mod procfs;
pub mod report;
pub mod sys;
pub mod wrk;

/// `BENCH_SMOKE=1`: a few seconds, our proxy only, no peers or wrk needed (CI).
pub fn smoke() -> bool {
    std::env::var("BENCH_SMOKE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `BENCH_RUNS=N` overrides how many times each configuration runs.
pub fn runs(default: usize) -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}
