//! Storage domain backends behind one boundary, the [`Domain`] trait.
//!
//! The engine holds domains as `Arc<dyn Domain>` and speaks of images,
//! volumes and their parts; each backend decides where and how they live
//! (files under a mount today; LVs of a volume group next). The backends'
//! own modules are private: the engine cannot name a backend's layout.

mod block;
mod file;

pub use block::{BlockEnv, Prepared, VgDetails};

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::format::domain_md::DomainMetadata;
use crate::format::manifest::{DomainManifest, NewDomain};
use crate::format::volume_md::VolumeMetadata;
use crate::primitives::luns::Lun;
use crate::primitives::nofollow::Access;
use crate::primitives::probe::ImageHeader;
use crate::types::{Uuid, VolumeAllocation, VolumeFormat};

/// A part of a volume that a backend stores and a recovery plan names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// The guest-visible data (a RAW or qcow2 image).
    Data,
    /// The volume metadata (a VDSM key=value block), temporaries included.
    Metadata,
    /// The volume's lease area.
    Lease,
}

/// What differs between backends that the engine must know about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Other hosts can see the domain: its leases are sanlock leases.
    pub shared: bool,
    /// qemu's protocol driver for a volume's data ("file", "host_device").
    pub qemu_driver: &'static str,
}

/// Where a domain keeps its sanlock areas: the lockspace (`ids`), the
/// leases volume (SDM lease in slot 1) and the external leases index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAreas {
    pub ids: PathBuf,
    pub leases: PathBuf,
    pub xleases: PathBuf,
}

/// How to make a volume's data.
#[derive(Debug, Clone)]
pub struct DataSpec {
    pub format: VolumeFormat,
    pub allocation: VolumeAllocation,
    pub capacity: u64,
    /// What the volume should hold at first (`initialSize`), where the
    /// backend allocates ahead.
    pub initial_size: Option<u64>,
    /// The room a thin volume starts with where the backend grows it on
    /// demand (the thin-provisioning policy's start).
    pub thin_start: u64,
    /// The parent volume of the same image (its data is the backing image).
    pub parent: Option<(Uuid, VolumeFormat)>,
    /// qcow2 compat level for the domain version.
    pub compat: &'static str,
}

/// One volume found by [`Domain::scan`].
#[derive(Debug)]
pub struct ScannedVolume {
    pub img: Uuid,
    pub vol: Uuid,
    pub md: Result<VolumeMetadata>,
    /// (apparent size, allocated bytes) of the data, if it exists.
    pub sizes: Option<(u64, u64)>,
    /// The data's header, probed for COW volumes.
    pub header: Option<io::Result<ImageHeader>>,
}

/// What garbage collection removed, for the log and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// What was removed, named as the backend names it.
    pub removed: Vec<String>,
    /// Volumes whose role was repaired.
    pub repaired: Vec<String>,
}

impl GcReport {
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.repaired.is_empty()
    }
}

/// A storage domain as the engine sees it. Every method that changes
/// storage is idempotent where a recovery plan may repeat it, and durable
/// when it returns.
pub trait Domain: Send + Sync + std::fmt::Debug {
    fn id(&self) -> Uuid;
    fn caps(&self) -> Caps;

    // --- The domain ---------------------------------------------------

