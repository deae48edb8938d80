//! File storage domains (LOCALFS, POSIXFS/SHAREDFS, NFS, GLUSTERFS), laid out
//! on disk exactly as VDSM lays them out:
//!
//! ```text
//! <mount>/<sdUUID>/dom_md/{metadata,ids,leases,xleases,inbox,outbox}
//!                 /images/<imgUUID>/<volUUID>{,.meta,.lease}
//!                 /master/{vms,tasks}        (master domain only)
//! ```

pub mod volume;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, IoContext, Result};
use crate::format::domain_md::DomainMetadata;
use crate::format::xleases;
use crate::primitives::durable;
use crate::types::{parse_uuid, Uuid};

pub use crate::format::manifest::{DomainManifest, NewDomain, PoolMetadata};

pub const DOM_MD: &str = "dom_md";
pub const IMAGES: &str = "images";
pub const MASTER: &str = "master";
pub const METADATA: &str = "metadata";
pub const REMOVED_IMAGE_PREFIX: &str = "_remove_me_";
const MIB: u64 = 1 << 20;
/// Mailbox files: 16 MiB each; lease files start empty (sanlock grows them).
const MAILBOX_SIZE: u64 = 16 * MIB;
const METADATA_MODE: u32 = 0o660;
const DIR_MODE: u32 = 0o755;
const DOM_MD_MODE: u32 = 0o775;

/// A file storage domain: its directory and a lock that serializes this
/// process's read-modify-write cycles of the domain metadata.
#[derive(Debug)]
pub struct FileDomain {
    pub sd: Uuid,
    root: PathBuf,
    md_lock: Mutex<()>,
    /// The metadata as last read, with the stamp of the file it came from.
    md_cache: Mutex<Option<(FileStamp, DomainMetadata)>>,
}

/// What identifies one version of a file: metadata is replaced by rename,
/// so every write, by any host, makes a new inode (and a new ctime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(m: &fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

