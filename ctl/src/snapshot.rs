//! Snapshots: saving one from a member and reading one back.
//!
//! Constraints: a saved file is either complete and checked or absent, so the stream goes
//! to `FILE.part`, is checked, fsynced and only then renamed to `FILE` (and the directory
//! fsynced). The member sends its bbolt database followed by a 32-byte SHA-256 of the
//! bytes before it; that trailer stays in the file, as `etcdctl snapshot save` leaves it
//! (`etcdctl snapshot restore` checks it).
//!
//! `status` reads the bbolt file itself, like `etcdctl snapshot status`: the revision is
//! the main revision of the last key in the `key` bucket, the key count covers every
//! bucket, the hash is CRC-32C over bucket names, keys and values in order, and the size
//! is the database's high-water page times the page size. The reader below knows only
//! what that needs of bbolt's format: the two meta pages, branch and leaf pages, and
//! inline buckets; every offset is bounds-checked, a damaged file is an error.

use std::path::{Path, PathBuf};

use common::etcd::{error_chain, EtcdConfig};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::cluster::ClusterView;

const SHA256_LEN: usize = 32;

/// What `snapshot status` reports (the fields of `etcdctl snapshot status -w json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotStatus {
    pub hash: u32,
    pub revision: i64,
    pub total_key: u64,
    pub total_size: u64,
    /// Whether the file ends in the member's SHA-256 trailer (checked when present).
    pub sha256_trailer: bool,
}