    /// The domain metadata (VDSM's sealed key=value text).
    fn read_metadata(&self) -> Result<DomainMetadata>;
    /// Read-modify-write of the domain metadata as one transaction; nothing
    /// is written if `change` fails or changes nothing.
    fn update_metadata(
        &self,
        change: &mut dyn FnMut(&mut DomainMetadata) -> Result<()>,
    ) -> Result<()>;
    /// Whether the domain is still where it was opened (not formatted or
    /// disconnected since).
    fn is_present(&self) -> bool;
    /// What the domain monitor reads with O_DIRECT to check the storage.
    fn monitor_target(&self) -> PathBuf;
    /// What `data-center/<pool>/<sd>` links point at on this host.
    fn host_dir(&self) -> PathBuf;
    /// (total, free) bytes.
    fn space(&self) -> Result<(u64, u64)>;
    /// Free bytes beyond the space kept back for recovery.
    fn usable_space(&self) -> Result<u64>;
    /// Restores the space kept back for recovery; false when it does not fit.
    fn ensure_reserve(&self) -> bool;
    /// The pool's directory on the master domain (`vms`, `tasks`).
    fn master_dir(&self) -> Result<PathBuf>;
    /// Where catalog backups are kept on this domain (file domains only).
    fn backup_dir(&self) -> Result<PathBuf>;
    /// Where a volume's data is below the root of the share the domain is
    /// on (file domains): what another host that mounts the share opens.
    fn share_relative_path(&self, img: Uuid, vol: Uuid) -> Option<String>;
    /// Makes the master directory and its `vms` and `tasks` if missing.
    fn ensure_master_dirs(&self) -> Result<()>;
    /// Lets the master directory go on this host (the SPM stops, or the
    /// master moves): before the SPM lease goes, so the next SPM never
    /// finds it in use here.
    fn release_master(&self) -> Result<()>;
    fn lease_areas(&self) -> LeaseAreas;
    /// Erases the whole domain (crash-safely: a leftover is recognisable).
    fn remove(&self) -> Result<()>;

    // --- Catalogue ----------------------------------------------------

    fn images(&self) -> Result<Vec<Uuid>>;
    fn has_image(&self, img: Uuid) -> bool;
    /// Volumes with metadata in `img`, templates linked into it included.
    fn volumes(&self, img: Uuid) -> Result<Vec<Uuid>>;
    /// Every volume with its metadata, sizes and header: the listing path.
    fn scan(&self) -> Result<Vec<ScannedVolume>>;
    fn read_volume(&self, img: Uuid, vol: Uuid) -> Result<VolumeMetadata>;
    /// Replaces a volume's metadata crash-safely.
    fn write_volume(&self, img: Uuid, vol: Uuid, md: &VolumeMetadata, version: u32) -> Result<()>;
    /// Replaces a volume's metadata with exactly this text (a recovery
    /// plan's saved copy), crash-safely.
    fn write_volume_text(&self, img: Uuid, vol: Uuid, text: &str) -> Result<()>;
    /// Whether the stored metadata is exactly `contents` (a commit check).
    fn volume_metadata_is(&self, img: Uuid, vol: Uuid, contents: &str) -> bool;
    /// Whether any part of the volume exists.
    fn volume_exists(&self, img: Uuid, vol: Uuid) -> bool;
    /// (apparent size, allocated bytes) of the data.
    fn volume_sizes(&self, img: Uuid, vol: Uuid) -> Result<(u64, u64)>;
    /// How many bytes from the start of the data hold the volume (a file's
    /// length; on a device, the RAW capacity or the qcow2 image's end).
    fn data_len(&self, img: Uuid, vol: Uuid, md: &VolumeMetadata) -> Result<u64>;
    /// The data's qcow2 header, probed for COW volumes only.
    fn volume_header(
        &self,
        img: Uuid,
        vol: Uuid,
        md: &VolumeMetadata,
    ) -> Option<io::Result<ImageHeader>>;
    /// Other images a template is cloned into.
    fn template_users(&self, img: Uuid, vol: Uuid) -> u64;

    // --- Volume parts (each nameable in a recovery plan) -----------------

