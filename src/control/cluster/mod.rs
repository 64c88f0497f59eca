//! Cluster mode: several proxy instances agree on one active master through etcd.

pub mod etcd;
pub mod leader;
pub mod member;
pub mod pool;
