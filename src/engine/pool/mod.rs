//! Storage pools and the SPM role.
//!
//! Pool metadata lives in the master domain's metadata (`POOL_*` keys,
//! `MASTER_VERSION`). The SPM is the host holding the pool's lease; on a
//! single host that is a `flock` on the master domain's `dom_md/leases`.

pub mod master;
pub mod membership;
pub mod upgrade;

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::Domain;
use crate::engine::Engine;
use crate::error::{Error, IoContext, Result};
use crate::format::domain_md::is_safe_value;
use crate::format::manifest::PoolMetadata;
use crate::format::manifest::{K_POOL_UUID, K_ROLE, MAX_DESCRIPTION};
use crate::primitives::lease::{Lease, LeaseError};
use crate::types::{DomainClass, DomainRole, DomainType, Uuid};

pub const MAX_HOST_ID: u32 = 2000;
/// How often the SPM lease watchdog asks sanlock about the lease.
const WATCHDOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// cairnd's exit status when it lost the SPM lease with tasks running.
pub const EXIT_LEASE_LOST: i32 = 75;
pub const SPM_ID_FREE: i64 = -1;
pub const LVER_INVALID: i64 = -1;
pub(crate) const STATUS_ACTIVE: &str = "Active";
pub(crate) const STATUS_ATTACHED: &str = "Attached";

/// The connected pool, as remembered in the host state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PoolRecord {
    pub id: Uuid,
    pub host_id: u32,
    pub master_sd: Uuid,
    pub master_version: i64,
    /// Whether this host was SPM; the role is resumed on restart.
    pub spm: bool,
}

#[derive(Debug)]
pub struct PoolState {
    pub id: Uuid,
    pub host_id: u32,
    pub master_sd: Uuid,
    pub master_version: i64,
    lease: Box<dyn Lease>,
    /// Set once the lease is held and interrupted tasks are recovered: only
    /// then may new tasks run (recovery and garbage collection must not see
    /// a new task's half-made files).
    ready: std::sync::atomic::AtomicBool,
}

impl PoolState {
    pub(super) fn new(
        id: Uuid,
        host_id: u32,
        master_sd: Uuid,
        master_version: i64,
        lease: Box<dyn Lease>,
    ) -> PoolState {
        PoolState {
            id,
            host_id,
            master_sd,
            master_version,
            lease,
            ready: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn is_spm(&self) -> bool {
        self.is_ready() && self.lease.is_held()
    }

    fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Starts (or stops) accepting SPM work; the lease is kept either way.
    pub(super) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, std::sync::atomic::Ordering::SeqCst);
    }

    pub(super) fn lease(&self) -> &dyn Lease {
        self.lease.as_ref()
    }
}

#[derive(Debug, Clone)]
pub struct CreatePool {
    pub id: Uuid,
    pub name: String,
    pub master_sd: Uuid,
    pub master_version: i64,
    pub domains: Vec<Uuid>,
}

/// `SpmStatus`.
#[derive(Debug, Clone, Serialize)]
pub struct SpmStatus {
    #[serde(rename = "spmId")]
    pub spm_id: i64,
    #[serde(rename = "spmStatus")]
    pub spm_status: &'static str,
    #[serde(rename = "spmLver")]
    pub spm_lver: i64,
}

/// `StoragePoolInfo`.
#[derive(Debug, Clone, Serialize)]
pub struct PoolInfo {
    pub name: String,
    pub isoprefix: String,
    pub pool_status: &'static str,
    pub lver: i64,
    pub domains: String,
    pub master_uuid: Uuid,
    pub version: String,
    pub spm_id: i64,
    #[serde(rename = "type")]
    pub domain_type: DomainType,
    pub master_ver: i64,
}

/// `StoragePoolDomainInfo` (sizes are strings in the schema).
#[derive(Debug, Clone, Serialize)]
pub struct PoolDomainInfo {
    pub status: String,
    pub diskfree: String,
    pub disktotal: String,
    pub alerts: Vec<serde_json::Value>,
    pub version: u32,
    pub isoprefix: String,
}