    /// Refuses what this kind of storage cannot make (VDSM's rules differ
    /// between file and block domains).
    fn check_new_volume(
        &self,
        format: VolumeFormat,
        allocation: VolumeAllocation,
        initial_size: Option<u64>,
    ) -> Result<()>;
    /// Makes room for volumes of `img`; true if it was new.
    fn create_image(&self, img: Uuid) -> Result<bool>;
    /// Makes a template of another image usable as `img`'s base.
    fn link_template(&self, template: (Uuid, Uuid), img: Uuid) -> Result<()>;
    /// Undoes [`Domain::link_template`]; the template itself is untouched.
    fn unlink_template(&self, img: Uuid, vol: Uuid) -> Result<()>;
    fn create_data(&self, img: Uuid, vol: Uuid, spec: &DataSpec) -> Result<()>;
    /// Creates the lease area of a new volume (zeroed; sanlock formats it).
    fn create_lease(&self, img: Uuid, vol: Uuid, alignment: u64) -> Result<()>;
    /// Makes a new volume's data and lease durable.
    fn sync_volume(&self, img: Uuid, vol: Uuid) -> Result<()>;
    /// Writes a new volume's metadata: the commit point of a create. Fails
    /// if it exists.
    fn publish_volume(&self, img: Uuid, vol: Uuid, md: &VolumeMetadata, version: u32)
        -> Result<()>;
    /// Makes the image's new entries durable after a create.
    fn sync_image(&self, img: Uuid, created: bool) -> Result<()>;
    /// Removes one part of a volume, durably, if it is there.
    fn remove_part(&self, img: Uuid, vol: Uuid, part: Part) -> Result<()>;
    /// Removes an image with no volumes of its own left.
    fn remove_image_if_empty(&self, img: Uuid) -> Result<()>;
    /// Zeroes and/or discards a volume's data (a template shared with
    /// clones keeps its data).
    fn scrub(&self, img: Uuid, vol: Uuid, zero: bool, discard: bool) -> Result<()>;
    /// Sets a RAW volume's data to `size` bytes; `preallocate` allocates a
    /// grown tail. Idempotent.
    fn resize_raw(&self, img: Uuid, vol: Uuid, size: u64, preallocate: bool) -> Result<()>;
    /// Empties a RAW volume's data, keeping its size.
    fn reset_raw(&self, img: Uuid, vol: Uuid, size: u64) -> Result<()>;

    // --- Whole images -------------------------------------------------

    /// Takes an image out of the catalogue, durably, keeping its parts for
    /// [`Domain::purge_image`]: an image delete's commit point. Idempotent.
    fn retire_image(&self, img: Uuid) -> Result<()>;
    /// Scrubs (if asked) and removes a retired image.
    fn purge_image(&self, img: Uuid, zero: bool, discard: bool) -> Result<()>;

    // --- Importing an image from another domain ----------------------------

    /// Starts an import of `img`, out of the catalogue until committed; a
    /// leftover of an earlier attempt is discarded.
    fn begin_import(&self, img: Uuid) -> Result<()>;
    /// Links a template already on this domain into the imported image.
    fn import_template(&self, img: Uuid, template: (Uuid, Uuid)) -> Result<()>;
    /// Creates an imported volume's data, room for `len` bytes of it (the
    /// source's [`Domain::data_len`]), open for writing.
    fn import_data(&self, img: Uuid, vol: Uuid, md: &VolumeMetadata, len: u64) -> Result<File>;
    /// Creates an imported volume's lease area, zeroed: where it is (the
    /// caller formats it).
    fn import_lease(&self, img: Uuid, vol: Uuid, alignment: u64) -> Result<(PathBuf, u64)>;
    fn import_metadata(
        &self,
        img: Uuid,
        vol: Uuid,
        md: &VolumeMetadata,
        version: u32,
    ) -> Result<()>;
    /// Puts the imported image in the catalogue: the import's commit point.
    fn commit_import(&self, img: Uuid) -> Result<()>;
    /// Removes an uncommitted import. Idempotent.
    fn discard_import(&self, img: Uuid) -> Result<()>;

    // --- Host access --------------------------------------------------