impl FileDomain {
    /// Creates the domain under `mount` (the connection's mount point).
    ///
    /// Everything is built in a hidden `.<sdUUID>.creating` directory and
    /// renamed into place at the end, so a crash never leaves a half-made
    /// domain under its real name.
    pub fn create(mount: &Path, new: &NewDomain) -> Result<FileDomain> {
        let final_dir = mount.join(new.sd.to_string());
        if final_dir.exists() {
            return Err(Error::DomainAlreadyExists(new.sd));
        }
        let staging = mount.join(format!(".{}.creating", new.sd));
        if staging.exists() {
            fs::remove_dir_all(&staging).ctx("cannot remove stale", &staging)?;
        }
        let result = Self::build(&staging, new).and_then(|_| {
            crate::failpoint::hit("domain.create.staged")?;
            fs::rename(&staging, &final_dir).ctx("cannot move domain into place", &final_dir)?;
            durable::fsync_dir(mount).ctx("cannot sync", mount)?;
            crate::failpoint::hit("domain.create.done")
        });
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&staging);
            return Err(match e {
                e if e.is_no_space() => Error::NoSpace { sd: new.sd },
                e => Error::DomainCreation {
                    sd: new.sd,
                    reason: e.to_string(),
                },
            });
        }
        tracing::info!(sd = %new.sd, path = %final_dir.display(), version = new.version, "created storage domain");
        let dom = FileDomain::open(final_dir)?;
        dom.ensure_reserve();
        Ok(dom)
    }

    fn build(dir: &Path, new: &NewDomain) -> Result<()> {
        durable::create_dir(dir, DIR_MODE).ctx("cannot create", dir)?;
        let md_dir = dir.join(DOM_MD);
        durable::create_dir(&md_dir, DOM_MD_MODE).ctx("cannot create", &md_dir)?;
        for (name, size) in [
            ("ids", 0),
            ("leases", 0),
            ("inbox", MAILBOX_SIZE),
            ("outbox", MAILBOX_SIZE),
        ] {
            let p = md_dir.join(name);
            let f = create_file(&p)?;
            f.set_len(size).ctx("cannot size", &p)?;
            f.sync_all().ctx("cannot sync", &p)?;
        }
        if new.version >= 4 {
            let p = md_dir.join("xleases");
            let f = create_file(&p)?;
            let (offset, index) =
                xleases::format_index(&new.sd.to_string(), crate::now_secs(), new.alignment);
            f.write_all_at(&index, offset).ctx("cannot write", &p)?;
            f.sync_all().ctx("cannot sync", &p)?;
        }
        let images = dir.join(IMAGES);
        durable::create_dir(&images, DIR_MODE).ctx("cannot create", &images)?;
        let md = crate::format::manifest::initial_metadata(new);
        durable::write_atomic(&md_dir.join(METADATA), &md.render(), METADATA_MODE)
            .ctx("cannot write metadata in", &md_dir)?;
        durable::fsync_dir(&md_dir).ctx("cannot sync", &md_dir)?;
        durable::fsync_dir(dir).ctx("cannot sync", dir)
    }

    /// Opens the domain at `root`, whose last component must be its UUID.
    ///
    /// The connection's directory is resolved once (it may be cairnd's own
    /// LOCALFS link); below it nothing is ever followed, so the domain
    /// directory must be a real directory and every path handed out below
    /// it is checked for links where it is opened.
    pub fn open(root: PathBuf) -> Result<FileDomain> {
        let root = match (root.parent(), root.file_name()) {
            (Some(mount), Some(name)) => mount
                .canonicalize()
                .ctx("cannot resolve", mount)?
                .join(name),
            _ => root,
        };
        crate::primitives::nofollow::check_dir(&root).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => Error::UnsafeStorage(e.to_string()),
            _ => Error::io_path("cannot open domain", &root, e),
        })?;
        let sd = root
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_uuid)
            .ok_or_else(|| {
                Error::invalid(
                    "storagedomainID",
                    format!("{} is not a domain directory", root.display()),
                )
            })?;
        let dom = FileDomain::at(sd, root);
        let m = dom.manifest()?;
        if m.sd != sd {
            return Err(Error::DomainMetadata {
                sd,
                reason: format!("SDUUID is {}", m.sd),
            });
        }
        Ok(dom)
    }

    fn at(sd: Uuid, root: PathBuf) -> FileDomain {
        FileDomain {
            sd,
            root,
            md_lock: Mutex::new(()),
            md_cache: Mutex::new(None),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn metadata_path(&self) -> PathBuf {
        self.root.join(DOM_MD).join(METADATA)
    }

    pub fn ids_path(&self) -> PathBuf {
        self.root.join(DOM_MD).join("ids")
    }

    pub fn leases_path(&self) -> PathBuf {
        self.root.join(DOM_MD).join("leases")
    }

    pub fn xleases_path(&self) -> PathBuf {
        self.root.join(DOM_MD).join("xleases")
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root.join(IMAGES)
    }

    pub fn image_dir(&self, img: Uuid) -> PathBuf {
        self.images_dir().join(img.to_string())
    }

    pub fn master_dir(&self) -> PathBuf {
        self.root.join(MASTER)
    }

    /// The domain metadata, parsed again only when the file changed since
    /// the last read (a stat instead of a read, a checksum and a parse).
    pub fn read_metadata(&self) -> Result<DomainMetadata> {
        let path = self.metadata_path();
        let io_err = |source: io::Error| match source.kind() {
            io::ErrorKind::NotFound => Error::DomainNotFound(self.sd),
            _ => Error::DomainAccess {
                sd: self.sd,
                source,
            },
        };
        let mut file =
            crate::primitives::nofollow::open(&path, crate::primitives::nofollow::Access::READ)
                .map_err(io_err)?;
        let stamp = FileStamp::of(&file.metadata().map_err(io_err)?);
        let mut cache = self.md_cache.lock().expect("metadata cache");
        if let Some((cached, md)) = cache.as_ref() {
            if *cached == stamp {
                return Ok(md.clone());
            }
        }
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut file, &mut bytes).map_err(io_err)?;
        let md = self.parse_metadata(&bytes)?;
        *cache = Some((stamp, md.clone()));
        Ok(md)
    }

    fn parse_metadata(&self, bytes: &[u8]) -> Result<DomainMetadata> {
        DomainMetadata::parse(bytes).map_err(|e| match e {
            e @ crate::format::domain_md::DomainMetadataError::SealBroken { .. } => {
                Error::DomainSealBroken {
                    sd: self.sd,
                    reason: e.to_string(),
                }
            }
            e => Error::DomainMetadata {
                sd: self.sd,
                reason: e.to_string(),
            },
        })
    }

    pub fn manifest(&self) -> Result<DomainManifest> {
        DomainManifest::from_metadata(self.sd, &self.read_metadata()?)
    }

    /// Read-modify-write of the domain metadata as one transaction: `change`
    /// sees the current contents; the result is sealed and replaced
    /// crash-safely. Nothing is written if `change` fails.
    pub fn update_metadata<T>(
        &self,
        change: impl FnOnce(&mut DomainMetadata) -> Result<T>,
    ) -> Result<T> {
        let _guard = self.md_lock.lock().expect("metadata lock");
        let mut md = self.read_metadata()?;
        let before = md.clone();
        let out = change(&mut md)?;
        if md != before {
            durable::write_atomic(&self.metadata_path(), &md.render(), METADATA_MODE).map_err(
                |e| {
                    self.io_failure(e, |source| Error::DomainAccess {
                        sd: self.sd,
                        source,
                    })
                },
            )?;
        }
        Ok(out)
    }

    /// Maps an I/O error: a full file system is `NoSpace` on this domain,
    /// anything else what `other` makes of it.
    pub fn io_failure(&self, e: io::Error, other: impl FnOnce(io::Error) -> Error) -> Error {
        if crate::error::is_enospc(&e) {
            Error::NoSpace { sd: self.sd }
        } else {
            other(e)
        }
    }

    /// Image UUIDs; directories being removed or not named by a UUID are skipped.
    pub fn images(&self) -> Result<Vec<Uuid>> {
        let dir = self.images_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|source| Error::DomainAccess {
            sd: self.sd,
            source,
        })? {
            let entry = entry.map_err(|source| Error::DomainAccess {
                sd: self.sd,
                source,
            })?;
            if let Some(img) = entry.file_name().to_str().and_then(parse_uuid) {
                out.push(img);
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn has_image(&self, img: Uuid) -> bool {
        self.image_dir(img).is_dir()
    }

    /// (total, free) bytes of the file system holding the domain.
    pub fn space(&self) -> Result<(u64, u64)> {
        let st = rustix::fs::statvfs(&self.root).map_err(|e| Error::DomainAccess {
            sd: self.sd,
            source: e.into(),
        })?;
        Ok((st.f_frsize * st.f_blocks, st.f_frsize * st.f_bavail))
    }

    /// Keeps the domain's space reserve (see `primitives::reserve`).
    pub fn ensure_reserve(&self) -> bool {
        crate::primitives::reserve::ensure(&self.root)
    }

    /// Bytes free beyond the space reserve: what new volumes may use.
    pub fn usable_space(&self) -> Result<u64> {
        let (_, free) = self.space()?;
        Ok(free.saturating_sub(2 * crate::primitives::reserve::RESERVE_SIZE))
    }

    /// Creates `master/{vms,tasks}` (pool data on the master domain).
    pub fn ensure_master_dirs(&self) -> Result<()> {
        let master = self.master_dir();
        for dir in [master.clone(), master.join("vms"), master.join("tasks")] {
            match durable::create_dir(&dir, DIR_MODE) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io_path("cannot create", &dir, e)),
            }
        }
        Ok(())
    }

    /// Removes the whole domain directory: first renamed so a crash leaves a
    /// recognisable leftover, then deleted.
    pub fn remove(&self) -> Result<()> {
        let parent = self
            .root
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let doomed = parent.join(format!("{REMOVED_IMAGE_PREFIX}{}", self.sd));
        fs::rename(&self.root, &doomed).ctx("cannot rename", &self.root)?;
        durable::fsync_dir(&parent).ctx("cannot sync", &parent)?;
        crate::failpoint::hit("domain.format.after_rename")?;
        fs::remove_dir_all(&doomed).ctx("cannot remove", &doomed)?;
        durable::fsync_dir(&parent).ctx("cannot sync", &parent)
    }
}

