//! The engine: storage connections, domains, pools, images, volumes and tasks.
//!
//! Engine methods are synchronous and may block on storage I/O; adapters run
//! them off their async runtimes. Every method validates its input before it
//! touches storage, and every mutating step of a task has an undo.

pub mod catalog;
pub mod domains;
pub mod export;
pub mod host;
pub mod image;
pub mod jobs;
pub mod pool;
pub mod resources;
pub mod tasks;
pub mod thin;
pub mod volume;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::backend::{self, Domain};
use crate::error::{Error, IoContext, Result};
use crate::primitives::durable;
use crate::types::Uuid;

pub use host::connections::{ConnectionParams, ConnectionStatus};
pub use pool::PoolState;
pub use tasks::{TaskCtx, TaskManager, TaskResult, TaskState, TaskStatus};

/// How old a half-created or half-removed domain directory must be before
/// start-up removes it (another host may be working on a young one).
pub const DOMAIN_LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// How long a finished task or job waits for a client to read and clear it.
pub const FINISHED_TASK_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
const HOUSEKEEPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// sanlock's io_timeout for shared domains (VDSM's default).
pub const DEFAULT_SANLOCK_IO_TIMEOUT: u32 = 10;

/// Under `mnt/`, VDSM's name for block domains' host directories (not a
/// storage connection).
const BLOCK_SD_DIR: &str = "blockSD";

/// Where the engine keeps its host-local files.
#[derive(Debug, Clone)]
pub struct Paths {
    pub data_dir: PathBuf,
    /// One directory (a mount point or a link) per storage connection.
    pub mnt: PathBuf,
    /// Links to prepared images, the paths handed to VMs.
    pub run: PathBuf,
    /// `data-center/<spUUID>/<sdUUID>` links of the connected pool.
    pub data_center: PathBuf,
    pub host_state: PathBuf,
    /// Host jobs' records.
    pub jobs: PathBuf,
}

impl Paths {
    pub fn new(data_dir: &Path) -> Paths {
        Paths {
            data_dir: data_dir.to_path_buf(),
            mnt: data_dir.join("mnt"),
            run: data_dir.join("run").join("storage"),
            data_center: data_dir.join("data-center"),
            host_state: data_dir.join("host-state.json"),
            jobs: data_dir.join("jobs"),
        }
    }