    /// Where programs open the volume's data, checked safe to open by name.
    fn data_path(&self, img: Uuid, vol: Uuid) -> Result<PathBuf>;
    /// Opens a part of a volume without following links.
    fn open_part(&self, img: Uuid, vol: Uuid, part: Part, access: Access) -> Result<File>;
    /// Makes the chain usable on this host and returns the directory that
    /// holds its volumes by name (what `Image.prepare` links to).
    fn activate(&self, img: Uuid, chain: &[Uuid]) -> Result<PathBuf>;
    /// Undoes [`Domain::activate`].
    fn deactivate(&self, img: Uuid) -> Result<()>;
    /// The volume's lease: (where, offset).
    fn volume_lease(&self, img: Uuid, vol: Uuid) -> (PathBuf, u64);

    /// Removes what a crash can leave behind in the backend's layout.
    /// Runs on the SPM after recovery, when nothing is in use.
    fn collect_garbage(&self) -> Result<GcReport>;

    /// Makes what format `version` needs beside the older format's parts,
    /// before the metadata names the new version (a format upgrade): a
    /// crash afterwards leaves a valid domain of the older version.
    /// Version 4: the external leases area. Version 5: each volume's
    /// metadata readable as version 5 too.
    fn prepare_upgrade(&self, version: u32) -> Result<()>;
    /// Removes what only the older version used, once the metadata names
    /// `version`; readers ignore it meanwhile.
    fn finish_upgrade(&self, version: u32) -> Result<()>;

    // --- Thin provisioning -------------------------------------------------

    /// The image holding volume `vol`, if the domain has it (a mailbox
    /// message names only the domain and the volume).
    fn image_of(&self, vol: Uuid) -> Result<Option<Uuid>>;
    /// The bytes the storage holds for a volume's data where it must be
    /// grown on demand (an LV); None where data grows as it is written.
    fn data_room(&self, img: Uuid, vol: Uuid) -> Result<Option<u64>>;
    /// Grows a volume's room to at least `size` bytes and returns it. With
    /// `map_here` false this host's mapping stays as it is: a guest on
    /// another host uses the volume, and that host must see the new room
    /// first (VDSM BZ 1983882). Idempotent.
    fn grow_room(&self, img: Uuid, vol: Uuid, size: u64, map_here: bool) -> Result<u64>;
    /// Makes this host's mapping of a volume show the room the SPM gave
    /// it; returns the room mapped here.
    fn refresh_room(&self, img: Uuid, vol: Uuid) -> Result<u64>;
    /// The room this host maps now (no lvm command), where the backend
    /// maps volumes and this one is mapped.
    fn mapped_room(&self, img: Uuid, vol: Uuid) -> Option<u64>;
    /// This host alone changes the domain's metadata now (it is the SPM):
    /// the backend may stop rechecking what it caches of it.
    fn own_metadata(&self);
    /// The pool's mailbox on a master domain: (`inbox`, `outbox`), open for
    /// reading and writing with direct I/O.
    fn open_mailbox(&self) -> Result<(File, File)>;

    /// Grows the domain onto more LUNs (`StorageDomain.extend`); domains
    /// on other storage refuse.
    fn add_luns(&self, luns: &[Lun]) -> Result<()>;
    /// Grows the domain onto what a LUN gained on the storage
    /// (`StorageDomain.resizePV`); returns the LUN's usable size.
    fn resize_lun(&self, lun: &Lun) -> Result<u64>;
}

impl<'a> dyn Domain + 'a {
    pub fn manifest(&self) -> Result<DomainManifest> {
        DomainManifest::from_metadata(self.id(), &self.read_metadata()?)
    }

    /// [`Domain::update_metadata`] for a change that returns a value.
    pub fn update<T>(&self, change: impl FnOnce(&mut DomainMetadata) -> Result<T>) -> Result<T> {
        let mut change = Some(change);
        let mut out = None;
        self.update_metadata(&mut |md| {
            let f = change.take().expect("a metadata change runs once");
            out = Some(f(md)?);
            Ok(())
        })?;
        Ok(out.expect("the change ran"))
    }

    pub fn open_data(&self, img: Uuid, vol: Uuid, access: Access) -> Result<File> {
        self.open_part(img, vol, Part::Data, access)
    }
}