fn create_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(METADATA_MODE)
        .open(path)
        .ctx("cannot create", path)
}

/// Leftovers of domain creation (`.<sdUUID>.creating`) and removal
/// (`_remove_me_<sdUUID>`) directly under a mount point. Only those older
/// than `min_age` are removed: on shared storage another host may be
/// creating or removing a domain right now.
pub fn collect_mount_garbage(mount: &Path, min_age: std::time::Duration) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(mount) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let leftover = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".creating"))
            .or_else(|| name.strip_prefix(REMOVED_IMAGE_PREFIX))
            .is_some_and(|id| parse_uuid(id).is_some());
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= min_age);
        if leftover && old {
            let p = entry.path();
            match fs::remove_dir_all(&p) {
                Ok(()) => {
                    tracing::info!(path = %p.display(), "removed the leftover of an interrupted domain create or format");
                    removed.push(p);
                }
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "cannot remove a domain leftover")
                }
            }
        }
    }
    removed
}

/// Detects the logical block size of the storage under `dir` by trying a
/// 512-byte direct write: file systems on 4K devices refuse it.
pub fn detect_block_size(dir: &Path) -> u32 {
    let probe = dir.join(format!(".cairn-block-size-probe-{}", std::process::id()));
    let result = (|| -> io::Result<u32> {
        // No O_DIRECT support at all (tmpfs on old kernels): nothing to align to.
        let Ok(f) = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc_o_direct())
            .open(&probe)
        else {
            return Ok(512);
        };
        let layout = std::alloc::Layout::from_size_align(4096, 4096).expect("layout");
        // SAFETY: the buffer is allocated with the requested alignment, zeroed,
        // used only within this scope and freed below.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let buf = unsafe { std::slice::from_raw_parts(ptr, 4096) };
        let r = f.write_at(&buf[..512], 0);
        unsafe { std::alloc::dealloc(ptr, layout) };
        match r {
            Ok(_) => Ok(512),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => Ok(4096),
            Err(e) => Err(e),
        }
    })();
    let _ = fs::remove_file(&probe);
    result.unwrap_or(512)
}