/// `StoragePoolFullInfo`.
#[derive(Debug, Clone, Serialize)]
pub struct PoolFullInfo {
    pub info: PoolInfo,
    pub dominfo: BTreeMap<Uuid, PoolDomainInfo>,
}

impl Engine {
    /// Creates a pool with `master_sd` as master. Idempotent: creating the
    /// same pool again on the same master succeeds without changes.
    pub fn create_pool(&self, req: &CreatePool) -> Result<()> {
        if req.name.chars().count() > MAX_DESCRIPTION {
            return Err(Error::PoolDescriptionTooLong(req.name.chars().count()));
        }
        if !is_safe_value(&req.name) {
            return Err(Error::invalid("name", "may not contain line breaks or NUL"));
        }
        if req.master_version < 0 {
            return Err(Error::invalid("masterVersion", "must not be negative"));
        }
        let mut members = req.domains.clone();
        if !members.contains(&req.master_sd) {
            members.push(req.master_sd);
        }
        let mut locked = members.clone();
        locked.push(req.id);
        let _lock = self.lock_storage(&locked)?;
        let master = self.domain(req.master_sd)?;
        let mm = master.manifest()?;
        if mm.pools == [req.id] && mm.role == DomainRole::Master {
            let p = mm.pool.as_ref().expect("master has pool metadata");
            if p.description == req.name && p.master_version == req.master_version {
                return Ok(());
            }
        }
        let mut doms: Vec<(Arc<dyn Domain>, Uuid)> = Vec::new();
        for &sd in &members {
            let dom = self.domain(sd)?;
            let m = joinable(&*dom)?;
            // Attached to this very pool by an interrupted create: go on.
            let retry = m.pools == [req.id] && m.role == DomainRole::Regular;
            if let Some(&other) = m.pools.first().filter(|_| !retry) {
                return Err(Error::DomainAttached { sd, pool: other });
            }
            doms.push((dom, sd));
        }
        // Regular members first: a crash before the master is written leaves
        // no pool, only attached domains that a retry re-attaches.
        for (dom, sd) in doms.iter().filter(|(_, sd)| *sd != req.master_sd) {
            dom.update(|md| {
                md.set(K_POOL_UUID, req.id.to_string());
                Ok(())
            })
            .map_err(|e| Error::PoolCreation {
                pool: req.id,
                reason: format!("attaching {sd}: {e}"),
            })?;
        }
        crate::failpoint::hit("pool.create.after_members")?;
        master.ensure_master_dirs()?;
        let domains = members
            .iter()
            .map(|&sd| {
                let status = if sd == req.master_sd {
                    STATUS_ACTIVE
                } else {
                    STATUS_ATTACHED
                };
                (sd, status.to_string())
            })
            .collect();
        write_master(&*master, req.id, domains, &req.name, req.master_version)?;
        crate::failpoint::hit("pool.create.done")?;
        tracing::info!(pool = %req.id, master = %req.master_sd, "storage pool created");
        Ok(())
    }

    pub fn connected_pool_id(&self) -> Option<Uuid> {
        self.pool.lock().expect("pool").as_ref().map(|p| p.id)
    }

    pub fn connected_pool(&self, id: Uuid) -> Result<Arc<PoolState>> {
        match self.pool.lock().expect("pool").as_ref() {
            Some(p) if p.id == id => Ok(p.clone()),
            _ => Err(Error::PoolNotConnected(id)),
        }
    }

    pub fn connect_pool(
        &self,
        id: Uuid,
        host_id: u32,
        master_sd: Uuid,
        master_version: i64,
    ) -> Result<()> {
        let _lock = self.lock_storage(&[id])?;
        if !(1..=MAX_HOST_ID).contains(&host_id) {
            return Err(Error::invalid(
                "hostID",
                format!("{host_id} is not in 1..{MAX_HOST_ID}"),
            ));
        }
        {
            let current = self.pool.lock().expect("pool");
            match current.as_ref() {
                Some(p) if p.id == id && p.host_id == host_id && p.master_sd == master_sd => {
                    return Ok(())
                }
                Some(p) if p.id == id => {
                    return Err(Error::PoolWrongMaster {
                        pool: id,
                        reason: format!(
                            "already connected with host id {} and master {}",
                            p.host_id, p.master_sd
                        ),
                    })
                }
                Some(p) => return Err(Error::PoolAlreadyConnected(p.id)),
                None => {}
            }
        }
        let (master, pool_md) = self.current_master(id, master_sd, master_version)?;
        self.link_pool(id, master_sd, &pool_md)?;
        let lease = self.sdm_lease(&*master)?;
        self.install_pool(
            Arc::new(PoolState::new(
                id,
                host_id,
                master_sd,
                master_version,
                lease,
            )),
            false,
        )?;
        tracing::info!(pool = %id, host_id, master = %master_sd, "connected to storage pool");
        Ok(())
    }

