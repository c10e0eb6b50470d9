//! etcd-monitor-bench: load an etcd cluster from CI and report like etcd's benchmark
//! tool. The benchmark is a library ([`run::run`]) so the exporter can run it too; the
//! command line is [`cli::main`].

pub mod cli;
pub mod params;
pub mod push;
pub mod report;
pub mod run;

pub use params::{Args, Params};
pub use run::{run, Report};