/// Where this host finds domains: the storage connections' mount points
/// (file domains) and the LUNs it sees (block domains).
#[derive(Debug, Clone, Copy)]
pub struct Storage<'a> {
    pub mounts: &'a [PathBuf],
    pub block: &'a BlockEnv,
}

/// The domain `sd` on the connected storage.
pub fn find(storage: Storage<'_>, sd: Uuid) -> Result<Option<Arc<dyn Domain>>> {
    for mount in storage.mounts {
        if file::holds(mount, sd) {
            return Ok(Some(Arc::new(file::FileDomain::open(
                mount.join(sd.to_string()),
            )?)));
        }
    }
    if !storage.block.devices.is_empty() && block::holds(storage.block, sd) {
        return Ok(Some(Arc::new(block::BlockDomain::open(storage.block, sd)?)));
    }
    Ok(None)
}

/// Every domain on the connected storage.
pub fn visible(storage: Storage<'_>) -> Vec<Uuid> {
    let mut out: Vec<Uuid> = storage
        .mounts
        .iter()
        .flat_map(|m| file::domains_in(m))
        .collect();
    out.extend(block::domains_in(storage.block));
    out.sort();
    out.dedup();
    out
}

/// What the domain monitor reads for `sd`, if some connection shows it.
pub fn monitor_target(mounts_dir: &Path, sd: Uuid) -> Option<PathBuf> {
    let entries = std::fs::read_dir(mounts_dir).ok()?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|m| file::holds(m, sd))
        .map(|m| file::FileDomain::metadata_path_in(&m, sd))
        .or_else(|| block::monitor_target(sd))
}

/// Creates a file domain under a connection's mount point.
pub fn create_file_domain(mount: &Path, new: &NewDomain) -> Result<Arc<dyn Domain>> {
    Ok(Arc::new(file::FileDomain::create(mount, new)?))
}

/// The logical block size of the storage under a mount point.
pub fn detect_block_size(mount: &Path) -> u32 {
    file::detect_block_size(mount)
}

/// Removes leftovers of interrupted domain creates and formats older than
/// `min_age` under a mount point.
pub fn collect_mount_garbage(mount: &Path, min_age: Duration) -> Vec<PathBuf> {
    file::collect_mount_garbage(mount, min_age)
}

/// The (domain, image, volume) whose data `real` (a resolved path) is.
pub fn volume_at(storage: Storage<'_>, real: &Path) -> Option<(Uuid, Uuid, Uuid)> {
    file::volume_at(real).or_else(|| block::volume_at(storage.block, real))
}

/// `LVMVolumeGroup.getInfo`: the VG whose UUID is `uuid`, with its PVs.
pub fn vg_details(env: &BlockEnv, uuid: &str) -> Result<VgDetails> {
    block::vg_details(env, uuid)
}

/// `LVMVolumeGroup.remove`: a VG holding no domain and no LV goes, and
/// its LUNs are free again.
pub fn remove_vg(env: &BlockEnv, uuid: &str) -> Result<()> {
    block::remove_vg(env, uuid)
}

/// `LVMVolumeGroup.create`: a VG named `name` on `luns`, ready to become
/// a block domain; returns its UUID.
pub fn create_vg(
    env: &BlockEnv,
    name: Uuid,
    luns: &[crate::primitives::luns::Lun],
) -> Result<String> {
    block::create_vg(env, name, luns)
}

/// Why a LUN cannot hold a new VG (partitioned, in use, a PV already,
/// not 512-byte blocks), or None if it is free.
pub fn lun_problem(env: &BlockEnv, lun: &crate::primitives::luns::Lun) -> Option<String> {
    block::lun_problem(env, lun)
}

/// Creates a block domain in the VG whose UUID is `vg_uuid`.
pub fn create_block_domain(
    env: &BlockEnv,
    vg_uuid: &str,
    new: &NewDomain,
) -> Result<Arc<dyn Domain>> {
    Ok(Arc::new(block::create_domain(env, vg_uuid, new)?))
}