    /// `master_sd` and its pool metadata, if it is the current master of
    /// pool `id` at `master_version` (no other member superseded it).
    pub(crate) fn current_master(
        &self,
        id: Uuid,
        master_sd: Uuid,
        master_version: i64,
    ) -> Result<(Arc<dyn Domain>, PoolMetadata)> {
        let master = match self.domain(master_sd) {
            Ok(d) => d,
            Err(Error::DomainNotFound(_)) => return Err(Error::PoolMasterNotFound(id)),
            Err(e) => return Err(e),
        };
        let pool_md = master_of(&master.manifest()?, id).ok_or_else(|| Error::PoolWrongMaster {
            pool: id,
            reason: format!("domain {master_sd} is not the master of this pool"),
        })?;
        check_master_version(id, &pool_md, master_version)?;
        self.refuse_moved_master(id, master_sd, &pool_md)?;
        Ok((master, pool_md))
    }

    /// Makes `state` the connected pool and records it in the host state
    /// (the swap happens even if recording fails).
    pub(crate) fn install_pool(&self, state: Arc<PoolState>, spm: bool) -> Result<()> {
        let record = PoolRecord {
            id: state.id,
            host_id: state.host_id,
            master_sd: state.master_sd,
            master_version: state.master_version,
            spm,
        };
        *self.pool.lock().expect("pool") = Some(state);
        self.sync_mailboxes();
        self.save_host_state(|st| st.pool = Some(record))
    }

    /// `data-center/<sp>/<sd>` and `mastersd` links, as VDSM makes them.
    pub(crate) fn link_pool(&self, id: Uuid, master_sd: Uuid, md: &PoolMetadata) -> Result<()> {
        let dir = self.paths.data_center.join(id.to_string());
        if dir.exists() {
            fs::remove_dir_all(&dir).ctx("cannot reset", &dir)?;
        }
        fs::create_dir_all(&dir).ctx("cannot create", &dir)?;
        for (sd, _) in &md.domains {
            if let Ok(dom) = self.domain(*sd) {
                let link = dir.join(sd.to_string());
                std::os::unix::fs::symlink(dom.host_dir(), &link).ctx("cannot link", &link)?;
                if *sd == master_sd {
                    let m = dir.join("mastersd");
                    std::os::unix::fs::symlink(dom.host_dir(), &m).ctx("cannot link", &m)?;
                }
            }
        }
        Ok(())
    }

    pub fn disconnect_pool(&self, id: Uuid, host_id: u32) -> Result<()> {
        let _lock = self.lock_storage(&[id])?;
        let pool = self.connected_pool(id)?;
        if pool.host_id != host_id {
            return Err(Error::invalid(
                "hostID",
                format!("connected as host {}, not {host_id}", pool.host_id),
            ));
        }
        if pool.is_spm() {
            return Err(Error::PoolWrongMaster {
                pool: id,
                reason: "this host is SPM; call StoragePool.spmStop first".into(),
            });
        }
        pool.lease.leave();
        *self.pool.lock().expect("pool") = None;
        self.sync_mailboxes();
        let dir = self.paths.data_center.join(id.to_string());
        if dir.exists() {
            fs::remove_dir_all(&dir).ctx("cannot remove", &dir)?;
        }
        self.save_host_state(|st| st.pool = None)?;
        tracing::info!(pool = %id, "disconnected from storage pool");
        Ok(())
    }