/// A saved snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Saved {
    pub file: PathBuf,
    pub member: String,
    pub endpoint: String,
    pub bytes: u64,
    pub status: SnapshotStatus,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no healthy member to take the snapshot from")]
    NoMember,
    #[error("{endpoint}: {message}")]
    Etcd { endpoint: String, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: SHA-256 trailer does not match the data: the snapshot is damaged", path.display())]
    HashMismatch { path: PathBuf },
    #[error("{}: not an etcd snapshot: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The member to take a snapshot from: a follower that answers, else the leader.
pub fn pick_member(view: &ClusterView) -> Option<(String, String)> {
    let leader = view.leader();
    let up = view
        .members
        .iter()
        .filter(|m| m.is_up() && !m.info.is_learner);
    let mut best = None;
    for m in up {
        let Some(ep) = m.endpoint.clone() else {
            continue;
        };
        if Some(m.info.id) != leader {
            return Some((m.label(), ep));
        }
        best = Some((m.label(), ep));
    }
    best
}

/// Streams a snapshot from the member at `endpoint` (called `member`) into `file`.
pub async fn save(
    cfg: &EtcdConfig,
    member: &str,
    endpoint: &str,
    file: &Path,
) -> Result<Saved, SnapshotError> {
    let etcd = |e: etcd_client::Error| SnapshotError::Etcd {
        endpoint: endpoint.to_owned(),
        message: error_chain(&e),
    };
    let mut part = file.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let mut client = cfg.connect(endpoint).await.map_err(etcd)?;
    let mut stream = client.snapshot().await.map_err(etcd)?;
    let mut out = tokio::fs::File::create(&part).await.map_err(io(&part))?;
    let result = async {
        let mut bytes = 0u64;
        while let Some(msg) = stream.message().await.map_err(etcd)? {
            out.write_all(msg.blob()).await.map_err(io(&part))?;
            bytes += msg.blob().len() as u64;
        }
        out.flush().await.map_err(io(&part))?;
        out.sync_all().await.map_err(io(&part))?;
        Ok::<_, SnapshotError>(bytes)
    }
    .await;
    drop(out);
    let checked = match result {
        Ok(bytes) => {
            let p = part.clone();
            tokio::task::spawn_blocking(move || status(&p).map(|s| (bytes, s)))
                .await
                .unwrap_or_else(|e| {
                    Err(SnapshotError::Io {
                        path: part.clone(),
                        source: std::io::Error::other(e),
                    })
                })
        }
        Err(e) => Err(e),
    };
    let (bytes, status) = match checked {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    if !status.sha256_trailer {
        let _ = std::fs::remove_file(&part);
        return Err(SnapshotError::Format {
            path: file.to_owned(),
            reason: "the member sent no SHA-256 trailer".into(),
        });
    }
    tokio::fs::rename(&part, file).await.map_err(io(file))?;
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if let Ok(d) = std::fs::File::open(&dir) {
        d.sync_all().map_err(io(&dir))?;
    }
    Ok(Saved {
        file: file.to_owned(),
        member: member.to_owned(),
        endpoint: endpoint.to_owned(),
        bytes,
        status,
    })
}

/// Reads a snapshot file: checks its SHA-256 trailer when it has one, then reads the bbolt
/// database for the revision, keys, hash and size.
pub fn status(path: &Path) -> Result<SnapshotStatus, SnapshotError> {
    let data = std::fs::read(path).map_err(io(path))?;
    let format = |reason: String| SnapshotError::Format {
        path: path.to_owned(),
        reason,
    };
    // etcd's own test: a trailer is there when the rest is whole 512-byte blocks.
    let has_trailer = data.len() > SHA256_LEN && (data.len() - SHA256_LEN).is_multiple_of(512);
    let db = if has_trailer {
        let (db, sum) = data.split_at(data.len() - SHA256_LEN);
        let digest = ring::digest::digest(&ring::digest::SHA256, db);
        if digest.as_ref() != sum {
            return Err(SnapshotError::HashMismatch {
                path: path.to_owned(),
            });
        }
        db
    } else {
        &data[..]
    };
    let s = bolt::read(db).map_err(format)?;
    Ok(SnapshotStatus {
        hash: s.hash,
        revision: s.revision,
        total_key: s.total_key,
        total_size: s.total_size,
        sha256_trailer: has_trailer,
    })
}

/// Just enough of bbolt to walk every bucket in key order.
mod bolt {
    const MAGIC: u32 = 0xED0C_DAED;
    const PAGE_HEADER: usize = 16;
    const BRANCH: u16 = 0x01;
    const LEAF: u16 = 0x02;
    const BUCKET_LEAF: u32 = 0x01;
    const ELEMENT: usize = 16;

    pub struct Summary {
        pub hash: u32,
        pub revision: i64,
        pub total_key: u64,
        pub total_size: u64,
    }

    fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
        b.get(at..at + 2)
            .and_then(|s| s.try_into().ok())
            .map(u16::from_le_bytes)
            .ok_or_else(|| format!("truncated at byte {at}"))
    }

    fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
        b.get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| format!("truncated at byte {at}"))
    }

    fn u64_at(b: &[u8], at: usize) -> Result<u64, String> {
        b.get(at..at + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| format!("truncated at byte {at}"))
    }

    fn slice(b: &[u8], at: usize, len: usize) -> Result<&[u8], String> {
        b.get(at..at.checked_add(len).ok_or("offset overflow")?)
            .ok_or_else(|| format!("truncated at byte {at}"))
    }

    struct Meta {
        page_size: usize,
        root: u64,
        high_water: u64,
        txid: u64,
    }

    fn fnv64a(bytes: &[u8]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    fn meta(db: &[u8], at: usize) -> Result<Meta, String> {
        let m = at + PAGE_HEADER;
        if u32_at(db, m)? != MAGIC {
            return Err("bad magic in meta page".into());
        }
        if u32_at(db, m + 4)? != 2 {
            return Err("unsupported bbolt version".into());
        }
        if fnv64a(slice(db, m, 56)?) != u64_at(db, m + 56)? {
            return Err("meta page checksum mismatch".into());
        }
        Ok(Meta {
            page_size: u32_at(db, m + 8)? as usize,
            root: u64_at(db, m + 16)?,
            high_water: u64_at(db, m + 40)?,
            txid: u64_at(db, m + 48)?,
        })
    }

    /// A page: its bytes from the header on (for inline buckets, a value's bytes).
    struct Walker<'a> {
        db: &'a [u8],
        page_size: usize,
        depth: usize,
    }

    impl<'a> Walker<'a> {
        fn page(&self, id: u64) -> Result<&'a [u8], String> {
            let at = usize::try_from(id)
                .ok()
                .and_then(|i| i.checked_mul(self.page_size))
                .ok_or("page id overflow")?;
            self.db
                .get(at..)
                .ok_or_else(|| format!("page {id} beyond the end of the file"))
        }

        /// Calls `f(key, value, is_bucket)` for every element under `page`, in key order.
        fn walk(
            &mut self,
            page: &'a [u8],
            f: &mut dyn FnMut(&'a [u8], &'a [u8], bool) -> Result<(), String>,
        ) -> Result<(), String> {
            self.depth += 1;
            if self.depth > 64 {
                return Err("page tree too deep (a cycle?)".into());
            }
            let flags = u16_at(page, 8)?;
            let count = usize::from(u16_at(page, 10)?);
            for i in 0..count {
                let e = PAGE_HEADER + i * ELEMENT;
                if flags & BRANCH != 0 {
                    let pos = u32_at(page, e)? as usize;
                    let _ksize = u32_at(page, e + 4)?;
                    let _ = pos;
                    let child = u64_at(page, e + 8)?;
                    let child = self.page(child)?;
                    self.walk(child, f)?;
                } else if flags & LEAF != 0 {
                    let eflags = u32_at(page, e)?;
                    let pos = u32_at(page, e + 4)? as usize;
                    let ksize = u32_at(page, e + 8)? as usize;
                    let vsize = u32_at(page, e + 12)? as usize;
                    let k = slice(page, e + pos, ksize)?;
                    let v = slice(page, e + pos + ksize, vsize)?;
                    f(k, v, eflags & BUCKET_LEAF != 0)?;
                } else {
                    return Err(format!("unexpected page type {flags:#x}"));
                }
            }
            self.depth -= 1;
            Ok(())
        }

        /// The root page of the bucket whose header is `value`.
        fn bucket_root(&self, value: &'a [u8]) -> Result<&'a [u8], String> {
            let root = u64_at(value, 0)?;
            if root == 0 {
                // Inline bucket: its page follows the 16-byte bucket header.
                value
                    .get(16..)
                    .ok_or_else(|| "truncated inline bucket".into())
            } else {
                self.page(root)
            }
        }
    }

    pub fn read(db: &[u8]) -> Result<Summary, String> {
        let first = meta(db, 0);
        let page_size = match &first {
            Ok(m) => m.page_size,
            Err(_) => 4096,
        };
        if !(512..=1 << 16).contains(&page_size) {
            return Err(format!("implausible page size {page_size}"));
        }
        let second = meta(db, page_size);
        let m = match (first, second) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(a), Err(_)) => a,
            (Err(_), Ok(b)) => b,
            (Err(e), Err(_)) => return Err(e),
        };
        let mut w = Walker {
            db,
            page_size,
            depth: 0,
        };
        let mut buckets: Vec<(&[u8], &[u8])> = Vec::new();
        let root = w.page(m.root)?;
        w.walk(root, &mut |k, v, is_bucket| {
            if is_bucket {
                buckets.push((k, v));
            }
            Ok(())
        })?;
        let mut crc = Crc32c::new();
        let mut revision = 0i64;
        let mut total_key = 0u64;
        for (name, header) in buckets {
            crc.update(name);
            let is_key = name == b"key";
            let root = w.bucket_root(header)?;
            w.walk(root, &mut |k, v, is_bucket| {
                crc.update(k);
                if !is_bucket {
                    crc.update(v);
                }
                if is_key && k.len() >= 8 {
                    let mut main = [0u8; 8];
                    main.copy_from_slice(&k[..8]);
                    revision = i64::from_be_bytes(main);
                }
                total_key += 1;
                Ok(())
            })?;
        }
        Ok(Summary {
            hash: crc.finish(),
            revision,
            total_key,
            total_size: m.high_water * page_size as u64,
        })
    }

    /// CRC-32C (Castagnoli), the checksum `etcdctl snapshot status` prints.
    pub struct Crc32c {
        table: [u32; 256],
        crc: u32,
    }

    impl Crc32c {
        pub fn new() -> Self {
            let mut table = [0u32; 256];
            for (i, slot) in table.iter_mut().enumerate() {
                let mut c = i as u32;
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        0x82F6_3B78 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                }
                *slot = c;
            }
            Crc32c { table, crc: !0 }
        }

        pub fn update(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.crc =
                    self.table[((self.crc ^ u32::from(*b)) & 0xff) as usize] ^ (self.crc >> 8);
            }
        }

        pub fn finish(&self) -> u32 {
            !self.crc
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn crc32c_check_value() {
            let mut c = Crc32c::new();
            c.update(b"123456789");
            assert_eq!(c.finish(), 0xE306_9283);
        }

        #[test]
        fn garbage_is_an_error_not_a_panic() {
            assert!(read(&[]).is_err());
            assert!(read(&[0u8; 8192]).is_err());
            let mut junk = vec![0xffu8; 3 * 4096];
            junk[16..20].copy_from_slice(&MAGIC.to_le_bytes());
            assert!(read(&junk).is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_trailer_is_reported() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("snap.db");
        let mut data = vec![0u8; 1024];
        data.extend_from_slice(&[1u8; SHA256_LEN]);
        std::fs::write(&p, &data).expect("write");
        assert!(matches!(
            status(&p),
            Err(SnapshotError::HashMismatch { .. })
        ));
        std::fs::write(&p, b"short").expect("write");
        assert!(matches!(status(&p), Err(SnapshotError::Format { .. })));
    }
}
