//! Block storage domains (ISCSI, FCP): an LVM volume group on shared LUNs,
//! laid out as VDSM lays it out (`../shared/reference/vdsm-block.md`):
//!
//! ```text
//! VG <sdUUID>, tags RHAT_storage_domain + MDT_<KEY>=<VALUE> (domain metadata)
//!   LVs metadata ids inbox outbox leases xleases master   (special LVs)
//!   LV  <volUUID>, tags IU_<img> PU_<parent> MD_<slot>    (one per volume)
//! ```
//!
//! Volume metadata lives in 512-byte records in the `metadata` LV, written
//! with O_DIRECT; a volume's lease at `(100 + slot) * alignment` in the
//! `leases` LV. Only the SPM changes the VG; every host activates the LVs
//! it uses. On this host the domain has a directory of its own (`host_dir`)
//! holding the master file system's mount point and the links of prepared
//! images, never anything read from storage.
//!
//! Beyond VDSM, two VG tags make multi-LV changes atomic:
//! `CAIRN_IMPORTING_<img>` hides an image being imported until one
//! `vgchange` removes it, and `CAIRN_RETIRED_<img>` removes an image from
//! the catalogue in one `vgchange` before its LVs go.

mod create;
mod upgrade;
mod vg;
mod volume;

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use super::{Caps, DataSpec, Domain, GcReport, LeaseAreas, Part, ScannedVolume};
use crate::error::{Error, IoContext, LvmAction, Result};
use crate::format::block_layout::{self as layout, DOMAIN_TAG};
use crate::format::domain_md::DomainMetadata;
use crate::format::vg_tags;
use crate::format::volume_md::VolumeMetadata;
use crate::primitives::luns::Lun;
use crate::primitives::lvm::{LvInfo, Lvm, LvmError, VgInfo};
use crate::primitives::mount;
use crate::primitives::nofollow::Access;
use crate::primitives::probe::ImageHeader;
use crate::types::{parse_uuid, Uuid, VolumeAllocation, VolumeFormat};

pub(super) use create::{create_domain, create_vg, lun_problem};
pub use vg::VgDetails;
pub(super) use vg::{remove_vg, vg_details};

const IMPORTING_TAG: &str = "CAIRN_IMPORTING_";
const RETIRED_TAG: &str = "CAIRN_RETIRED_";
const REMOVED_IMAGE: &str = "_remove_me_";
const MASTER: &str = "master";
const DIR_MODE: u32 = 0o755;
const MOUNT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a block domain's monitor reads, once the domain's `metadata` LV
/// is mapped on this host (opening the domain maps it); no lvm command,
/// so a monitor thread can look again and again.
pub(super) fn monitor_target(sd: Uuid) -> Option<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let path = Path::new("/dev")
        .join(sd.to_string())
        .join(layout::SPECIAL_LVS[0].name);
    fs::metadata(&path)
        .is_ok_and(|m| m.file_type().is_block_device())
        .then_some(path)
}

/// What a host needs to reach block domains: the lvm runner, the LUNs
/// whose VGs it may read, and where its own per-domain directories go.
#[derive(Debug, Clone)]
pub struct BlockEnv {
    pub lvm: Arc<Lvm>,
    pub devices: Vec<PathBuf>,
    pub host_root: PathBuf,
    /// Prepares of each image on this host, kept by the host rather than
    /// by a domain object (which is opened again after a reconnect).
    pub prepared: Arc<Prepared>,
}

/// How many times each (domain, image) is prepared on this host: the last
/// teardown deactivates.
#[derive(Debug, Default)]
pub struct Prepared(Mutex<HashMap<(Uuid, Uuid), usize>>);

impl BlockEnv {
    fn vg_error(&self, vg: &str, e: LvmError) -> Error {
        if e.is_not_found() {
            Error::VolumeGroupNotFound(vg.to_string())
        } else {
            Error::Lvm {
                action: LvmAction::ReadVg,
                source: e,
            }
        }
    }
}

/// A block domain on this host.
#[derive(Debug)]
pub struct BlockDomain {
    sd: Uuid,
    vg: String,
    env: BlockEnv,
    /// The LUNs lvm is shown for this VG: the host's at open, and those
    /// the domain grew onto since.
    devices: RwLock<Vec<PathBuf>>,
    host_dir: PathBuf,
    /// Serializes this process's read-modify-write of the VG tags.
    md_lock: Mutex<()>,
    /// Serializes slot allocation (the SPM is the only allocator).
    slot_lock: Mutex<()>,
    /// The last catalogue, with the lvm cache's LV list it was made from.
    catalogue_cache: Mutex<Option<CatalogueFrom>>,
}

/// A volume's LV as its tags describe it.
#[derive(Debug, Clone)]
struct VolumeLv {
    vol: Uuid,
    /// `IU_<img>`; None for an LV tagged otherwise.
    img: Option<Uuid>,
    /// `IU__remove_me_<img>`: deleted, waiting for removal.
    removed_from: Option<Uuid>,
    parent: Uuid,
    slot: Option<u64>,
    initializing: bool,
    size: u64,
}

