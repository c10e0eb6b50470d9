//! Disk I/O of the block device behind the data dir, from `/proc/diskstats`.
//!
//! The device is found through the mount table: the mount holding the data dir gives a
//! `major:minor`; when that is not a block device listed in `/proc/diskstats` (btrfs and
//! some others use anonymous device numbers) the mount source, if it is a `/dev/` node,
//! gives it instead. Partitions and device-mapper devices have their own lines and are
//! reported as themselves. Filesystems without a block device (overlay, tmpfs, NFS) make
//! this collector unavailable; the others carry on.

use std::path::Path;

use procfs::process::MountInfo;
use procfs::Current;

use crate::snapshot::DiskFacts;

/// The kernel counts sectors of 512 bytes in `/proc/diskstats`, whatever the device.
const SECTOR: u64 = 512;

/// The device found at start, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskDevice {
    Found {
        name: String,
        major: i32,
        minor: i32,
    },
    Unavailable(String),
}

/// The mount that holds `path` (longest mount point that is a prefix of it).
pub fn mount_of(path: &Path) -> Option<MountInfo> {
    let me = procfs::process::Process::myself().ok()?;
    let infos = me.mountinfo().ok()?;
    infos
        .0
        .into_iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
}

fn parse_majmin(s: &str) -> Option<(i32, i32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl DiskDevice {
    pub fn resolve(data_dir: &Path) -> Self {
        let Some(mount) = mount_of(data_dir) else {
            return DiskDevice::Unavailable(format!("no mount found for {}", data_dir.display()));
        };
        let stats = match procfs::DiskStats::current() {
            Ok(s) => s.0,
            Err(e) => return DiskDevice::Unavailable(format!("/proc/diskstats: {e}")),
        };
        let find = |major: i32, minor: i32| {
            stats
                .iter()
                .find(|d| d.major == major && d.minor == minor)
                .map(|d| DiskDevice::Found {
                    name: d.name.clone(),
                    major,
                    minor,
                })
        };
        if let Some(found) = parse_majmin(&mount.majmin).and_then(|(a, b)| find(a, b)) {
            return found;
        }
        if let Some(source) = mount
            .mount_source
            .as_deref()
            .filter(|s| s.starts_with("/dev/"))
        {
            if let Ok(st) = nix::sys::stat::stat(source) {
                let major = nix::sys::stat::major(st.st_rdev) as i32;
                let minor = nix::sys::stat::minor(st.st_rdev) as i32;
                if let Some(found) = find(major, minor) {
                    return found;
                }
            }
        }
        DiskDevice::Unavailable(format!(
            "the {} filesystem at {} has no block device in /proc/diskstats",
            mount.fs_type,
            mount.mount_point.display()
        ))
    }

    pub fn collect(&self) -> Result<DiskFacts, String> {
        let (name, major, minor) = match self {
            DiskDevice::Found { name, major, minor } => (name, *major, *minor),
            DiskDevice::Unavailable(why) => return Err(format!("unavailable: {why}")),
        };
        let stats = procfs::DiskStats::current().map_err(|e| format!("/proc/diskstats: {e}"))?;
        let d = stats
            .0
            .into_iter()
            .find(|d| d.major == major && d.minor == minor)
            .ok_or_else(|| format!("device {name} ({major}:{minor}) left /proc/diskstats"))?;
        Ok(DiskFacts {
            device: name.clone(),
            reads_completed: d.reads,
            writes_completed: d.writes,
            read_bytes: d.sectors_read.saturating_mul(SECTOR),
            written_bytes: d.sectors_written.saturating_mul(SECTOR),
            io_time_seconds: d.time_in_progress as f64 / 1e3,
            io_time_weighted_seconds: d.weighted_time_in_progress as f64 / 1e3,
            io_now: d.in_progress,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majmin_parses() {
        assert_eq!(parse_majmin("254:1"), Some((254, 1)));
        assert_eq!(parse_majmin("x"), None);
    }

    #[test]
    fn tmpfs_has_no_block_device() {
        // /dev/shm is tmpfs on Linux.
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            let d = DiskDevice::resolve(shm);
            assert!(matches!(d, DiskDevice::Unavailable(_)), "{d:?}");
            assert!(d.collect().is_err());
        }
    }
}
