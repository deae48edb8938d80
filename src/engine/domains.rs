//! Storage domain verbs.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::backend::{self, Domain};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::domain_md::is_safe_value;
use crate::format::manifest::NewDomain;
use crate::format::manifest::{alignment_for, DomainManifest, MAX_DESCRIPTION};
use crate::format::xleases;
use crate::primitives::luns::Lun;
use crate::primitives::sanlock::dump::{direct_dump, LeaseRecord};
use crate::types::{
    parse_uuid, DomainClass, DomainType, Uuid, CREATABLE_DOMAIN_VERSIONS, DEFAULT_DOMAIN_VERSION,
};

#[derive(Debug, Clone)]
pub struct CreateDomain {
    pub sd: Uuid,
    pub domain_type: DomainType,
    /// The connection's remote path (`typeArgs`).
    pub remote_path: String,
    pub name: String,
    pub class: DomainClass,
    pub version: Option<u32>,
    /// 512, 4096, or 0 to detect.
    pub block_size: u32,
    pub max_hosts: u32,
}

/// `StorageDomainInfo`.
#[derive(Debug, Clone, Serialize)]
pub struct DomainInfo {
    pub uuid: Uuid,
    #[serde(rename = "type")]
    pub domain_type: DomainType,
    pub class: DomainClass,
    pub name: String,
    pub role: String,
    pub pool: Vec<Uuid>,
    pub version: u32,
    pub block_size: u32,
    pub alignment: u64,
    #[serde(rename = "remotePath")]
    pub remote_path: String,
    pub lver: i64,
    pub spm_id: i64,
    pub master_ver: i64,
    /// Block domains: the VG's UUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vguuid: Option<String>,
    /// Block domains: the LUN holding the metadata LV's first extent.
    #[serde(rename = "metadataDevice", skip_serializing_if = "Option::is_none")]
    pub metadata_device: Option<String>,
    /// Block domains: the LUN holding the VG's metadata (the same one).
    #[serde(rename = "vgMetadataDevice", skip_serializing_if = "Option::is_none")]
    pub vg_metadata_device: Option<String>,
}

/// `StorageDomainStats`.
#[derive(Debug, Clone, Serialize)]
pub struct DomainStats {
    pub disktotal: u64,
    pub diskfree: u64,
    pub mdavalid: bool,
    pub mdathreshold: bool,
    pub mdasize: u64,
    pub mdafree: u64,
}

/// `VolumeDump`: one volume in `StorageDomain.dump`.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeDump {
    pub image: Uuid,
    pub status: &'static str,
    #[serde(flatten)]
    pub md: Option<crate::engine::volume::MetadataFields>,
    pub apparentsize: u64,
    pub truesize: u64,
}

/// `StorageDomainDump`; the lease parts only in a full dump.
#[derive(Debug, Clone, Serialize)]
pub struct DomainDump {
    pub metadata: DomainInfo,
    pub volumes: BTreeMap<Uuid, VolumeDump>,
    /// The reserved leases (`dom_md/leases`: the SDM lease and its
    /// neighbours), on domains with sanlock leases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leases: Option<Vec<LeaseRecord>>,
    /// The host id slots (`dom_md/ids`), on domains with sanlock leases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lockspace: Option<Vec<LeaseRecord>>,
    /// External (VM) leases by id, on version 4 and later.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xleases: Option<BTreeMap<String, XleaseDump>>,
}

/// `XleaseDump`.
#[derive(Debug, Clone, Serialize)]
pub struct XleaseDump {
    pub offset: u64,
    pub updating: bool,
}

/// Slots of `dom_md/leases` a full dump reads (VDSM's reserved leases).
const RESERVED_LEASES: u64 = 100;
/// How long reading one lease area may take.
const DUMP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
pub struct DomainFilter {
    pub pool: Option<Uuid>,
    pub class: Option<DomainClass>,
    pub domain_type: Option<DomainType>,
    pub remote_path: Option<String>,
}