impl VolumeLv {
    fn parse(lv: &LvInfo) -> Option<VolumeLv> {
        let vol = parse_uuid(&lv.name)?;
        let mut out = VolumeLv {
            vol,
            img: None,
            removed_from: None,
            parent: Uuid::nil(),
            slot: None,
            initializing: false,
            size: lv.size,
        };
        for tag in &lv.tags {
            if tag == layout::INITIALIZING_TAG {
                out.initializing = true;
            } else if let Some(rest) = tag.strip_prefix(layout::IMAGE_TAG) {
                match rest.strip_prefix(REMOVED_IMAGE) {
                    Some(r) => {
                        out.removed_from =
                            parse_uuid(r.strip_prefix("ZERO_").unwrap_or(r)).or(out.removed_from)
                    }
                    None => out.img = parse_uuid(rest).or(out.img),
                }
            } else if let Some(p) = tag.strip_prefix(layout::PARENT_TAG) {
                out.parent = parse_uuid(p).unwrap_or(Uuid::nil());
            } else if let Some(s) = tag.strip_prefix(layout::SLOT_TAG) {
                out.slot = s.parse().ok();
            }
        }
        Some(out)
    }
}

/// A parsed catalogue and the lvm cache's LV list it was parsed from.
type CatalogueFrom = (Arc<Vec<LvInfo>>, Arc<Catalogue>);

/// The state of a domain's VG that listings work from, indexed.
#[derive(Debug)]
struct Catalogue {
    vg: VgInfo,
    lvs: Vec<VolumeLv>,
    /// Position in `lvs` of each volume.
    by_vol: HashMap<Uuid, usize>,
    /// Positions in `lvs` of each image's live volumes.
    by_img: HashMap<Uuid, Vec<usize>>,
}

impl Catalogue {
    fn new(vg: VgInfo, lvs: Vec<VolumeLv>) -> Catalogue {
        let mut c = Catalogue {
            vg,
            lvs,
            by_vol: HashMap::new(),
            by_img: HashMap::new(),
        };
        c.by_vol = c
            .lvs
            .iter()
            .enumerate()
            .map(|(i, lv)| (lv.vol, i))
            .collect();
        let mut by_img: HashMap<Uuid, Vec<usize>> = HashMap::new();
        for (i, lv) in c.lvs.iter().enumerate() {
            if let Some(img) = lv.img.filter(|&img| !lv.initializing && !c.hidden(img)) {
                by_img.entry(img).or_default().push(i);
            }
        }
        c.by_img = by_img;
        c
    }

    fn hidden(&self, img: Uuid) -> bool {
        let (a, b) = (
            format!("{IMPORTING_TAG}{img}"),
            format!("{RETIRED_TAG}{img}"),
        );
        self.vg.tags.iter().any(|t| *t == a || *t == b)
    }

    /// Volumes in the catalogue: created, not deleted, not hidden.
    fn live(&self) -> impl Iterator<Item = (&VolumeLv, Uuid)> {
        self.lvs.iter().filter_map(move |lv| {
            let img = lv.img?;
            (!lv.initializing && !self.hidden(img)).then_some((lv, img))
        })
    }

    fn images(&self) -> BTreeSet<Uuid> {
        self.by_img.keys().copied().collect()
    }

    fn find(&self, vol: Uuid) -> Option<&VolumeLv> {
        self.by_vol.get(&vol).map(|&i| &self.lvs[i])
    }

    /// Volumes of `img`, with the template its base is cloned from.
    fn volumes(&self, img: Uuid) -> Vec<Uuid> {
        let own: Vec<&VolumeLv> = self
            .by_img
            .get(&img)
            .map(|v| v.iter().map(|&i| &self.lvs[i]).collect())
            .unwrap_or_default();
        let mut out: BTreeSet<Uuid> = own.iter().map(|lv| lv.vol).collect();
        for lv in &own {
            if !out.contains(&lv.parent) {
                if let Some(p) = self.find(lv.parent).filter(|p| p.img.is_some()) {
                    out.insert(p.vol);
                }
            }
        }
        out.into_iter().collect()
    }
}

impl BlockDomain {
    /// Opens the domain whose VG is named `sd`: it must carry the domain
    /// tag. Its special LVs are activated (the monitor and sanlock read
    /// them).
    pub fn open(env: &BlockEnv, sd: Uuid) -> Result<BlockDomain> {
        let vg = sd.to_string();
        let info = env
            .lvm
            .vg(&env.devices, &vg)
            .map_err(|e| env.vg_error(&vg, e))?;
        if !info.tags.iter().any(|t| t == DOMAIN_TAG) {
            return Err(Error::DomainNotFound(sd));
        }
        let dom = BlockDomain {
            sd,
            host_dir: env.host_root.join(&vg),
            vg,
            env: env.clone(),
            devices: RwLock::new(env.devices.clone()),
            md_lock: Mutex::new(()),
            slot_lock: Mutex::new(()),
            catalogue_cache: Mutex::new(None),
        };
        let m = crate::format::manifest::DomainManifest::from_metadata(sd, &dom.read_tags()?)?;
        if m.sd != sd {
            return Err(Error::DomainMetadata {
                sd,
                reason: format!("SDUUID is {}", m.sd),
            });
        }
        let special: Vec<&str> = layout::special_lvs(m.version)
            .map(|lv| lv.name)
            .filter(|n| *n != MASTER)
            .collect();
        dom.ensure_active(&special)?;
        durable_dir(&dom.host_dir)?;
        Ok(dom)
    }