fn libc_o_direct() -> i32 {
    rustix::fs::OFlags::DIRECT.bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::K_DESCRIPTION;
    use crate::types::{DomainClass, DomainType};

    /// Two handles on one domain, as two hosts have: each sees the other's
    /// writes at once, though both cache what they read.
    #[test]
    fn cached_metadata_follows_writes_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let sd = Uuid::new_v4();
        let new = NewDomain {
            sd,
            name: "d".into(),
            class: DomainClass::Data,
            domain_type: DomainType::LocalFs,
            version: 5,
            block_size: 512,
            alignment: 1 << 20,
            remote_path: dir.path().display().to_string(),
        };
        let a = FileDomain::create(dir.path(), &new).unwrap();
        let b = FileDomain::open(dir.path().join(sd.to_string())).unwrap();
        assert_eq!(a.read_metadata().unwrap().get(K_DESCRIPTION), Some("d"));
        assert_eq!(b.read_metadata().unwrap().get(K_DESCRIPTION), Some("d"));
        for name in ["renamed", "again"] {
            b.update_metadata(|md| {
                md.set(K_DESCRIPTION, name.to_string());
                Ok(())
            })
            .unwrap();
            assert_eq!(a.read_metadata().unwrap().get(K_DESCRIPTION), Some(name));
        }
        std::fs::remove_file(a.metadata_path()).unwrap();
        assert!(matches!(a.read_metadata(), Err(Error::DomainNotFound(_))));
    }
}
