//! etcd-monitor-ctl as a library: the cluster view ([`cluster`]), the guards that refuse
//! risky maintenance ([`guard`]), the operations ([`ops`], [`snapshot`]) and their
//! rendering ([`output`]); `--if` rules ([`rule`]) and the maintenance marker the exporter
//! reads ([`marker`]). The binary ([`cli`]) and the exporter's maintenance API both
//! call these, so both refuse the same things for the same reasons.

pub mod cli;
pub mod cluster;
pub mod guard;
pub mod marker;
pub mod ops;
pub mod output;
pub mod rule;
pub mod snapshot;

pub use cluster::{gather, ClusterView, MemberView, Verdict};
pub use guard::Refusal;