    fn lvm(&self) -> &Lvm {
        &self.env.lvm
    }

    fn devices(&self) -> RwLockReadGuard<'_, Vec<PathBuf>> {
        self.devices.read().expect("domain devices")
    }

    fn lvm_error(&self, action: LvmAction, e: LvmError) -> Error {
        if e.is_no_space() {
            Error::NoSpace { sd: self.sd }
        } else {
            Error::Lvm { action, source: e }
        }
    }

    /// Where this host reaches an active LV.
    fn lv_path(&self, lv: &str) -> PathBuf {
        Path::new("/dev").join(&self.vg).join(lv)
    }

    fn is_active(&self, lv: &str) -> bool {
        self.lv_path(lv).exists()
    }

    /// The device an active LV is, links resolved (what sanlock is given:
    /// it refuses links).
    fn device_of(&self, lv: &str) -> PathBuf {
        let path = self.lv_path(lv);
        path.canonicalize().unwrap_or(path)
    }

    /// Activates the LVs not active yet; refreshes those that are (another
    /// host may have extended them).
    fn ensure_active(&self, lvs: &[&str]) -> Result<()> {
        let (active, inactive): (Vec<&str>, Vec<&str>) =
            lvs.iter().partition(|lv| self.is_active(lv));
        if !inactive.is_empty() {
            self.lvm()
                .set_active(&self.devices(), &self.vg, &inactive, true)
                .map_err(|e| self.lvm_error(LvmAction::ActivateLv, e))?;
        }
        for lv in active {
            if self.lv_size_here(lv) != self.lv(lv).ok().map(|l| l.size) {
                self.lvm()
                    .refresh(&self.devices(), &self.vg, lv)
                    .map_err(|e| self.lvm_error(LvmAction::RefreshLv, e))?;
            }
        }
        Ok(())
    }

    /// The size of the LV's mapping on this host.
    fn lv_size_here(&self, lv: &str) -> Option<u64> {
        use std::io::Seek;
        let mut f = File::open(self.lv_path(lv)).ok()?;
        f.seek(io::SeekFrom::End(0)).ok()
    }

    fn lv(&self, name: &str) -> Result<LvInfo> {
        self.lvm()
            .lv(&self.devices(), &self.vg, name)
            .map_err(|e| self.lvm_error(LvmAction::ReadLvs, e))
    }

    fn read_tags(&self) -> Result<DomainMetadata> {
        let vg = self.lvm().vg(&self.devices(), &self.vg).map_err(|e| {
            match self.env.vg_error(&self.vg, e) {
                Error::VolumeGroupNotFound(_) => Error::DomainNotFound(self.sd),
                e => e,
            }
        })?;
        vg_tags::from_tags(vg.tags.iter().map(String::as_str)).map_err(|e| match e {
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

    /// The catalogue of the VG as the lvm cache has it, parsed and indexed
    /// once per version of the cache's LV list.
    fn catalogue(&self) -> Result<Arc<Catalogue>> {
        let (vg, lvs) = self
            .lvm()
            .vg_and_lvs(&self.devices(), &self.vg)
            .map_err(|e| self.env.vg_error(&self.vg, e))?;
        let mut cached = self.catalogue_cache.lock().expect("catalogue cache");
        if let Some((from, c)) = cached.as_ref() {
            if Arc::ptr_eq(from, &lvs) && c.vg == vg {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(Catalogue::new(
            vg,
            lvs.iter().filter_map(VolumeLv::parse).collect(),
        ));
        *cached = Some((lvs, c.clone()));
        Ok(c)
    }

    fn vg_tags_change(&self, add: &[String], del: &[String]) -> Result<()> {
        self.lvm()
            .change_vg_tags(&self.devices(), &self.vg, add, del)
            .map_err(|e| self.lvm_error(LvmAction::ReplaceVgTags, e))
    }

    fn lv_tags_change(&self, lvs: &[&str], add: &[String], del: &[String]) -> Result<()> {
        if lvs.is_empty() {
            return Ok(());
        }
        self.lvm()
            .change_lvs_tags(&self.devices(), &self.vg, lvs, add, del)
            .map_err(|e| self.lvm_error(LvmAction::ReplaceLvTags, e))
    }

    fn remove_lvs(&self, lvs: &[&str]) -> Result<()> {
        if lvs.is_empty() {
            return Ok(());
        }
        self.lvm()
            .lvremove(&self.devices(), &self.vg, lvs)
            .map_err(|e| self.lvm_error(LvmAction::RemoveLv, e))
    }

    fn version(&self) -> Result<u32> {
        Ok(
            crate::format::manifest::DomainManifest::from_metadata(self.sd, &self.read_tags()?)?
                .version,
        )
    }

    fn alignment(&self) -> Result<u64> {
        Ok(
            crate::format::manifest::DomainManifest::from_metadata(self.sd, &self.read_tags()?)?
                .alignment,
        )
    }

    fn is_prepared(&self, img: Uuid) -> bool {
        self.env
            .prepared
            .0
            .lock()
            .expect("prepared images")
            .contains_key(&(self.sd, img))
    }

    fn image_dir(&self, img: Uuid) -> PathBuf {
        self.host_dir.join("images").join(img.to_string())
    }

    fn master_mount(&self) -> PathBuf {
        self.host_dir.join(MASTER)
    }

    /// Mounts the master file system on this host (the SPM's) if it is
    /// not mounted yet: checked first, as VDSM does.
    fn mount_master(&self) -> Result<PathBuf> {
        let dir = self.master_mount();
        durable_dir(&dir)?;
        if mount::is_mountpoint(&dir) {
            return Ok(dir);
        }
        self.ensure_active(&[MASTER])?;
        let dev = self.device_of(MASTER);
        create::check_master_fs(&dev)?;
        let req = mount::MountRequest {
            spec: dev.display().to_string(),
            target: dir.clone(),
            vfs_type: Some("ext4".into()),
            options: Some("nosuid,nodev,noexec".into()),
        };
        mount::mount(&req, MOUNT_TIMEOUT).map_err(|e| Error::Mount(e.to_string()))?;
        tracing::info!(sd = %self.sd, path = %dir.display(), "mounted the master file system");
        Ok(dir)
    }

    /// Unmounts the master file system if mounted here.
    fn unmount_master(&self) -> Result<()> {
        let dir = self.master_mount();
        if mount::is_mountpoint(&dir) {
            mount::umount(&dir, MOUNT_TIMEOUT).map_err(|e| Error::Mount(e.to_string()))?;
        }
        Ok(())
    }
}

fn durable_dir(dir: &Path) -> Result<()> {
    match crate::primitives::durable::create_dir(dir, DIR_MODE) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).ctx("cannot create", dir)
        }
        Err(e) => Err(Error::io_path("cannot create", dir, e)),
    }
}

/// Block domains among the VGs on `env`'s LUNs.
pub(super) fn domains_in(env: &BlockEnv) -> Vec<Uuid> {
    match env.lvm.vgs(&env.devices) {
        Ok(vgs) => vgs
            .iter()
            .filter(|vg| vg.tags.iter().any(|t| t == DOMAIN_TAG))
            .filter_map(|vg| parse_uuid(&vg.name))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the volume groups on the connected LUNs");
            Vec::new()
        }
    }
}

