//! The operating system: the open-file limit, systemd notifications, and reading the
//! small files the config names.

pub mod fd_limit;
pub mod small_file;
pub mod systemd;