impl Engine {
    pub fn create_domain(&self, req: &CreateDomain) -> Result<()> {
        let version = req.version.unwrap_or(DEFAULT_DOMAIN_VERSION);
        if !CREATABLE_DOMAIN_VERSIONS.contains(&version) {
            return Err(Error::UnsupportedDomainVersion(version, "4, 5"));
        }
        if req.name.chars().count() > MAX_DESCRIPTION {
            return Err(Error::invalid(
                "name",
                format!(
                    "{} characters, at most {MAX_DESCRIPTION}",
                    req.name.chars().count()
                ),
            ));
        }
        if !is_safe_value(&req.name) {
            return Err(Error::invalid("name", "may not contain line breaks or NUL"));
        }
        if !is_safe_value(&req.remote_path) {
            return Err(Error::IllegalRemotePath(
                req.remote_path.clone(),
                "contains control characters",
            ));
        }
        if !(1..=2000).contains(&req.max_hosts) {
            return Err(Error::invalid(
                "maxHosts",
                format!("{} is not in 1..2000", req.max_hosts),
            ));
        }
        if !matches!(req.block_size, 0 | 512 | 4096) {
            return Err(Error::invalid(
                "blockSize",
                format!("{} is not 512, 4096 or 0 (detect)", req.block_size),
            ));
        }
        if version < 5 && req.block_size == 4096 {
            return Err(Error::invalid(
                "blockSize",
                "domain version 4 supports only 512-byte blocks",
            ));
        }
        let _lock = self.lock_storage(&[req.sd])?;
        match self.domain(req.sd) {
            Ok(_) => return Err(Error::DomainAlreadyExists(req.sd)),
            Err(Error::DomainNotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let dom = if req.domain_type.is_file() {
            self.create_file_domain(req, version)?
        } else {
            self.create_block_domain(req, version)?
        };
        if let Some(io_timeout) = self.sanlock_for(&*dom) {
            if let Err(e) = format_sanlock_leases(&*dom, io_timeout) {
                // Without its leases the domain is unusable: it goes.
                let _ = dom.remove();
                return Err(Error::DomainCreation {
                    sd: req.sd,
                    reason: format!("cannot initialize its sanlock leases: {e}"),
                });
            }
        }
        Ok(())
    }

    /// A block domain in the VG `typeArgs` names (by UUID), made by
    /// `LVMVolumeGroup.create`.
    fn create_block_domain(&self, req: &CreateDomain, version: u32) -> Result<Arc<dyn Domain>> {
        if !matches!(req.block_size, 0 | 512) {
            return Err(Error::invalid(
                "blockSize",
                "block domains use 512-byte sectors (VDSM's rule)",
            ));
        }
        backend::create_block_domain(
            &self.block_env(),
            &req.remote_path,
            &NewDomain {
                sd: req.sd,
                name: req.name.clone(),
                class: req.class,
                domain_type: req.domain_type,
                version,
                block_size: 512,
                alignment: 1 << 20,
                remote_path: String::new(),
            },
        )
    }

    /// The LUNs `guids` name, each once; a GUID this host does not see is
    /// refused.
    fn chosen_luns(&self, guids: &[String]) -> Result<Vec<Lun>> {
        let luns = self.luns();
        let mut chosen: Vec<Lun> = Vec::new();
        for guid in guids {
            let lun = luns
                .iter()
                .find(|l| &l.guid == guid)
                .ok_or_else(|| Error::LunUnusable {
                    guid: guid.clone(),
                    reason: "it is not among the LUNs this host sees".into(),
                })?;
            if !chosen.iter().any(|c| c.guid == lun.guid) {
                chosen.push(lun.clone());
            }
        }
        Ok(chosen)
    }

    /// `LVMVolumeGroup.create`: a VG named `name` on the LUNs `guids`.
    pub fn create_vg(&self, name: Uuid, guids: &[String]) -> Result<String> {
        let _lock = self.lock_storage(&[name])?;
        let _claim = self.lun_claims.lock().expect("LUN claims");
        let chosen = self.chosen_luns(guids)?;
        backend::create_vg(&self.block_env(), name, &chosen)
    }

    /// `LVMVolumeGroup.remove`: an unused VG (no domain, no LV) and the PV
    /// labels of its LUNs.
    pub fn remove_vg(&self, uuid: &str) -> Result<()> {
        let env = self.block_env();
        let name = backend::vg_details(&env, uuid)?.vg.name;
        let _lock = parse_uuid(&name)
            .map(|id| self.lock_storage(&[id]))
            .transpose()?;
        backend::remove_vg(&env, uuid)
    }

    /// `StorageDomain.extend` (SPM): the pool's block domain `sd` grows
    /// onto the LUNs `guids`.
    pub fn extend_domain(&self, pool: Uuid, sd: Uuid, guids: &[String]) -> Result<()> {
        if guids.is_empty() {
            return Err(Error::invalid("devlist", "no LUN given"));
        }
        let pool = self.require_spm(pool)?;
        let dom = self.pool_domain(&pool, sd)?;
        let _lock = self.lock_storage(&[sd])?;
        let _claim = self.lun_claims.lock().expect("LUN claims");
        let luns = self.chosen_luns(guids)?;
        dom.add_luns(&luns)
    }

    /// `StorageDomain.resizePV` (SPM): the domain uses all of the grown LUN
    /// `guid`; returns its new size.
    pub fn resize_pv(&self, pool: Uuid, sd: Uuid, guid: &str) -> Result<u64> {
        let pool = self.require_spm(pool)?;
        let dom = self.pool_domain(&pool, sd)?;
        let lun = self
            .chosen_luns(&[guid.to_string()])?
            .pop()
            .expect("one GUID, one LUN");
        let _lock = self.lock_storage(&[sd])?;
        dom.resize_lun(&lun)
    }

    fn create_file_domain(&self, req: &CreateDomain, version: u32) -> Result<Arc<dyn Domain>> {
        let mount = self.mount_dir(&req.remote_path)?;
        if !mount.is_dir() {
            return Err(Error::IllegalRemotePath(
                req.remote_path.clone(),
                "not connected; call StoragePool.connectStorageServer first",
            ));
        }
        let detected = backend::detect_block_size(&mount);
        let block_size = match req.block_size {
            0 => {
                if version >= 5 {
                    detected
                } else {
                    512
                }
            }
            512 if detected == 4096 => {
                return Err(Error::invalid(
                    "blockSize",
                    "the storage has 4096-byte sectors; use 4096 or 0",
                ))
            }
            bs => bs,
        };
        let alignment =
            alignment_for(block_size, req.max_hosts).expect("validated block size and host count");
        backend::create_file_domain(
            &mount,
            &NewDomain {
                sd: req.sd,
                name: req.name.clone(),
                class: req.class,
                domain_type: req.domain_type,
                version,
                block_size,
                alignment,
                remote_path: req.remote_path.clone(),
            },
        )
    }

    pub fn domain_info(&self, sd: Uuid) -> Result<DomainInfo> {
        let dom = self.domain(sd)?;
        let md = dom.read_metadata()?;
        let m = DomainManifest::from_metadata(sd, &md)?;
        let first_lun = md.get("PV0").and_then(|pv| {
            pv.split(',')
                .find_map(|f| f.strip_prefix("pv:"))
                .map(str::to_string)
        });
        let (lver, spm_id, master_ver) = match &m.pool {
            Some(p) => (p.lver, p.spm_id, p.master_version),
            None => (-1, -1, 0),
        };
        Ok(DomainInfo {
            uuid: sd,
            domain_type: m.domain_type,
            class: m.class,
            name: m.description,
            role: m.role.name().to_string(),
            pool: m.pools,
            version: m.version,
            block_size: m.block_size,
            alignment: m.alignment,
            remote_path: m.remote_path,
            lver,
            spm_id,
            master_ver,
            vguuid: md.get("VGUUID").map(str::to_string),
            metadata_device: first_lun.clone(),
            vg_metadata_device: first_lun,
        })
    }

    pub fn domain_stats(&self, sd: Uuid) -> Result<DomainStats> {
        let (total, free) = self.domain(sd)?.space()?;
        Ok(DomainStats {
            disktotal: total,
            diskfree: free,
            mdavalid: true,
            mdathreshold: true,
            mdasize: 0,
            mdafree: 0,
        })
    }

    pub fn domain_images(&self, sd: Uuid) -> Result<Vec<Uuid>> {
        self.domain(sd)?.images()
    }

    /// Volumes of a domain, or of one of its images.
    pub fn domain_volumes(&self, sd: Uuid, img: Option<Uuid>) -> Result<Vec<Uuid>> {
        let dom = self.domain(sd)?;
        match img {
            Some(img) => crate::engine::volume::own_volumes(&*dom, img),
            None => {
                let mut v = Vec::new();
                for img in dom.images()? {
                    match crate::engine::volume::own_volumes(&*dom, img) {
                        Ok(vols) => v.extend(vols),
                        // Removed while listing.
                        Err(Error::ImageNotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                v.sort();
                Ok(v)
            }
        }
    }

    /// Domain metadata and every volume with its metadata and sizes, in one
    /// pass over the domain (the fast listing).
    /// `StorageDomain.dump`; `full` adds the lease areas as they are on
    /// storage.
    pub fn dump_domain(&self, sd: Uuid, full: bool) -> Result<DomainDump> {
        let metadata = self.domain_info(sd)?;
        let dom = self.domain(sd)?;
        let mut volumes = BTreeMap::new();
        for v in dom.scan()? {
            let (apparent, true_size) = v.sizes.unwrap_or((0, 0));
            let (status, md) = match (&v.md, v.sizes) {
                (Ok(md), Some(_)) => {
                    let bad = v
                        .header
                        .as_ref()
                        .and_then(|h| crate::format::volume_md::header_disagreement(md, h));
                    (
                        if bad.is_some() { "INVALID" } else { "OK" },
                        Some(crate::engine::volume::MetadataFields::from(md)),
                    )
                }
                (Ok(md), None) => (
                    "INVALID",
                    Some(crate::engine::volume::MetadataFields::from(md)),
                ),
                (Err(_), _) => ("INVALID", None),
            };
            volumes.insert(
                v.vol,
                VolumeDump {
                    image: v.img,
                    status,
                    md,
                    apparentsize: apparent,
                    truesize: true_size,
                },
            );
        }
        let mut dump = DomainDump {
            metadata,
            volumes,
            leases: None,
            lockspace: None,
            xleases: None,
        };
        if full {
            let m = dom.manifest()?;
            if self.sanlock_for(&*dom).is_some() {
                let geometry = lease_geometry(&m)?;
                let read = |path: &std::path::Path, size: u64| {
                    direct_dump(path, size, geometry, DUMP_TIMEOUT).map_err(|e| {
                        Error::DomainAccess {
                            sd,
                            source: std::io::Error::other(e),
                        }
                    })
                };
                let areas = dom.lease_areas();
                dump.leases = Some(read(&areas.leases, RESERVED_LEASES * m.alignment)?);
                dump.lockspace = Some(read(&areas.ids, m.alignment)?);
            }
            if m.version >= 4 {
                dump.xleases = Some(self.dump_xleases(&*dom, m.alignment)?);
            }
        }
        Ok(dump)
    }

    fn dump_xleases(
        &self,
        dom: &dyn Domain,
        alignment: u64,
    ) -> Result<BTreeMap<String, XleaseDump>> {
        use std::os::unix::fs::FileExt;
        let path = dom.lease_areas().xleases;
        let mut index = vec![0; xleases::INDEX_SIZE];
        crate::primitives::nofollow::open(&path, crate::primitives::nofollow::Access::READ)
            .and_then(|f| f.read_exact_at(&mut index, alignment))
            .map_err(|e| Error::io_path("cannot read", &path, e))?;
        let records = xleases::used_records(&index).map_err(|reason| Error::DomainMetadata {
            sd: dom.id(),
            reason: format!("xleases index: {reason}"),
        })?;
        Ok(records
            .into_iter()
            .map(|r| {
                (
                    r.lease_id,
                    XleaseDump {
                        offset: r.offset,
                        updating: r.updating,
                    },
                )
            })
            .collect())
    }

    /// Erases a domain. An attached domain is refused unless `auto_detach`,
    /// and never while its pool is connected here.
    pub fn format_domain(&self, sd: Uuid, auto_detach: bool) -> Result<()> {
        self.refuse_if_exported(sd)?;
        let _lock = self.lock_storage(&[sd])?;
        let dom = self.domain(sd)?;
        let m = dom.manifest()?;
        if let Some(&pool) = m.pools.first() {
            if self.connected_pool_id() == Some(pool) {
                return Err(Error::DomainAttached { sd, pool });
            }
            if !auto_detach {
                return Err(Error::DomainAttached { sd, pool });
            }
        }
        self.forget_domain(sd);
        dom.remove()?;
        tracing::info!(sd = %sd, "storage domain formatted");
        Ok(())
    }

    pub fn host_domains(&self, filter: &DomainFilter) -> Result<Vec<Uuid>> {
        let mut out = Vec::new();
        for sd in self.visible_domains()? {
            let Ok(m) = self.domain(sd).and_then(|d| d.manifest()) else {
                continue;
            };
            let keep = filter.pool.is_none_or(|p| m.pools.contains(&p))
                && filter.class.is_none_or(|c| m.class == c)
                && filter.domain_type.is_none_or(|t| m.domain_type == t)
                && filter
                    .remote_path
                    .as_ref()
                    .is_none_or(|r| &m.remote_path == r);
            if keep {
                out.push(sd);
            }
        }
        Ok(out)
    }
}

/// Writes a shared domain's sanlock lockspace (`dom_md/ids`) and its SDM
/// lease (slot 1 of `dom_md/leases`), readable by the sanlock daemon.
fn format_sanlock_leases(dom: &dyn Domain, io_timeout: u32) -> Result<()> {
    use crate::primitives::lease::SanlockLease;
    use crate::primitives::sanlock::share_with_daemon;
    let areas = dom.lease_areas();
    for p in [&areas.ids, &areas.leases] {
        share_with_daemon(p).map_err(|e| Error::io_path("cannot share", p, e))?;
    }
    SanlockLease::new(
        &dom.id().to_string(),
        &areas.ids,
        &areas.leases,
        lease_geometry(&dom.manifest()?)?,
        io_timeout,
    )
    .format()
    .map_err(|e| {
        Error::io(
            format!("sanlock leases of domain {}", dom.id()),
            std::io::Error::other(e),
        )
    })
}

/// The sanlock layout of a domain's leases: its block size and alignment.
pub(crate) fn lease_geometry(m: &DomainManifest) -> Result<crate::primitives::sanlock::Geometry> {
    crate::primitives::sanlock::Geometry::new(m.block_size, m.alignment).map_err(|e| {
        Error::DomainMetadata {
            sd: m.sd,
            reason: e.to_string(),
        }
    })
}