/// Whether a VG named `sd` with the domain tag is on `env`'s LUNs.
pub(super) fn holds(env: &BlockEnv, sd: Uuid) -> bool {
    env.lvm
        .vg(&env.devices, &sd.to_string())
        .is_ok_and(|vg| vg.tags.iter().any(|t| t == DOMAIN_TAG))
}

/// The (domain, image, volume) whose LV device `real` (a resolved path)
/// maps, when it is an LV of a domain active here.
pub(super) fn volume_at(env: &BlockEnv, real: &Path) -> Option<(Uuid, Uuid, Uuid)> {
    for sd in domains_in(env) {
        let dir = Path::new("/dev").join(sd.to_string());
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().canonicalize().ok().as_deref() == Some(real) {
                let vol = parse_uuid(e.file_name().to_str()?)?;
                let dom = BlockDomain::open(env, sd).ok()?;
                let img = dom.catalogue().ok()?.find(vol)?.img?;
                return Some((sd, img, vol));
            }
        }
    }
    None
}

impl Domain for BlockDomain {
    fn id(&self) -> Uuid {
        self.sd
    }

    fn caps(&self) -> Caps {
        Caps {
            shared: true,
            qemu_driver: "host_device",
        }
    }

    fn read_metadata(&self) -> Result<DomainMetadata> {
        self.read_tags()
    }

    /// The change is written as one `vgchange` of the differing tags: one
    /// LVM metadata commit, so atomic.
    fn update_metadata(
        &self,
        change: &mut dyn FnMut(&mut DomainMetadata) -> Result<()>,
    ) -> Result<()> {
        let _guard = self.md_lock.lock().expect("metadata lock");
        self.lvm().invalidate(&self.vg);
        let mut md = self.read_tags()?;
        let before = md.clone();
        change(&mut md)?;
        if md == before {
            return Ok(());
        }
        let (del, add) = vg_tags::diff(&vg_tags::to_tags(&before), &vg_tags::to_tags(&md));
        self.vg_tags_change(&add, &del)
    }