    pub(crate) fn pool_metadata(
        &self,
        pool: &PoolState,
    ) -> Result<(
        Arc<dyn Domain>,
        PoolMetadata,
        crate::format::manifest::DomainManifest,
    )> {
        let master = self.domain(pool.master_sd)?;
        let m = master.manifest()?;
        let md = master_of(&m, pool.id).ok_or_else(|| Error::PoolWrongMaster {
            pool: pool.id,
            reason: format!(
                "domain {} is no longer the pool's master; StoragePool.refresh with the new one",
                pool.master_sd
            ),
        })?;
        Ok((master, md, m))
    }

    pub fn pool_info(&self, id: Uuid) -> Result<PoolFullInfo> {
        let pool = self.connected_pool(id)?;
        let (_, md, m) = self.pool_metadata(&pool)?;
        let mut dominfo = BTreeMap::new();
        for (sd, status) in &md.domains {
            let (total, free, version) = match self
                .domain(*sd)
                .and_then(|d| Ok((d.space()?, d.manifest()?.version)))
            {
                Ok(((t, f), v)) => (t.to_string(), f.to_string(), v),
                Err(_) => (String::new(), String::new(), 0),
            };
            dominfo.insert(
                *sd,
                PoolDomainInfo {
                    status: status.clone(),
                    diskfree: free,
                    disktotal: total,
                    alerts: Vec::new(),
                    version,
                    isoprefix: String::new(),
                },
            );
        }
        let domains = md
            .domains
            .iter()
            .map(|(sd, st)| format!("{sd}:{st}"))
            .collect::<Vec<_>>()
            .join(",");
        Ok(PoolFullInfo {
            info: PoolInfo {
                name: md.description.clone(),
                isoprefix: String::new(),
                pool_status: "connected",
                lver: md.lver,
                domains,
                master_uuid: pool.master_sd,
                version: m.version.to_string(),
                spm_id: md.spm_id,
                domain_type: m.domain_type,
                master_ver: md.master_version,
            },
            dominfo,
        })
    }

    /// `StoragePool.spmStart`: returns a task that takes the SPM role and,
    /// given `dom_version`, upgrades the pool's domains to that format.
    pub fn spm_start(self: &Arc<Self>, id: Uuid, dom_version: Option<u32>) -> Result<Uuid> {
        self.connected_pool(id)?;
        if let Some(v) = dom_version.filter(|v| !(3..=upgrade::NEWEST).contains(v)) {
            return Err(Error::UnsupportedDomainVersion(v, "3, 4, 5"));
        }
        let engine = self.clone();
        self.tasks.spawn("spmStart", None, move |_ctx| {
            engine.spm_start_now(id, dom_version)
        })
    }

    /// As VDSM: the master, then every active data domain of the pool, is
    /// upgraded to format `version`. A domain that cannot be reached is
    /// upgraded when it is activated.
    fn upgrade_pool(&self, master: &dyn Domain, version: u32) -> Result<()> {
        self.upgrade_domain(master, version)?;
        let Some(pmd) = master.manifest()?.pool else {
            return Ok(());
        };
        for (sd, status) in pmd.domains {
            if sd == master.id() || status != STATUS_ACTIVE {
                continue;
            }
            let upgraded = self.domain(sd).and_then(|dom| {
                if dom.manifest()?.class != crate::types::DomainClass::Data {
                    return Ok(());
                }
                self.upgrade_domain(&*dom, version)
            });
            if let Err(e) = upgraded {
                tracing::warn!(sd = %sd, version, error = %e, "cannot upgrade a pool domain now");
            }
        }
        Ok(())
    }