    /// The link a prepared image is reached through (it exists while the
    /// image is prepared).
    pub fn run_link(&self, sd: Uuid, img: Uuid) -> PathBuf {
        self.run.join(sd.to_string()).join(img.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub task_workers: usize,
    pub max_tasks: usize,
    pub monitor: host::monitor::MonitorTiming,
    /// The SDM lease of shared (non-LOCALFS) domains: sanlock with this
    /// io_timeout (seconds), or None for flock (one host only).
    pub sanlock_io_timeout: Option<u32>,
    /// Directories LOCALFS connections may lie under, besides the data
    /// directory.
    pub local_roots: Vec<PathBuf>,
    /// Block devices usable as LUNs besides those found.
    pub block_devices: Vec<PathBuf>,
    pub thin: thin::Settings,
    /// How many times its size a domain's thin catalog volumes may
    /// promise (Cinder's `max_over_subscription_ratio`).
    pub catalog_over_subscription: f64,
    /// Where catalog backups go, and how they are compressed.
    pub backup: catalog::BackupSettings,
    /// The iSCSI portal (`address:port` of this host's tgtd) other hosts
    /// reach catalog volumes at; None: no iSCSI.
    pub iscsi_portal: Option<String>,
}

impl EngineConfig {
    pub fn new(data_dir: &Path) -> Self {
        EngineConfig {
            data_dir: data_dir.to_path_buf(),
            task_workers: tasks::DEFAULT_WORKERS,
            max_tasks: tasks::DEFAULT_MAX_TASKS,
            monitor: host::monitor::MonitorTiming::default(),
            sanlock_io_timeout: Some(DEFAULT_SANLOCK_IO_TIMEOUT),
            local_roots: Vec::new(),
            block_devices: Vec::new(),
            thin: thin::Settings::default(),
            catalog_over_subscription: catalog::MAX_OVER_SUBSCRIPTION,
            // Cinder's posix driver keeps them under its state directory.
            backup: catalog::BackupSettings {
                target: catalog::BackupTarget::Dir(data_dir.join("backup")),
                compression: crate::primitives::chunked_backup::Compression::Zlib,
            },
            iscsi_portal: None,
        }
    }
}

/// What this host remembers across restarts: its storage connections and
/// the pool it is connected to. (VDSM relies on its management engine to
/// resend these; a standalone Cairn host restores them itself.)
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HostState {
    pub connections: Vec<host::connections::ConnectionRecord>,
    pub pool: Option<pool::PoolRecord>,
}

pub struct Engine {
    pub paths: Paths,
    pub tasks: TaskManager,
    /// Host jobs (SDM verbs), persisted in the data dir.
    pub jobs: TaskManager,
    pub resources: resources::ResourceManager,
    host_state: Mutex<HostState>,
    pool: Mutex<Option<Arc<PoolState>>>,
    domain_cache: Mutex<HashMap<Uuid, Arc<dyn Domain>>>,
    /// Held while LUNs are checked and made PVs (a new VG, a domain's
    /// extension): two requests for one LUN must not both find it free.
    lun_claims: Mutex<()>,
    /// Block images prepared on this host (outlives the domain cache).
    block_prepared: Arc<backend::Prepared>,
    nbd: export::nbd::NbdServers,
    tickets: export::tickets::Tickets,
    monitors: host::monitor::Monitors,
    monitor_timing: host::monitor::MonitorTiming,
    sanlock_io_timeout: Option<u32>,
    local_roots: Vec<PathBuf>,
    lvm: Arc<crate::primitives::lvm::Lvm>,
    block_devices: Vec<PathBuf>,
    pub thin: thin::Thin,
    /// The connected pool's catalog, opened by its SPM.
    catalogs: catalog::Catalogs,
    catalog_over_subscription: f64,
    backup_settings: catalog::BackupSettings,
    iscsi_portal: Option<String>,
}

impl Engine {
    /// Opens the engine on its data directory and restores the connections
    /// and pool recorded there.
    pub fn open(config: EngineConfig) -> Result<Arc<Engine>> {
        let paths = Paths::new(&config.data_dir);
        for dir in [
            &paths.data_dir,
            &paths.mnt,
            &paths.run,
            &paths.data_center,
            &paths.jobs,
        ] {
            fs::create_dir_all(dir).ctx("cannot create", dir)?;
        }
        // Roots are compared with canonical LOCALFS paths.
        let mut local_roots = vec![paths
            .data_dir
            .canonicalize()
            .ctx("cannot resolve", &paths.data_dir)?];
        for root in &config.local_roots {
            match root.canonicalize() {
                Ok(r) => local_roots.push(r),
                Err(e) => {
                    tracing::warn!(root = %root.display(), error = %e, "local storage root is not usable; ignored")
                }
            }
        }
        let state: HostState = match fs::read(&paths.host_state) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::io_path("cannot parse", &paths.host_state, io::Error::other(e))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => HostState::default(),
            Err(e) => return Err(Error::io_path("cannot read", &paths.host_state, e)),
        };
        let engine = Arc::new(Engine {
            paths,
            tasks: TaskManager::new(config.task_workers, config.max_tasks),
            jobs: TaskManager::new(jobs::JOB_WORKERS, config.max_tasks),
            resources: resources::ResourceManager::new(),
            host_state: Mutex::new(HostState::default()),
            pool: Mutex::new(None),
            domain_cache: Mutex::new(HashMap::new()),
            lun_claims: Mutex::new(()),
            block_prepared: Arc::default(),
            nbd: export::nbd::NbdServers::default(),
            tickets: export::tickets::Tickets::default(),
            monitors: host::monitor::Monitors::default(),
            monitor_timing: config.monitor,
            sanlock_io_timeout: config.sanlock_io_timeout,
            local_roots,
            lvm: Arc::new(crate::primitives::lvm::Lvm::new()),
            block_devices: config.block_devices.clone(),
            thin: thin::Thin::new(config.thin.clone()),
            catalogs: catalog::Catalogs::default(),
            catalog_over_subscription: config.catalog_over_subscription,
            backup_settings: config.backup.clone(),
            iscsi_portal: config.iscsi_portal.clone(),
        });
        engine.thin.bind(Arc::downgrade(&engine));
        engine
            .tasks
            .set_runner(Arc::new(tasks::gc::EngineRunner(Arc::downgrade(&engine))));
        engine
            .jobs
            .set_runner(Arc::new(tasks::gc::EngineRunner(Arc::downgrade(&engine))));
        engine.restore(state);
        engine.keep_reserves();
        Engine::watch_spm_lease(&engine);
        Engine::keep_house(&engine);
        Ok(engine)
    }

    /// Ages out what clients left behind: finished tasks and jobs nobody
    /// cleared, and image tickets abandoned after they expired.
    fn keep_house(engine: &Arc<Engine>) {
        let weak = Arc::downgrade(engine);
        std::thread::Builder::new()
            .name("housekeeper".into())
            .spawn(move || loop {
                std::thread::sleep(HOUSEKEEPING_INTERVAL);
                let Some(engine) = weak.upgrade() else { return };
                let forgotten =
                    engine.tasks.expire(FINISHED_TASK_TTL) + engine.jobs.expire(FINISHED_TASK_TTL);
                if forgotten > 0 {
                    tracing::info!(forgotten, "aged out finished tasks and jobs nobody cleared");
                }
                engine.sweep_tickets();
                engine.keep_reserves();
            })
            .expect("spawn the housekeeper thread");
    }

    /// Makes the space reserves that are missing and fit again: the data
    /// directory's and those of the connected pool's domains.
    fn keep_reserves(&self) {
        crate::primitives::reserve::ensure(&self.paths.data_dir);
        let Some(pool) = self.connected_pool_id() else {
            return;
        };
        for sd in self.visible_domains().unwrap_or_default() {
            if let Ok(dom) = self.domain(sd) {
                if dom.manifest().is_ok_and(|m| m.pools.contains(&pool)) {
                    dom.ensure_reserve();
                }
            }
        }
    }

    /// True when the data dir has no recorded state yet (first start).
    pub fn is_pristine(&self) -> bool {
        !self.paths.host_state.exists()
    }

    fn restore(&self, state: HostState) {
        for rec in &state.connections {
            if let Err(e) = self.establish(rec) {
                tracing::warn!(connection = %rec.spec, error = %e, "cannot restore storage connection");
            }
        }
        self.host_state.lock().expect("host state").connections = state.connections.clone();
        if let Ok(mounts) = self.mount_dirs() {
            for mount in mounts {
                backend::collect_mount_garbage(&mount, DOMAIN_LEFTOVER_AGE);
            }
        }
        // Host jobs need only the storage connections.
        let report = self.jobs.recover(&self.paths.jobs);
        tracing::info!(?report, "host jobs recovered");
        if let Some(rec) = state.pool {
            let spm = rec.spm;
            match self.connect_pool(rec.id, rec.host_id, rec.master_sd, rec.master_version) {
                Ok(()) if spm => {
                    if let Err(e) = self.spm_start_now(rec.id, None) {
                        tracing::warn!(pool = %rec.id, error = %e, "cannot resume the SPM role");
                    }
                }
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(pool = %rec.id, error = %e, "cannot reconnect storage pool")
                }
            }
        }
    }

