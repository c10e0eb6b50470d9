//! Size, available and free bytes of the data dir's filesystem (statvfs), with its mount
//! point and type from the mount table.

use std::path::Path;

use crate::snapshot::FilesystemFacts;

/// The mount point and type of the data dir's filesystem, read once at start.
pub fn mount(data_dir: &Path) -> (String, String) {
    super::diskstats::mount_of(data_dir)
        .map(|m| (m.mount_point.to_string_lossy().into_owned(), m.fs_type))
        .unwrap_or_default()
}

pub fn collect(data_dir: &Path, mount: &(String, String)) -> Result<FilesystemFacts, String> {
    let vfs = nix::sys::statvfs::statvfs(data_dir)
        .map_err(|e| format!("statvfs {}: {e}", data_dir.display()))?;
    let frsize = vfs.fragment_size();
    let (mount_point, fs_type) = mount.clone();
    Ok(FilesystemFacts {
        mount_point,
        fs_type,
        size_bytes: vfs.blocks().saturating_mul(frsize),
        avail_bytes: vfs.blocks_available().saturating_mul(frsize),
        free_bytes: vfs.blocks_free().saturating_mul(frsize),
    })
}