    /// Takes the SPM role: lease, then `lver + 1` and our host id written to
    /// the pool metadata, then (given `dom_version`) the domains' format
    /// upgrades, the master directories, the recovery of persisted tasks,
    /// and only then new tasks.
    pub fn spm_start_now(&self, id: Uuid, dom_version: Option<u32>) -> Result<()> {
        let pool = self.connected_pool(id)?;
        // Serializes SPM start/stop with each other and with pool changes.
        let _lock = self.lock_storage(&[id])?;
        if pool.is_spm() {
            return Ok(());
        }
        let (_, pmd, _) = self.pool_metadata(&pool)?;
        self.refuse_moved_master(id, pool.master_sd, &pmd)?;
        pool.lease.acquire(pool.host_id).map_err(|e| match e {
            LeaseError::Busy { .. } => Error::AcquireLease {
                pool: id,
                reason: "another host or process is SPM".into(),
            },
            e => Error::AcquireLease {
                pool: id,
                reason: e.to_string(),
            },
        })?;
        let result = (|| -> Result<()> {
            let master = self.domain(pool.master_sd)?;
            let lver = master.update(|md| {
                let m = crate::format::manifest::DomainManifest::from_metadata(pool.master_sd, md)?;
                let mut p = m.pool.ok_or(Error::PoolMasterNotFound(id))?;
                p.lver = p.lver.max(0) + 1;
                p.spm_id = i64::from(pool.host_id);
                p.write(md);
                Ok(p.lver)
            })?;
            if let Some(version) = dom_version {
                self.upgrade_pool(&*master, version)?;
            }
            master.ensure_master_dirs()?;
            if let Some(pmd) = master.manifest()?.pool {
                self.demote_stale_masters(id, pool.master_sd, &pmd)?;
            }
            let tasks_dir = master.master_dir()?.join("tasks");
            let start = std::time::Instant::now();
            let report = self.tasks.recover(&tasks_dir);
            let recovery_ms = start.elapsed().as_secs_f64() * 1000.0;
            tracing::info!(pool = %id, ?report, recovery_ms, "persisted tasks recovered");
            for (sd, _) in master
                .manifest()?
                .pool
                .map(|p| p.domains)
                .unwrap_or_default()
            {
                match self.domain(sd) {
                    Ok(dom) => {
                        self.collect_garbage(&*dom)?;
                    }
                    Err(e) => {
                        tracing::warn!(sd = %sd, error = %e, "cannot collect garbage on an unreachable domain")
                    }
                }
            }
            self.save_host_state(|st| {
                if let Some(p) = st.pool.as_mut() {
                    p.spm = true;
                }
            })?;
            pool.set_ready(true);
            self.sync_mailboxes();
            tracing::info!(pool = %id, host_id = pool.host_id, lver, "this host is now SPM");
            Ok(())
        })();
        if let Err(e) = result {
            pool.lease.release();
            return Err(Error::SpmStart {
                pool: id,
                reason: e.to_string(),
            });
        }
        Ok(())
    }

    pub fn spm_stop(&self, id: Uuid) -> Result<()> {
        let pool = self.connected_pool(id)?;
        // Serializes SPM start/stop with each other and with pool changes.
        let _lock = self.lock_storage(&[id])?;
        if !pool.is_spm() {
            return Ok(());
        }
        if let Some(task) = self.tasks.unfinished(None) {
            return Err(Error::TaskInProgress { pool: id, task });
        }
        let master = self.domain(pool.master_sd)?;
        master.update(|md| {
            let m = crate::format::manifest::DomainManifest::from_metadata(pool.master_sd, md)?;
            let mut p = m.pool.ok_or(Error::PoolMasterNotFound(id))?;
            p.spm_id = SPM_ID_FREE;
            p.write(md);
            Ok(())
        })?;
        pool.set_ready(false);
        self.sync_mailboxes();
        self.tasks.forget_store(&master.master_dir()?.join("tasks"));
        master.release_master()?;
        pool.lease.release();
        self.save_host_state(|st| {
            if let Some(p) = st.pool.as_mut() {
                p.spm = false;
            }
        })?;
        tracing::info!(pool = %id, "SPM role released");
        Ok(())
    }

    pub fn spm_status(&self, id: Uuid) -> Result<SpmStatus> {
        let pool = self.connected_pool(id)?;
        let (_, md, _) = self.pool_metadata(&pool)?;
        let status = if pool.is_spm() { "SPM" } else { "Free" };
        Ok(SpmStatus {
            spm_id: md.spm_id,
            spm_status: status,
            spm_lver: md.lver,
        })
    }

    /// The pool, if this host is its SPM.
    pub fn require_spm(&self, id: Uuid) -> Result<Arc<PoolState>> {
        let pool = self.connected_pool(id)?;
        if !pool.is_spm() {
            return Err(Error::NotSpm(id));
        }
        Ok(pool)
    }