    fn save_host_state(&self, change: impl FnOnce(&mut HostState)) -> Result<()> {
        let mut st = self.host_state.lock().expect("host state");
        let mut next = st.clone();
        change(&mut next);
        let bytes = serde_json::to_vec_pretty(&next).expect("host state serializes");
        durable::write_atomic(&self.paths.host_state, &bytes, 0o600)
            .ctx("cannot save", &self.paths.host_state)?;
        *st = next;
        Ok(())
    }

    /// Finds a domain on the connected storage. Cached; a cached domain whose
    /// metadata vanished (formatted, disconnected) is looked up again.
    pub fn domain(&self, sd: Uuid) -> Result<Arc<dyn Domain>> {
        if let Some(d) = self.domain_cache.lock().expect("domain cache").get(&sd) {
            if d.is_present() {
                return Ok(d.clone());
            }
        }
        self.domain_cache.lock().expect("domain cache").remove(&sd);
        let (mounts, block) = (self.mount_dirs()?, self.block_env());
        let storage = backend::Storage {
            mounts: &mounts,
            block: &block,
        };
        let dom = backend::find(storage, sd)?.ok_or(Error::DomainNotFound(sd))?;
        self.domain_cache
            .lock()
            .expect("domain cache")
            .insert(sd, dom.clone());
        Ok(dom)
    }