    fn is_present(&self) -> bool {
        self.is_active(layout::SPECIAL_LVS[0].name)
            && self
                .lvm()
                .vg(&self.devices(), &self.vg)
                .is_ok_and(|vg| vg.tags.iter().any(|t| t == DOMAIN_TAG))
    }

    fn monitor_target(&self) -> PathBuf {
        self.lv_path(layout::SPECIAL_LVS[0].name)
    }

    fn host_dir(&self) -> PathBuf {
        self.host_dir.clone()
    }

    fn space(&self) -> Result<(u64, u64)> {
        let vg = self
            .lvm()
            .vg(&self.devices(), &self.vg)
            .map_err(|e| self.env.vg_error(&self.vg, e))?;
        Ok((vg.size, vg.free))
    }

    /// LVM needs no room of its own to change metadata: all free extents
    /// are usable.
    fn usable_space(&self) -> Result<u64> {
        Ok(self.space()?.1)
    }

    fn ensure_reserve(&self) -> bool {
        true
    }

    fn master_dir(&self) -> Result<PathBuf> {
        self.mount_master()
    }

    fn share_relative_path(&self, _img: Uuid, _vol: Uuid) -> Option<String> {
        None
    }

    fn backup_dir(&self) -> Result<PathBuf> {
        Err(Error::invalid(
            "backup target",
            "a block domain holds no backup files: back up to a file domain or a directory",
        ))
    }

    fn ensure_master_dirs(&self) -> Result<()> {
        let master = self.mount_master()?;
        for dir in [master.join("vms"), master.join("tasks")] {
            durable_dir(&dir)?;
        }
        Ok(())
    }

    /// Unmounts the master file system and deactivates its LV: an ext3
    /// mounted on two hosts at once is lost.
    fn release_master(&self) -> Result<()> {
        self.unmount_master()?;
        self.deactivate_lvs(&[MASTER.to_string()]);
        Ok(())
    }

    fn lease_areas(&self) -> LeaseAreas {
        LeaseAreas {
            ids: self.device_of("ids"),
            leases: self.device_of("leases"),
            xleases: self.device_of("xleases"),
        }
    }

    /// The VG first loses its domain tag (it is no domain from then on,
    /// and a crash leaves a VG `LVMVolumeGroup.remove` takes), then goes.
    fn remove(&self) -> Result<()> {
        self.unmount_master()?;
        self.vg_tags_change(
            &[layout::UNREADY_TAG.to_string()],
            &[DOMAIN_TAG.to_string()],
        )?;
        crate::failpoint::hit("domain.format.after_rename")?;
        let lvs = self
            .lvm()
            .lvs(&self.devices(), &self.vg)
            .map_err(|e| self.lvm_error(LvmAction::ReadLvs, e))?;
        let active: Vec<&str> = lvs
            .iter()
            .map(|l| l.name.as_str())
            .filter(|n| self.is_active(n))
            .collect();
        if !active.is_empty() {
            self.lvm()
                .set_active(&self.devices(), &self.vg, &active, false)
                .map_err(|e| self.lvm_error(LvmAction::DeactivateLv, e))?;
        }
        let pvs: Vec<PathBuf> = self
            .lvm()
            .pvs(&self.devices())
            .map_err(|e| self.lvm_error(LvmAction::ReadVg, e))?
            .into_iter()
            .filter(|p| p.vg_name == self.vg)
            .map(|p| p.name)
            .collect();
        self.lvm()
            .vgremove(&self.devices(), &self.vg)
            .map_err(|e| self.lvm_error(LvmAction::RemoveVg, e))?;
        // The LUNs are free again, as after LVMVolumeGroup.remove.
        if let Err(e) = self.lvm().pvremove(&pvs) {
            tracing::warn!(sd = %self.sd, error = %e, "cannot wipe the PV labels of the removed domain's LUNs");
        }
        let _ = fs::remove_dir_all(&self.host_dir);
        tracing::info!(sd = %self.sd, "removed block storage domain and its volume group");
        Ok(())
    }

    fn images(&self) -> Result<Vec<Uuid>> {
        Ok(self.catalogue()?.images().into_iter().collect())
    }

    fn has_image(&self, img: Uuid) -> bool {
        self.catalogue().is_ok_and(|c| c.images().contains(&img))
    }

    fn volumes(&self, img: Uuid) -> Result<Vec<Uuid>> {
        let c = self.catalogue()?;
        if !c.images().contains(&img) {
            return Err(Error::ImageNotFound { img, sd: self.sd });
        }
        Ok(c.volumes(img))
    }

    fn scan(&self) -> Result<Vec<ScannedVolume>> {
        self.scan_volumes()
    }

