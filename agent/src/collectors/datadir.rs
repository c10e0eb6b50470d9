//! Bytes used by the data dir: the blocks allocated to its files, like `du`. etcd
//! preallocates WAL files, so this is what the disk really holds for the member.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Stops a runaway walk (a data dir holds a handful of files).
const MAX_ENTRIES: usize = 100_000;

pub fn collect(data_dir: &Path) -> Result<u64, String> {
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut stack = vec![data_dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
        for entry in entries {
            seen += 1;
            if seen > MAX_ENTRIES {
                return Err(format!(
                    "more than {MAX_ENTRIES} entries under {}",
                    data_dir.display()
                ));
            }
            // A file removed while walking (WAL rotation) is not an error.
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total = total.saturating_add(meta.blocks().saturating_mul(512));
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_allocated_bytes_of_nested_files() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir_all(dir.path().join("member/wal")).expect("mkdir");
        std::fs::write(dir.path().join("member/wal/0.wal"), vec![1u8; 100_000]).expect("write");
        let used = super::collect(dir.path()).expect("collect");
        assert!(used >= 100_000, "{used}");
        assert!(super::collect(&dir.path().join("missing")).is_err());
    }
}
