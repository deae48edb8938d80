//! File storage domains (LOCALFS, POSIXFS/SHAREDFS, NFS, GLUSTERFS), laid out
//! on disk exactly as VDSM lays them out:
//!
//! ```text
//! <mount>/<sdUUID>/dom_md/{metadata,ids,leases,xleases,inbox,outbox}
//!                 /images/<imgUUID>/<volUUID>{,.meta,.lease}
//!                 /master/{vms,tasks}        (master domain only)
//! ```

mod image;
mod volume;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Caps, DataSpec, Domain, GcReport, LeaseAreas, Part, ScannedVolume};
use crate::error::{Error, IoContext, Result};
use crate::format::domain_md::DomainMetadata;
use crate::format::volume_md::VolumeMetadata;
use crate::format::xleases;
use crate::primitives::durable;
use crate::primitives::luns::Lun;
use crate::primitives::nofollow::{self, Access};
use crate::primitives::probe::ImageHeader;
use crate::types::{parse_uuid, DomainType, Uuid, VolumeAllocation, VolumeFormat};

use crate::format::manifest::{DomainManifest, NewDomain};

const DOM_MD: &str = "dom_md";
const IMAGES: &str = "images";
const MASTER: &str = "master";
const METADATA: &str = "metadata";
const REMOVED_IMAGE_PREFIX: &str = "_remove_me_";
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
    sd: Uuid,
    root: PathBuf,
    /// Not LOCALFS: other hosts see it, so its leases are sanlock's.
    shared: bool,
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
        crate::primitives::reserve::ensure(&dom.root);
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
            let f = create_file(&md_dir.join("xleases"))?;
            write_xleases(&f, &md_dir.join("xleases"), new.sd, new.alignment)?;
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
        let mut dom = FileDomain {
            sd,
            root,
            shared: false,
            md_lock: Mutex::new(()),
            md_cache: Mutex::new(None),
        };
        let m = dom.manifest()?;
        if m.sd != sd {
            return Err(Error::DomainMetadata {
                sd,
                reason: format!("SDUUID is {}", m.sd),
            });
        }
        dom.shared = m.domain_type != DomainType::LocalFs;
        Ok(dom)
    }

    pub fn metadata_path_in(mount: &Path, sd: Uuid) -> PathBuf {
        mount.join(sd.to_string()).join(DOM_MD).join(METADATA)
    }

    fn metadata_path(&self) -> PathBuf {
        self.root.join(DOM_MD).join(METADATA)
    }

    fn images_dir(&self) -> PathBuf {
        self.root.join(IMAGES)
    }

    fn image_dir(&self, img: Uuid) -> PathBuf {
        self.images_dir().join(img.to_string())
    }

    /// The domain metadata, parsed again only when the file changed since
    /// the last read (a stat instead of a read, a checksum and a parse).
    fn read_metadata_cached(&self) -> Result<DomainMetadata> {
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

    fn manifest(&self) -> Result<DomainManifest> {
        DomainManifest::from_metadata(self.sd, &self.read_metadata_cached()?)
    }

    /// Maps an I/O error: a full file system is `NoSpace` on this domain,
    /// anything else what `other` makes of it.
    fn io_failure(&self, e: io::Error, other: impl FnOnce(io::Error) -> Error) -> Error {
        crate::error::no_space_or(self.sd, e, other)
    }

    /// Image UUIDs; directories being removed or not named by a UUID are skipped.
    fn list_images(&self) -> Result<Vec<Uuid>> {
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

    /// Removes the whole domain directory: first renamed so a crash leaves a
    /// recognisable leftover, then deleted.
    fn remove_all(&self) -> Result<()> {
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

/// Whether `mount` holds domain `sd`.
pub(super) fn holds(mount: &Path, sd: Uuid) -> bool {
    FileDomain::metadata_path_in(mount, sd).is_file()
}

/// The domains directly under `mount`.
pub(super) fn domains_in(mount: &Path) -> Vec<Uuid> {
    let Ok(entries) = fs::read_dir(mount) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(parse_uuid))
        .filter(|&sd| holds(mount, sd))
        .collect()
}

/// The volume whose data file `real` (links resolved) is:
/// `<mount>/<sd>/images/<img>/<vol>`.
pub(super) fn volume_at(real: &Path) -> Option<(Uuid, Uuid, Uuid)> {
    let parts: Vec<&str> = real
        .iter()
        .rev()
        .take(4)
        .map(|c| c.to_str().unwrap_or(""))
        .collect();
    match parts.as_slice() {
        [vol, img, IMAGES, sd] => Some((parse_uuid(sd)?, parse_uuid(img)?, parse_uuid(vol)?)),
        _ => None,
    }
}

impl Domain for FileDomain {
    fn id(&self) -> Uuid {
        self.sd
    }

    fn caps(&self) -> Caps {
        Caps {
            shared: self.shared,
            qemu_driver: "file",
        }
    }

    fn read_metadata(&self) -> Result<DomainMetadata> {
        self.read_metadata_cached()
    }

    /// The change sees the current contents; the result is sealed and
    /// replaced crash-safely.
    fn update_metadata(
        &self,
        change: &mut dyn FnMut(&mut DomainMetadata) -> Result<()>,
    ) -> Result<()> {
        let _guard = self.md_lock.lock().expect("metadata lock");
        let mut md = self.read_metadata_cached()?;
        let before = md.clone();
        change(&mut md)?;
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
        Ok(())
    }

    fn is_present(&self) -> bool {
        self.metadata_path().exists()
    }

    fn monitor_target(&self) -> PathBuf {
        self.metadata_path()
    }

    fn host_dir(&self) -> PathBuf {
        self.root.clone()
    }

    /// Of the file system holding the domain.
    fn space(&self) -> Result<(u64, u64)> {
        let st = rustix::fs::statvfs(&self.root).map_err(|e| Error::DomainAccess {
            sd: self.sd,
            source: e.into(),
        })?;
        Ok((st.f_frsize * st.f_blocks, st.f_frsize * st.f_bavail))
    }

    fn usable_space(&self) -> Result<u64> {
        let (_, free) = self.space()?;
        Ok(free.saturating_sub(2 * crate::primitives::reserve::RESERVE_SIZE))
    }

    /// See `primitives::reserve`.
    fn ensure_reserve(&self) -> bool {
        crate::primitives::reserve::ensure(&self.root)
    }

    fn master_dir(&self) -> Result<PathBuf> {
        Ok(self.root.join(MASTER))
    }

    fn backup_dir(&self) -> Result<PathBuf> {
        // Beside VDSM's `images` and `dom_md`, which VDSM leaves alone.
        Ok(self.root.join("cairn-backups"))
    }

    fn share_relative_path(&self, img: Uuid, vol: Uuid) -> Option<String> {
        // The domain's directory is named by its UUID on the share.
        Some(format!("{}/{IMAGES}/{img}/{vol}", self.id()))
    }

    fn ensure_master_dirs(&self) -> Result<()> {
        let master = self.root.join(MASTER);
        for dir in [master.clone(), master.join("vms"), master.join("tasks")] {
            match durable::create_dir(&dir, DIR_MODE) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io_path("cannot create", &dir, e)),
            }
        }
        Ok(())
    }

    /// A directory on shared storage: nothing is held.
    fn release_master(&self) -> Result<()> {
        Ok(())
    }

    fn lease_areas(&self) -> LeaseAreas {
        let md = self.root.join(DOM_MD);
        LeaseAreas {
            ids: md.join("ids"),
            leases: md.join("leases"),
            xleases: md.join("xleases"),
        }
    }

    fn remove(&self) -> Result<()> {
        self.remove_all()
    }

    fn images(&self) -> Result<Vec<Uuid>> {
        self.list_images()
    }

    fn has_image(&self, img: Uuid) -> bool {
        self.image_dir(img).is_dir()
    }

    fn volumes(&self, img: Uuid) -> Result<Vec<Uuid>> {
        self.list_volumes(img)
    }

    fn scan(&self) -> Result<Vec<ScannedVolume>> {
        self.scan_volumes()
    }

    fn read_volume(&self, img: Uuid, vol: Uuid) -> Result<VolumeMetadata> {
        self.read_volume_file(img, vol)
    }

    fn write_volume(&self, img: Uuid, vol: Uuid, md: &VolumeMetadata, version: u32) -> Result<()> {
        self.write_volume_file(img, vol, md, version)
    }

    fn write_volume_text(&self, img: Uuid, vol: Uuid, text: &str) -> Result<()> {
        let path = self.meta_path(img, vol);
        durable::write_atomic(&path, text.as_bytes(), volume::VOLUME_MODE)
            .map_err(|e| self.io_failure(e, |e| Error::io_path("cannot write", &path, e)))
    }

    fn volume_metadata_is(&self, img: Uuid, vol: Uuid, contents: &str) -> bool {
        fs::read(self.meta_path(img, vol)).is_ok_and(|b| b == contents.as_bytes())
    }

    fn volume_exists(&self, img: Uuid, vol: Uuid) -> bool {
        self.meta_path(img, vol).exists() || self.volume_path(img, vol).exists()
    }

    fn volume_sizes(&self, img: Uuid, vol: Uuid) -> Result<(u64, u64)> {
        self.data_sizes(img, vol)
    }

    fn data_len(&self, img: Uuid, vol: Uuid, _md: &VolumeMetadata) -> Result<u64> {
        Ok(self.data_sizes(img, vol)?.0)
    }

    fn volume_header(
        &self,
        img: Uuid,
        vol: Uuid,
        md: &VolumeMetadata,
    ) -> Option<io::Result<ImageHeader>> {
        self.probe_header(img, vol, md)
    }

    /// Counted by the data file's extra hard links.
    fn template_users(&self, img: Uuid, vol: Uuid) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(self.volume_path(img, vol))
            .map(|m| m.nlink().saturating_sub(1))
            .unwrap_or(0)
    }

    /// A sparse or qcow2 file grows by itself: only a preallocated RAW
    /// file may start smaller than its size.
    fn check_new_volume(
        &self,
        format: VolumeFormat,
        allocation: VolumeAllocation,
        initial_size: Option<u64>,
    ) -> Result<()> {
        if initial_size.is_some()
            && (format == VolumeFormat::Cow || allocation == VolumeAllocation::Sparse)
        {
            return Err(Error::invalid(
                "initialSize",
                "allowed on file storage only for RAW PREALLOCATED volumes",
            ));
        }
        Ok(())
    }

    fn create_image(&self, img: Uuid) -> Result<bool> {
        let dir = self.image_dir(img);
        match durable::make_dir(&dir, DIR_MODE) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(self.io_failure(e, |e| {
                Error::io_path("cannot create image directory", &dir, e)
            })),
        }
    }

    /// Hard links of the template's three files, as VDSM makes them.
    fn link_template(&self, (timg, tvol): (Uuid, Uuid), img: Uuid) -> Result<()> {
        let (from, to) = (self.image_dir(timg), self.image_dir(img));
        for name in volume::file_names(tvol) {
            match fs::hard_link(from.join(&name), to.join(&name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(self.io_failure(e, |e| {
                        Error::io_path("cannot link the template", &from.join(&name), e)
                    }))
                }
            }
        }
        Ok(())
    }

    fn unlink_template(&self, img: Uuid, vol: Uuid) -> Result<()> {
        let Some(dir) = self.checked_image_dir(img)? else {
            return Ok(());
        };
        for name in volume::file_names(vol) {
            remove_durably(&dir.join(name))?;
        }
        Ok(())
    }

    fn create_data(&self, img: Uuid, vol: Uuid, spec: &DataSpec) -> Result<()> {
        self.create_volume_data(img, vol, spec)
    }

    fn create_lease(&self, img: Uuid, vol: Uuid, alignment: u64) -> Result<()> {
        self.create_volume_lease(img, vol, alignment)
    }

    fn sync_volume(&self, img: Uuid, vol: Uuid) -> Result<()> {
        let data = self.open_part(img, vol, Part::Data, Access::READ)?;
        let lease = self.open_part(img, vol, Part::Lease, Access::READ)?;
        durable::sync_all_together(&[&data, &lease])
            .map_err(|e| self.io_failure(e, |e| Error::io(format!("cannot sync volume {vol}"), e)))
    }

    fn publish_volume(
        &self,
        img: Uuid,
        vol: Uuid,
        md: &VolumeMetadata,
        version: u32,
    ) -> Result<()> {
        self.create_volume_metadata(img, vol, md, version)
    }

    /// A crash before the image directory's own entry is durable loses the
    /// whole directory, metadata included: the volume is absent, not broken.
    fn sync_image(&self, img: Uuid, created: bool) -> Result<()> {
        let (dir, images) = (self.image_dir(img), self.images_dir());
        let dirs: &[&Path] = if created { &[&dir, &images] } else { &[&dir] };
        durable::fsync_dirs_together(dirs)
            .map_err(|e| self.io_failure(e, |e| Error::io_path("cannot sync", &dir, e)))
    }

    fn remove_part(&self, img: Uuid, vol: Uuid, part: Part) -> Result<()> {
        if self.checked_image_dir(img)?.is_none() {
            return Ok(());
        }
        let path = self.part_path(img, vol, part);
        if part == Part::Metadata {
            remove_durably(&durable::new_path(&path))?;
        }
        remove_durably(&path)
    }

    fn remove_image_if_empty(&self, img: Uuid) -> Result<()> {
        match self.own_volumes(img) {
            Ok(v) if v.is_empty() => self.remove_image_dir(img),
            Ok(_) | Err(Error::ImageNotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn scrub(&self, img: Uuid, vol: Uuid, zero: bool, discard: bool) -> Result<()> {
        if self.checked_image_dir(img)?.is_none() {
            return Ok(());
        }
        image::scrub_file(&self.volume_path(img, vol), zero, discard)
    }

    fn resize_raw(&self, img: Uuid, vol: Uuid, size: u64, preallocate: bool) -> Result<()> {
        self.resize_raw_file(img, vol, size, preallocate)
    }

    fn reset_raw(&self, img: Uuid, vol: Uuid, size: u64) -> Result<()> {
        let f = self.open_part(img, vol, Part::Data, Access::WRITE)?;
        f.set_len(0).and_then(|()| f.set_len(size)).map_err(|e| {
            self.io_failure(e, |e| {
                Error::io_path("cannot reset", &self.volume_path(img, vol), e)
            })
        })
    }

    fn retire_image(&self, img: Uuid) -> Result<()> {
        self.retire(img)
    }

    fn purge_image(&self, img: Uuid, zero: bool, discard: bool) -> Result<()> {
        self.purge(img, zero, discard)
    }

    fn begin_import(&self, img: Uuid) -> Result<()> {
        self.begin_staging(img)
    }

    fn import_template(&self, img: Uuid, (timg, tvol): (Uuid, Uuid)) -> Result<()> {
        self.stage_template(img, timg, tvol)
    }

    fn import_data(&self, img: Uuid, vol: Uuid, _md: &VolumeMetadata, _len: u64) -> Result<File> {
        self.stage_data(img, vol)
    }

    fn import_lease(&self, img: Uuid, vol: Uuid, alignment: u64) -> Result<(PathBuf, u64)> {
        self.stage_lease(img, vol, alignment)
    }

    fn import_metadata(
        &self,
        img: Uuid,
        vol: Uuid,
        md: &VolumeMetadata,
        version: u32,
    ) -> Result<()> {
        self.stage_metadata(img, vol, md, version)
    }

    fn commit_import(&self, img: Uuid) -> Result<()> {
        self.commit_staging(img)
    }

    fn discard_import(&self, img: Uuid) -> Result<()> {
        self.discard_staging(img)
    }

    fn data_path(&self, img: Uuid, vol: Uuid) -> Result<PathBuf> {
        self.data_file(img, vol)
    }

    fn open_part(&self, img: Uuid, vol: Uuid, part: Part, access: Access) -> Result<File> {
        let path = self.part_path(img, vol, part);
        nofollow::open(&path, access).map_err(|e| volume::unsafe_or(e, vol, &path))
    }

    /// The image directory holds the chain by name; nothing to activate.
    fn activate(&self, img: Uuid, chain: &[Uuid]) -> Result<PathBuf> {
        for vol in chain {
            self.data_file(img, *vol)?;
        }
        Ok(self.image_dir(img))
    }

    fn deactivate(&self, _img: Uuid) -> Result<()> {
        Ok(())
    }

    /// `<vol>.lease`, the resource at its start.
    fn volume_lease(&self, img: Uuid, vol: Uuid) -> (PathBuf, u64) {
        (self.part_path(img, vol, Part::Lease), 0)
    }

    fn collect_garbage(&self) -> Result<GcReport> {
        self.collect_leftovers()
    }

    fn prepare_upgrade(&self, version: u32) -> Result<()> {
        match version {
            4 => {
                let md_dir = self.root.join(DOM_MD);
                let path = md_dir.join("xleases");
                // A leftover of a cut-short upgrade is formatted again.
                let f = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(volume::VOLUME_MODE)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&path)
                    .ctx("cannot open", &path)?;
                let alignment = self.manifest()?.alignment;
                write_xleases(&f, &path, self.sd, alignment)?;
                durable::fsync_dir(&md_dir).ctx("cannot sync", &md_dir)
            }
            5 => self.rewrite_volume_metadata(|md| md.render_for_upgrade()),
            _ => Ok(()),
        }
    }

    fn finish_upgrade(&self, version: u32) -> Result<()> {
        match version {
            5 => self.rewrite_volume_metadata(|md| md.render(5)),
            _ => Ok(()),
        }
    }

    fn image_of(&self, vol: Uuid) -> Result<Option<Uuid>> {
        Ok(self
            .images()?
            .into_iter()
            .find(|&img| fs::symlink_metadata(self.meta_path(img, vol)).is_ok()))
    }

    /// A file takes space as it is written: nothing to grow.
    fn data_room(&self, _img: Uuid, _vol: Uuid) -> Result<Option<u64>> {
        Ok(None)
    }

    fn grow_room(&self, _img: Uuid, vol: Uuid, _size: u64, _map_here: bool) -> Result<u64> {
        Err(Error::NotThin {
            vol,
            reason: "volumes of file domains grow as they are written; there is nothing to extend",
        })
    }

    fn refresh_room(&self, img: Uuid, vol: Uuid) -> Result<u64> {
        Ok(self.volume_sizes(img, vol)?.0)
    }

    fn mapped_room(&self, _img: Uuid, _vol: Uuid) -> Option<u64> {
        None
    }

    /// The metadata cache already checks the file's stamp: nothing to do.
    fn own_metadata(&self) {}

    fn open_mailbox(&self) -> Result<(File, File)> {
        let open = |name: &str| {
            let path = self.root.join(DOM_MD).join(name);
            nofollow::open(&path, Access::READ_WRITE.direct()).ctx("cannot open", &path)
        };
        Ok((open("inbox")?, open("outbox")?))
    }

    fn add_luns(&self, _luns: &[Lun]) -> Result<()> {
        Err(self.not_on_luns())
    }

    fn resize_lun(&self, _lun: &Lun) -> Result<u64> {
        Err(self.not_on_luns())
    }
}

/// Formats the external leases index (VDSM's xleases) in `f`.
fn write_xleases(f: &File, path: &Path, sd: Uuid, alignment: u64) -> Result<()> {
    let (offset, index) = xleases::format_index(&sd.to_string(), crate::now_secs(), alignment);
    f.write_all_at(&index, offset).ctx("cannot write", path)?;
    f.sync_all().ctx("cannot sync", path)
}

impl FileDomain {
    /// Rewrites each volume's metadata file (atomically) as `render` makes
    /// it, unless it reads so already; a file that does not parse is left
    /// as it is.
    fn rewrite_volume_metadata(
        &self,
        render: impl Fn(
            &VolumeMetadata,
        )
            -> std::result::Result<Vec<u8>, crate::format::volume_md::VolumeMetadataError>,
    ) -> Result<()> {
        for v in self.scan_volumes()? {
            let Ok(md) = &v.md else { continue };
            let bytes = render(md).map_err(|e| Error::VolumeMetadataWrite {
                vol: v.vol,
                reason: e.to_string(),
            })?;
            let text = String::from_utf8(bytes).expect("volume metadata is text");
            if !self.volume_metadata_is(v.img, v.vol, &text) {
                self.write_volume_text(v.img, v.vol, &text)?;
            }
        }
        Ok(())
    }

    fn not_on_luns(&self) -> Error {
        let kind = self
            .read_metadata()
            .ok()
            .and_then(|md| md.get("TYPE").map(str::to_string))
            .unwrap_or_else(|| "file".into());
        Error::DomainTypeNotSupported(kind, "only block domains (ISCSI, FCP) live on LUNs")
    }
}

/// Removes a file if it is there and makes the removal durable.
fn remove_durably(path: &Path) -> Result<()> {
    if durable::remove_if_exists(path).ctx("cannot remove", path)? {
        durable::fsync_parent(path).ctx("cannot sync", path)?;
    }
    Ok(())
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
pub(super) fn collect_mount_garbage(mount: &Path, min_age: std::time::Duration) -> Vec<PathBuf> {
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
pub(super) fn detect_block_size(dir: &Path) -> u32 {
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

    fn local_domain(dir: &Path) -> FileDomain {
        let sd = Uuid::new_v4();
        let new = NewDomain {
            sd,
            name: "d".into(),
            class: DomainClass::Data,
            domain_type: DomainType::LocalFs,
            version: 5,
            block_size: 512,
            alignment: 1 << 20,
            remote_path: dir.display().to_string(),
        };
        FileDomain::create(dir, &new).unwrap()
    }

    /// A recovery step names an image and a volume; an image directory
    /// that is a link planted on storage must not lead a removal outside.
    #[test]
    fn removals_never_go_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let dom = local_domain(dir.path());
        let outside = tempfile::tempdir().unwrap();
        let (img, vol) = (Uuid::new_v4(), Uuid::new_v4());
        let victim = outside.path().join(vol.to_string());
        std::fs::write(&victim, b"host").unwrap();
        std::os::unix::fs::symlink(outside.path(), dom.image_dir(img)).unwrap();
        for part in [Part::Data, Part::Metadata, Part::Lease] {
            assert!(matches!(
                dom.remove_part(img, vol, part),
                Err(Error::UnsafeStorage(_))
            ));
        }
        assert!(matches!(
            dom.unlink_template(img, vol),
            Err(Error::UnsafeStorage(_))
        ));
        assert!(matches!(
            dom.scrub(img, vol, true, true),
            Err(Error::UnsafeStorage(_))
        ));
        assert!(matches!(
            dom.retire_image(img),
            Err(Error::UnsafeStorage(_))
        ));
        assert_eq!(std::fs::read(&victim).unwrap(), b"host");
        // Nothing to remove is not an error: steps are idempotent.
        dom.remove_part(Uuid::new_v4(), vol, Part::Data).unwrap();
        dom.purge_image(Uuid::new_v4(), true, true).unwrap();
        dom.discard_import(Uuid::new_v4()).unwrap();
    }

    /// Two handles on one domain, as two hosts have: each sees the other's
    /// writes at once, though both cache what they read.
    #[test]
    fn cached_metadata_follows_writes_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let a = local_domain(dir.path());
        let b = FileDomain::open(a.root.clone()).unwrap();
        assert_eq!(a.read_metadata().unwrap().get(K_DESCRIPTION), Some("d"));
        assert_eq!(b.read_metadata().unwrap().get(K_DESCRIPTION), Some("d"));
        for name in ["renamed", "again"] {
            b.update_metadata(&mut |md| {
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