    fn read_volume(&self, img: Uuid, vol: Uuid) -> Result<VolumeMetadata> {
        let c = self.catalogue()?;
        if !c.volumes(img).contains(&vol) {
            return Err(Error::VolumeNotFound(vol));
        }
        let lv = c.find(vol).ok_or(Error::VolumeNotFound(vol))?;
        self.read_slot_checked(lv, self.version()?)
    }

    fn write_volume(&self, img: Uuid, vol: Uuid, md: &VolumeMetadata, version: u32) -> Result<()> {
        let bytes = crate::format::volume_md::metadata_bytes(vol, md, version)?;
        self.write_record(img, vol, &bytes)
    }

    fn write_volume_text(&self, img: Uuid, vol: Uuid, text: &str) -> Result<()> {
        self.write_record(img, vol, text.as_bytes())
    }

    fn volume_metadata_is(&self, _img: Uuid, vol: Uuid, contents: &str) -> bool {
        let Ok(c) = self.catalogue() else {
            return false;
        };
        let (Some(slot), Ok(version)) = (c.find(vol).and_then(|lv| lv.slot), self.version()) else {
            return false;
        };
        self.read_slot(version, slot)
            .is_ok_and(|b| trim_record(&b) == contents.as_bytes())
    }

    fn volume_exists(&self, _img: Uuid, vol: Uuid) -> bool {
        self.catalogue().is_ok_and(|c| c.find(vol).is_some())
    }

    /// An LV is all allocated: both sizes are its size.
    fn volume_sizes(&self, _img: Uuid, vol: Uuid) -> Result<(u64, u64)> {
        let c = self.catalogue()?;
        let lv = c.find(vol).ok_or_else(|| Error::LogicalVolumeMissing {
            vol,
            reason: "no LV of that name".into(),
        })?;
        Ok((lv.size, lv.size))
    }

    fn data_len(&self, _img: Uuid, vol: Uuid, md: &VolumeMetadata) -> Result<u64> {
        self.volume_data_len(vol, md)
    }

    /// Read only from an LV already active here: activating every LV to
    /// list a domain would map thousands of devices.
    fn volume_header(
        &self,
        _img: Uuid,
        vol: Uuid,
        md: &VolumeMetadata,
    ) -> Option<io::Result<ImageHeader>> {
        let name = vol.to_string();
        (md.format == VolumeFormat::Cow && self.is_active(&name)).then(|| {
            let f = File::open(self.lv_path(&name))?;
            let len = self.lv_size_here(&name).unwrap_or(0);
            crate::primitives::probe::probe_open(&f, len)
        })
    }

    /// Images whose volumes name the template as parent.
    fn template_users(&self, img: Uuid, vol: Uuid) -> u64 {
        let Ok(c) = self.catalogue() else {
            return 0;
        };
        c.live()
            .filter(|(lv, i)| lv.parent == vol && *i != img)
            .map(|(_, i)| i)
            .collect::<BTreeSet<_>>()
            .len() as u64
    }

    /// VDSM's rules for block storage: a RAW volume is an LV of its full
    /// size, so RAW SPARSE does not exist; only COW takes `initialSize`.
    fn check_new_volume(
        &self,
        format: VolumeFormat,
        allocation: VolumeAllocation,
        initial_size: Option<u64>,
    ) -> Result<()> {
        if format == VolumeFormat::Raw && allocation == VolumeAllocation::Sparse {
            return Err(Error::IncorrectFormat { format, allocation });
        }
        if initial_size.is_some() && format == VolumeFormat::Raw {
            return Err(Error::invalid(
                "initialSize",
                "a RAW volume on block storage is always its full size",
            ));
        }
        Ok(())
    }

    /// Images are tags: nothing to make.
    fn create_image(&self, img: Uuid) -> Result<bool> {
        Ok(!self.has_image(img))
    }

    /// A clone names its template as parent (`PU_` tag): nothing to link.
    fn link_template(&self, _template: (Uuid, Uuid), _img: Uuid) -> Result<()> {
        Ok(())
    }

    fn unlink_template(&self, _img: Uuid, _vol: Uuid) -> Result<()> {
        Ok(())
    }

    fn create_data(&self, img: Uuid, vol: Uuid, spec: &DataSpec) -> Result<()> {
        self.create_volume_lv(img, vol, spec)
    }

    fn create_lease(&self, _img: Uuid, vol: Uuid, alignment: u64) -> Result<()> {
        self.clear_lease(vol, alignment)
    }

    fn sync_volume(&self, _img: Uuid, vol: Uuid) -> Result<()> {
        for lv in [vol.to_string(), "leases".to_string()] {
            let path = self.lv_path(&lv);
            File::open(&path)
                .and_then(|f| f.sync_all())
                .ctx("cannot sync", &path)?;
        }
        Ok(())
    }

    fn publish_volume(
        &self,
        img: Uuid,
        vol: Uuid,
        md: &VolumeMetadata,
        version: u32,
    ) -> Result<()> {
        self.publish(img, vol, md, version)
    }

    fn sync_image(&self, _img: Uuid, _created: bool) -> Result<()> {
        Ok(())
    }

