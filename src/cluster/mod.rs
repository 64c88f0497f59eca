//! Cluster mode: several proxy instances agree on one active master through etcd.

pub mod etcd;