    /// Where pool tasks are persisted: the master domain's `master/tasks`.
    pub fn task_store(&self, pool: &PoolState) -> Result<std::path::PathBuf> {
        Ok(self.domain(pool.master_sd)?.master_dir()?.join("tasks"))
    }

    /// A domain that belongs to the connected pool `pool`.
    pub fn pool_domain(&self, pool: &PoolState, sd: Uuid) -> Result<Arc<dyn Domain>> {
        let dom = self.domain(sd)?;
        if !dom.manifest()?.pools.contains(&pool.id) {
            return Err(Error::DomainNotInPool { sd, pool: pool.id });
        }
        Ok(dom)
    }
}

impl Engine {
    /// Starts the SPM lease watchdog, which lives as long as the engine.
    pub(super) fn watch_spm_lease(engine: &Arc<Engine>) {
        let engine = Arc::downgrade(engine);
        std::thread::Builder::new()
            .name("spm-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(WATCHDOG_INTERVAL);
                match engine.upgrade() {
                    Some(e) => e.check_spm_lease(),
                    None => return,
                }
            })
            .expect("spawn the SPM watchdog");
    }

    /// If this host acts as SPM but sanlock no longer holds its lease (its
    /// host id could not be renewed, or its sanlock died), it stops at once
    /// and says so. SPM tasks still running could write without the lease:
    /// as sanlock would, the process then ends, and the next SPM recovers
    /// them.
    fn check_spm_lease(&self) {
        let Some(pool) = self.pool.lock().expect("pool").clone() else {
            return;
        };
        if !pool.is_ready() || pool.lease.is_held() {
            return;
        }
        pool.set_ready(false);
        self.sync_mailboxes();
        tracing::error!(pool = %pool.id, host_id = pool.host_id, "the SPM lease is lost (sanlock no longer holds it): this host stops acting as SPM");
        if let Err(e) = self.save_host_state(|st| {
            if let Some(p) = st.pool.as_mut() {
                p.spm = false;
            }
        }) {
            tracing::warn!(error = %e, "cannot record that this host is no longer SPM");
        }
        if let Some(task) = self.tasks.unfinished(None) {
            tracing::error!(pool = %pool.id, task = %task, "SPM tasks are running without the lease; exiting so they write nothing more (the next SPM recovers them)");
            std::process::exit(EXIT_LEASE_LOST);
        }
    }
}

/// Makes `master` the master of pool `id`: its role and a fresh pool
/// metadata block (no SPM yet) listing `domains`.
pub(crate) fn write_master(
    master: &dyn Domain,
    id: Uuid,
    domains: Vec<(Uuid, String)>,
    description: &str,
    master_version: i64,
) -> Result<()> {
    let pool_md = PoolMetadata {
        domains,
        description: description.to_string(),
        spm_id: SPM_ID_FREE,
        lver: LVER_INVALID,
        master_version,
    };
    master.update(|md| {
        md.set(K_POOL_UUID, id.to_string());
        md.set(K_ROLE, DomainRole::Master.name());
        pool_md.write(md);
        Ok(())
    })
}

/// The pool metadata of a domain that is pool `id`'s master.
pub(crate) fn master_of(
    m: &crate::format::manifest::DomainManifest,
    id: Uuid,
) -> Option<PoolMetadata> {
    m.pool
        .clone()
        .filter(|_| m.role == DomainRole::Master && m.pools.contains(&id))
}

/// The manifest of a domain that may join a pool (a Data domain).
pub(crate) fn joinable(dom: &dyn Domain) -> Result<crate::format::manifest::DomainManifest> {
    let m = dom.manifest()?;
    if m.class != DomainClass::Data {
        return Err(Error::DomainClass {
            sd: dom.id(),
            reason: "only Data domains can join a pool",
        });
    }
    Ok(m)
}

/// Refuses a caller's master version that is not the pool's (VDSM's
/// wrong-master error).
pub(crate) fn check_master_version(id: Uuid, md: &PoolMetadata, master_version: i64) -> Result<()> {
    if md.master_version != master_version {
        return Err(Error::PoolWrongMaster {
            pool: id,
            reason: format!(
                "master version is {}, not {master_version}",
                md.master_version
            ),
        });
    }
    Ok(())
}