    fn remove_part(&self, img: Uuid, vol: Uuid, part: Part) -> Result<()> {
        self.remove_volume_part(img, vol, part)
    }

    fn remove_image_if_empty(&self, _img: Uuid) -> Result<()> {
        Ok(())
    }

    fn scrub(&self, img: Uuid, vol: Uuid, zero: bool, discard: bool) -> Result<()> {
        let c = self.catalogue()?;
        if c.find(vol).is_none() || self.template_users(img, vol) > 0 {
            return Ok(());
        }
        self.scrub_lv(vol, zero, discard)
    }

    fn resize_raw(&self, _img: Uuid, vol: Uuid, size: u64, _preallocate: bool) -> Result<()> {
        self.grow_raw(vol, size)
    }

    fn reset_raw(&self, _img: Uuid, vol: Uuid, _size: u64) -> Result<()> {
        self.scrub_lv(vol, true, false)
    }

    /// One `vgchange` hides the image; its LVs are retagged as VDSM
    /// retags them, so a VDSM host sees them as deleted too.
    fn retire_image(&self, img: Uuid) -> Result<()> {
        let c = self.catalogue()?;
        let tag = format!("{RETIRED_TAG}{img}");
        if !c.vg.tags.contains(&tag) && c.images().contains(&img) {
            self.vg_tags_change(&[tag], &[])?;
        }
        let lvs: Vec<String> = c
            .lvs
            .iter()
            .filter(|lv| lv.img == Some(img))
            .map(|lv| lv.vol.to_string())
            .collect();
        let names: Vec<&str> = lvs.iter().map(String::as_str).collect();
        self.lv_tags_change(
            &names,
            &[format!("{}{REMOVED_IMAGE}{img}", layout::IMAGE_TAG)],
            &[format!("{}{img}", layout::IMAGE_TAG)],
        )
    }

    fn purge_image(&self, img: Uuid, zero: bool, discard: bool) -> Result<()> {
        let c = self.catalogue()?;
        let doomed: Vec<String> = c
            .lvs
            .iter()
            .filter(|lv| lv.removed_from == Some(img) || (lv.img == Some(img) && c.hidden(img)))
            .map(|lv| lv.vol.to_string())
            .collect();
        if zero || discard {
            for lv in &doomed {
                self.scrub_lv(parse_uuid(lv).expect("LV named by UUID"), zero, discard)?;
            }
        }
        self.deactivate_lvs(&doomed);
        let names: Vec<&str> = doomed.iter().map(String::as_str).collect();
        self.remove_lvs(&names)?;
        let _ = fs::remove_dir_all(self.image_dir(img));
        let tag = format!("{RETIRED_TAG}{img}");
        if c.vg.tags.contains(&tag) {
            self.vg_tags_change(&[], &[tag])?;
        }
        Ok(())
    }

    fn begin_import(&self, img: Uuid) -> Result<()> {
        self.discard_import(img)?;
        self.vg_tags_change(&[format!("{IMPORTING_TAG}{img}")], &[])
    }

    fn import_template(&self, _img: Uuid, _template: (Uuid, Uuid)) -> Result<()> {
        Ok(())
    }

    fn import_data(&self, img: Uuid, vol: Uuid, md: &VolumeMetadata, len: u64) -> Result<File> {
        self.import_volume_data(img, vol, md, len)
    }

    fn import_lease(&self, _img: Uuid, vol: Uuid, alignment: u64) -> Result<(PathBuf, u64)> {
        self.clear_lease(vol, alignment)?;
        let c = self.catalogue()?;
        let slot = c
            .find(vol)
            .and_then(|lv| lv.slot)
            .ok_or(Error::VolumeNotFound(vol))?;
        Ok((
            self.device_of("leases"),
            layout::lease_offset(slot, alignment),
        ))
    }

    fn import_metadata(
        &self,
        img: Uuid,
        vol: Uuid,
        md: &VolumeMetadata,
        version: u32,
    ) -> Result<()> {
        self.publish(img, vol, md, version)
    }

    fn commit_import(&self, img: Uuid) -> Result<()> {
        let tag = format!("{IMPORTING_TAG}{img}");
        if self.catalogue()?.vg.tags.contains(&tag) {
            self.vg_tags_change(&[], &[tag])?;
        }
        Ok(())
    }

    fn discard_import(&self, img: Uuid) -> Result<()> {
        let c = self.catalogue()?;
        let tag = format!("{IMPORTING_TAG}{img}");
        if !c.vg.tags.contains(&tag) {
            return Ok(());
        }
        let doomed: Vec<String> = c
            .lvs
            .iter()
            .filter(|lv| lv.img == Some(img))
            .map(|lv| lv.vol.to_string())
            .collect();
        self.deactivate_lvs(&doomed);
        let names: Vec<&str> = doomed.iter().map(String::as_str).collect();
        self.remove_lvs(&names)?;
        self.vg_tags_change(&[], &[tag])
    }

