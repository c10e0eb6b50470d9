//! The etcd process: RSS, CPU seconds, open and max fds, threads. Found by PID, by a PID
//! file, or by default as the process whose command line names the data dir; found again
//! when it restarts.

use std::path::{Path, PathBuf};

use procfs::process::{LimitValue, Process};

use crate::config::EtcdProcess;
use crate::snapshot::ProcessFacts;

pub struct Finder {
    how: EtcdProcess,
    data_dir: PathBuf,
    pid: Option<i32>,
}

/// Whether `cmdline` is an etcd server started on `data_dir`.
pub fn names_data_dir(cmdline: &[String], cwd: Option<&Path>, data_dir: &Path) -> bool {
    let Some(argv0) = cmdline.first() else {
        return false;
    };
    let prog = Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !prog.starts_with("etcd") || prog.starts_with("etcd-monitor") || prog == "etcdctl" {
        return false;
    }
    cmdline.iter().skip(1).any(|arg| {
        let value = arg
            .strip_prefix("--data-dir=")
            .or_else(|| arg.strip_prefix("-data-dir="))
            .unwrap_or(arg);
        let p = Path::new(value);
        if p == data_dir {
            return true;
        }
        let joined = match cwd {
            Some(cwd) if p.is_relative() => cwd.join(p),
            _ => p.to_owned(),
        };
        std::fs::canonicalize(joined).is_ok_and(|c| c == data_dir)
    })
}

/// Whether `p` is an etcd whose environment sets `ETCD_DATA_DIR` to `data_dir`.
fn env_names_data_dir(p: &Process, cmdline: &[String], data_dir: &Path) -> bool {
    let is_etcd = cmdline
        .first()
        .is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "etcd"));
    if !is_etcd {
        return false;
    }
    let Ok(env) = p.environ() else { return false };
    env.get(std::ffi::OsStr::new("ETCD_DATA_DIR"))
        .is_some_and(|v| {
            let v = Path::new(v);
            let joined = match p.cwd() {
                Ok(cwd) if v.is_relative() => cwd.join(v),
                _ => v.to_owned(),
            };
            joined == data_dir || std::fs::canonicalize(joined).is_ok_and(|c| c == data_dir)
        })
}

impl Finder {
    pub fn new(how: EtcdProcess, data_dir: PathBuf) -> Self {
        Finder {
            how,
            data_dir,
            pid: None,
        }
    }

    fn find(&self) -> Result<i32, String> {
        match &self.how {
            EtcdProcess::Pid(pid) => Ok(*pid),
            EtcdProcess::PidFile(f) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| format!("pid file {}: {e}", f.display()))?;
                text.trim()
                    .parse::<i32>()
                    .map_err(|_| format!("pid file {}: not a PID: {:?}", f.display(), text.trim()))
            }
            EtcdProcess::ByDataDir => {
                let me = std::process::id() as i32;
                let all = procfs::process::all_processes().map_err(|e| format!("/proc: {e}"))?;
                for p in all.flatten() {
                    if p.pid == me {
                        continue;
                    }
                    let Ok(cmd) = p.cmdline() else { continue };
                    if cmd.iter().skip(1).any(|a| {
                        a.contains(
                            self.data_dir
                                .file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_default()
                                .as_str(),
                        )
                    }) && names_data_dir(&cmd, p.cwd().ok().as_deref(), &self.data_dir)
                    {
                        return Ok(p.pid);
                    }
                    // Packaged etcd (Debian's /etc/default/etcd) sets ETCD_DATA_DIR instead.
                    if env_names_data_dir(&p, &cmd, &self.data_dir) {
                        return Ok(p.pid);
                    }
                }
                Err(format!(
                    "no etcd process names the data dir {}",
                    self.data_dir.display()
                ))
            }
        }
    }

    pub fn collect(&mut self) -> Result<ProcessFacts, String> {
        let pid = match self.pid {
            Some(pid) if Process::new(pid).is_ok_and(|p| p.is_alive()) => pid,
            _ => {
                self.pid = None;
                let pid = self.find()?;
                self.pid = Some(pid);
                pid
            }
        };
        let res = read(pid);
        if res.is_err() {
            // Gone between the check and the read: look again next time.
            self.pid = None;
        }
        res
    }
}

fn read(pid: i32) -> Result<ProcessFacts, String> {
    let p = Process::new(pid).map_err(|e| format!("process {pid}: {e}"))?;
    let stat = p.stat().map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let status = p.status().map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    // Counting fds needs the same user (or root); without it the rest still counts.
    let open_fds = p.fd_count().ok().map(|n| n as u64);
    let max_fds = p
        .limits()
        .ok()
        .and_then(|l| match l.max_open_files.soft_limit {
            LimitValue::Value(v) => Some(v),
            LimitValue::Unlimited => None,
        });
    let tps = procfs::ticks_per_second() as f64;
    Ok(ProcessFacts {
        pid,
        resident_memory_bytes: status.vmrss.unwrap_or(0).saturating_mul(1024),
        cpu_seconds: (stat.utime + stat.stime) as f64 / tps,
        open_fds,
        max_fds,
        threads: stat.num_threads.max(0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn recognises_etcd_on_the_data_dir_only() {
        let dir = tempfile::tempdir().expect("dir");
        let d = std::fs::canonicalize(dir.path()).expect("canon");
        let ds = d.to_string_lossy().into_owned();
        assert!(names_data_dir(
            &v(&["/usr/bin/etcd", "--data-dir", &ds]),
            None,
            &d
        ));
        assert!(names_data_dir(
            &v(&["etcd", &format!("--data-dir={ds}")]),
            None,
            &d
        ));
        let parent = d.parent().expect("parent");
        let rel = d.file_name().expect("name").to_string_lossy().into_owned();
        assert!(names_data_dir(
            &v(&["etcd", "--data-dir", &rel]),
            Some(parent),
            &d
        ));
        assert!(!names_data_dir(
            &v(&["etcd-monitor-agent", "--data-dir", &ds]),
            None,
            &d
        ));
        assert!(!names_data_dir(
            &v(&["etcdctl", "--data-dir", &ds]),
            None,
            &d
        ));
        assert!(!names_data_dir(
            &v(&["etcd", "--data-dir", "/elsewhere"]),
            None,
            &d
        ));
        assert!(!names_data_dir(&[], None, &d));
    }

    #[test]
    fn reads_its_own_process() {
        let facts = read(std::process::id() as i32).expect("self");
        assert!(facts.resident_memory_bytes > 0);
        assert!(facts.open_fds.is_some_and(|n| n > 0));
        assert!(facts.threads >= 1);
    }
}
