//! etcd-monitor-ctl as a library: the cluster view ([`cluster`]), the guards that refuse
//! risky maintenance ([`guard`]; the members' free disk from their agents: [`agents`]), the operations ([`ops`], [`snapshot`]), guarded rolling
//! defrag and NOSPACE recovery ([`defrag`]) with their `--if` rules ([`rule`]), the
//! maintenance marker the exporter reads ([`marker`]) and the rendering ([`output`]). The
//! binary ([`cli`]) and the exporter's maintenance API both call these, so both refuse the
//! same things for the same reasons.

pub mod agents;
pub mod cli;
pub mod cluster;
pub mod defrag;
pub mod guard;
pub mod maintenance;
pub mod marker;
pub mod ops;
pub mod output;
pub mod rule;
pub mod snapshot;

pub use cluster::{gather, ClusterView, MemberView, Verdict};
pub use guard::Refusal;