    /// The LV's device, activated (and refreshed) here if needed.
    fn data_path(&self, _img: Uuid, vol: Uuid) -> Result<PathBuf> {
        let name = vol.to_string();
        self.ensure_active(&[&name])?;
        Ok(self.lv_path(&name))
    }

    fn open_part(&self, img: Uuid, vol: Uuid, part: Part, access: Access) -> Result<File> {
        match part {
            Part::Data => {
                let path = self.data_path(img, vol)?;
                access.open_options().open(&path).ctx("cannot open", &path)
            }
            Part::Metadata | Part::Lease => Err(Error::invalid(
                "part",
                "a block volume's metadata and lease are records in shared LVs, not files",
            )),
        }
    }

    /// Activates the chain's LVs (refreshing those active already) and
    /// links them by name in a directory of this host's.
    fn activate(&self, img: Uuid, chain: &[Uuid]) -> Result<PathBuf> {
        let names: Vec<String> = chain.iter().map(Uuid::to_string).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.ensure_active(&refs)?;
        let dir = self.image_dir(img);
        durable_dir(&dir)?;
        for name in &names {
            let link = dir.join(name);
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(self.lv_path(name), &link).ctx("cannot link", &link)?;
        }
        *self
            .env
            .prepared
            .0
            .lock()
            .expect("prepared images")
            .entry((self.sd, img))
            .or_default() += 1;
        Ok(dir)
    }

    /// The last teardown of an image deactivates its own LVs (a template
    /// other images use stays active).
    fn deactivate(&self, img: Uuid) -> Result<()> {
        {
            let mut prepared = self.env.prepared.0.lock().expect("prepared images");
            let n = prepared.entry((self.sd, img)).or_default();
            *n = n.saturating_sub(1);
            if *n > 0 {
                return Ok(());
            }
            prepared.remove(&(self.sd, img));
        }
        let c = self.catalogue()?;
        let own: Vec<String> = c
            .live()
            .filter(|(_, i)| *i == img)
            .map(|(lv, _)| lv.vol.to_string())
            .collect();
        self.deactivate_lvs(&own);
        let _ = fs::remove_dir_all(self.image_dir(img));
        Ok(())
    }

    fn volume_lease(&self, _img: Uuid, vol: Uuid) -> (PathBuf, u64) {
        let offset = self
            .catalogue()
            .ok()
            .and_then(|c| c.find(vol).and_then(|lv| lv.slot))
            .zip(self.alignment().ok())
            .map_or(0, |(slot, al)| layout::lease_offset(slot, al));
        (self.device_of("leases"), offset)
    }

    fn collect_garbage(&self) -> Result<GcReport> {
        self.collect_leftovers()
    }

    fn prepare_upgrade(&self, version: u32) -> Result<()> {
        match version {
            4 => self.add_xleases(),
            5 => self.stage_v5_records(),
            _ => Ok(()),
        }
    }

    fn finish_upgrade(&self, version: u32) -> Result<()> {
        match version {
            5 => self.clear_v4_records(),
            _ => Ok(()),
        }
    }

    fn image_of(&self, vol: Uuid) -> Result<Option<Uuid>> {
        Ok(self.catalogue()?.find(vol).and_then(|lv| lv.img))
    }

    fn data_room(&self, _img: Uuid, vol: Uuid) -> Result<Option<u64>> {
        let name = vol.to_string();
        let lvs = self
            .lvm()
            .lvs(&self.devices(), &self.vg)
            .map_err(|e| self.lvm_error(LvmAction::ReadLvs, e))?;
        match lvs.binary_search_by(|l| l.name.as_str().cmp(&name)) {
            Ok(i) => Ok(Some(lvs[i].size)),
            Err(_) => Err(Error::VolumeNotFound(vol)),
        }
    }

    fn grow_room(&self, _img: Uuid, vol: Uuid, size: u64, map_here: bool) -> Result<u64> {
        self.grow_lv(vol, size, map_here)
    }

    fn refresh_room(&self, _img: Uuid, vol: Uuid) -> Result<u64> {
        self.refresh_lv(vol)
    }

    fn mapped_room(&self, _img: Uuid, vol: Uuid) -> Option<u64> {
        self.lv_size_here(&vol.to_string())
    }

    fn own_metadata(&self) {
        self.lvm().own(&self.vg);
    }

    fn open_mailbox(&self) -> Result<(File, File)> {
        self.ensure_active(&["inbox", "outbox"])?;
        let open = |name: &str| {
            let path = self.lv_path(name);
            volume::open_direct(&path, true).ctx("cannot open", &path)
        };
        Ok((open("inbox")?, open("outbox")?))
    }

    fn add_luns(&self, luns: &[Lun]) -> Result<()> {
        self.add_luns(luns)
    }

    fn resize_lun(&self, lun: &Lun) -> Result<u64> {
        self.resize_lun(lun)
    }
}

/// A record without its NUL padding.
fn trim_record(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}