    /// Every domain visible on the connected storage.
    pub fn visible_domains(&self) -> Result<Vec<Uuid>> {
        let (mounts, block) = (self.mount_dirs()?, self.block_env());
        Ok(backend::visible(backend::Storage {
            mounts: &mounts,
            block: &block,
        }))
    }

    /// The LUNs this host sees now (logins and rescans change them).
    pub fn luns(&self) -> Vec<crate::primitives::luns::Lun> {
        crate::primitives::luns::discover(&self.block_devices)
    }

    /// What block domains are reached through, as of now.
    pub(crate) fn block_env(&self) -> backend::BlockEnv {
        backend::BlockEnv {
            lvm: self.lvm.clone(),
            devices: self.luns().into_iter().map(|l| l.path).collect(),
            host_root: self.paths.mnt.join(BLOCK_SD_DIR),
            prepared: self.block_prepared.clone(),
        }
    }

    pub(crate) fn mount_dirs(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.paths.mnt).ctx("cannot list", &self.paths.mnt)? {
            let entry = entry.ctx("cannot list", &self.paths.mnt)?;
            if entry.file_name() != BLOCK_SD_DIR {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }

    /// The sanlock io_timeout if the domain takes sanlock leases: shared
    /// domains, unless configured for flock.
    pub(crate) fn sanlock_for(&self, dom: &dyn Domain) -> Option<u32> {
        dom.caps()
            .shared
            .then_some(self.sanlock_io_timeout)
            .flatten()
    }

    /// The SDM lease of a pool whose master is `master`.
    pub(crate) fn sdm_lease(
        &self,
        master: &dyn Domain,
    ) -> Result<Box<dyn crate::primitives::lease::Lease>> {
        use crate::primitives::lease::{FlockLease, SanlockLease};
        let m = master.manifest()?;
        let areas = master.lease_areas();
        Ok(match self.sanlock_for(master) {
            Some(io_timeout) => Box::new(SanlockLease::new(
                &master.id().to_string(),
                &areas.ids,
                &areas.leases,
                domains::lease_geometry(&m)?,
                io_timeout,
            )),
            None => Box::new(FlockLease::new(&areas.leases)),
        })
    }

    /// Locks an image (its whole chain) under a shared lock on its domain.
    pub fn lock_image(
        &self,
        sd: Uuid,
        img: Uuid,
        mode: resources::Mode,
    ) -> Result<resources::Guard> {
        use resources::{Mode, Resource, DEFAULT_TIMEOUT};
        self.resources.acquire(
            &[
                (Resource::storage(sd), Mode::Shared),
                (Resource::image(sd, img), mode),
            ],
            DEFAULT_TIMEOUT,
        )
    }

    /// Locks a pool or domain exclusively.
    pub fn lock_storage(&self, ids: &[Uuid]) -> Result<resources::Guard> {
        use resources::{Mode, Resource, DEFAULT_TIMEOUT};
        let reqs: Vec<_> = ids
            .iter()
            .map(|&id| (Resource::storage(id), Mode::Exclusive))
            .collect();
        self.resources.acquire(&reqs, DEFAULT_TIMEOUT)
    }

    fn forget_domain(&self, sd: Uuid) {
        self.domain_cache.lock().expect("domain cache").remove(&sd);
    }
}
