//! Moving a pool's master role: `StoragePool.switchMaster` (the SPM moves
//! it to another active domain of the pool) and `StoragePool.refresh` onto
//! the new master (how the other hosts follow).
//!
//! The new master's metadata is the commit point. Before it, the old master
//! is untouched and the pool stays where it was. After it, two domains may
//! claim the master role for a moment (VDSM has the same window): the one
//! with the higher MASTER_VERSION is the master, a host still pointing at
//! the older one is refused (324) until it refreshes, and the next SPM
//! start demotes the older one, which finishes an interrupted switch.

use std::sync::Arc;

use crate::backend::Domain;
use crate::engine::pool::{joinable, master_of, PoolState, STATUS_ACTIVE};
use crate::engine::Engine;
use crate::error::{Error, IoContext, Result};
use crate::failpoint::hit;
use crate::format::manifest::PoolMetadata;
use crate::format::manifest::{K_POOL_UUID, K_ROLE, POOL_KEYS};
use crate::primitives::durable;
use crate::primitives::lease::Lease;
use crate::types::{DomainRole, Uuid};

/// A step after the switch's commit point failed: it cannot be undone, and
/// the next SPM start finishes what it left.
fn after_commit(step: Result<()>) {
    if let Err(e) = step {
        tracing::warn!(error = %e, "master switch committed; a later step failed and is left to the next SPM start");
    }
}

/// `StoragePool.switchMaster`'s request.
#[derive(Debug, Clone, Copy)]
pub struct SwitchMaster {
    pub pool: Uuid,
    pub old_master: Uuid,
    pub new_master: Uuid,
    pub master_version: i64,
}

/// The old master, its pool metadata and the new master.
type Switch = (Arc<dyn Domain>, PoolMetadata, Arc<dyn Domain>);

impl Engine {
    /// `StoragePool.switchMaster`: checks the request, then returns a task
    /// that moves the master role.
    pub fn switch_master(self: &Arc<Self>, req: SwitchMaster) -> Result<Uuid> {
        let pool = self.require_spm(req.pool)?;
        self.check_switch(&pool, &req)?;
        let engine = self.clone();
        self.tasks.spawn("switchMaster", None, move |ctx| {
            engine.switch_master_now(&req, ctx.id())
        })
    }

    /// The old master and the new one, if the pool can move from one to the
    /// other at `master_version`.
    fn check_switch(&self, pool: &PoolState, req: &SwitchMaster) -> Result<Switch> {
        if pool.master_sd != req.old_master {
            return Err(Error::PoolWrongMaster {
                pool: req.pool,
                reason: format!("the master is {}, not {}", pool.master_sd, req.old_master),
            });
        }
        if req.new_master == req.old_master {
            return Err(Error::invalid(
                "newMasterUUID",
                format!("{} is already the master", req.new_master),
            ));
        }
        let (old, pmd, _) = self.pool_metadata(pool)?;
        if req.master_version <= pmd.master_version {
            return Err(Error::PoolWrongMaster {
                pool: req.pool,
                reason: format!(
                    "master version {} is not newer than {}",
                    req.master_version, pmd.master_version
                ),
            });
        }
        let not_in_pool = Error::DomainNotInPool {
            sd: req.new_master,
            pool: req.pool,
        };
        match pmd.domains.iter().find(|(sd, _)| *sd == req.new_master) {
            None => return Err(not_in_pool),
            Some((_, st)) if st != STATUS_ACTIVE => {
                return Err(Error::DomainNotActive(req.new_master))
            }
            Some(_) => {}
        }
        let new = self.domain(req.new_master)?;
        if !joinable(&*new)?.pools.contains(&req.pool) {
            return Err(not_in_pool);
        }
        Ok((old, pmd, new))
    }

    fn switch_master_now(&self, req: &SwitchMaster, this_task: Uuid) -> Result<()> {
        let pool = self.require_spm(req.pool)?;
        let _lock = self.lock_storage(&[req.pool, req.old_master, req.new_master])?;
        let (old, pmd, new) = self.check_switch(&pool, req)?;
        let new_lease = self.sdm_lease(&*new)?;
        // Tasks keep their records on the master: none may run, or start,
        // while the records move.
        pool.set_ready(false);
        if let Some(task) = self.tasks.unfinished(Some(this_task)) {
            pool.set_ready(true);
            return Err(Error::TaskInProgress {
                pool: req.pool,
                task,
            });
        }
        let moved = new_lease
            .acquire(pool.host_id)
            .map_err(|e| Error::AcquireLease {
                pool: req.pool,
                reason: format!("on the new master {}: {e}", req.new_master),
            })
            .and_then(|()| self.move_master(&*old, &*new, &pmd, &pool, req));
        if let Err(e) = moved {
            self.let_go(req.new_master, new_lease.as_ref());
            pool.set_ready(true);
            return Err(e);
        }

        // Committed: from here on nothing is undone; what fails is logged
        // and finished by the next SPM start (see the module comment).
        after_commit(hit("pool.switch_master.after_commit"));
        let state = Arc::new(PoolState::new(
            req.pool,
            pool.host_id,
            req.new_master,
            req.master_version,
            new_lease,
        ));
        after_commit(self.install_pool(state.clone(), true));
        after_commit(
            new.manifest()
                .and_then(|m| m.pool.ok_or(Error::PoolMasterNotFound(req.pool)))
                .and_then(|md| self.link_pool(req.pool, req.new_master, &md)),
        );
        // The records now live on the new master: tasks are found there
        // before new ones may start.
        self.tasks.forget_store(&old.master_dir()?.join("tasks"));
        self.tasks.recover(&new.master_dir()?.join("tasks"));
        state.set_ready(true);
        after_commit(self.demote_master(&*old, req.pool));
        self.let_go(req.old_master, pool.lease());
        tracing::info!(pool = %req.pool, from = %req.old_master, to = %req.new_master, version = req.master_version, "master domain switched");
        Ok(())
    }

    /// Copies the task records to the new master, then writes its pool
    /// metadata: the commit point.
    fn move_master(
        &self,
        old: &dyn Domain,
        new: &dyn Domain,
        pmd: &PoolMetadata,
        pool: &PoolState,
        req: &SwitchMaster,
    ) -> Result<()> {
        hit("pool.switch_master.after_lease")?;
        new.ensure_master_dirs()?;
        let (old_dir, new_dir) = (old.master_dir()?, new.master_dir()?);
        let tasks = new_dir.join("tasks");
        let staged = new_dir.join("tasks.switching");
        let copied = (|| {
            if staged.exists() {
                std::fs::remove_dir_all(&staged)?;
            }
            durable::copy_tree(&old_dir.join("tasks"), &staged)?;
            // Whatever the new master held is cruft from an earlier role.
            std::fs::remove_dir_all(&tasks)?;
            std::fs::rename(&staged, &tasks)?;
            durable::fsync_dir(&new_dir)
        })();
        copied.ctx("cannot copy the task records to", &tasks)?;
        hit("pool.switch_master.after_copy")?;
        new.update(|md| {
            md.set(K_POOL_UUID, req.pool.to_string());
            md.set(K_ROLE, DomainRole::Master.name());
            PoolMetadata {
                spm_id: i64::from(pool.host_id),
                master_version: req.master_version,
                ..pmd.clone()
            }
            .write(md);
            Ok(())
        })
    }

    /// Makes a former master a regular member: its role, its pool metadata
    /// and its task records go.
    fn demote_master(&self, dom: &dyn Domain, pool: Uuid) -> Result<()> {
        dom.update(|md| {
            md.set(K_ROLE, DomainRole::Regular.name());
            for key in POOL_KEYS {
                md.remove(key);
            }
            Ok(())
        })?;
        let tasks = dom.master_dir()?.join("tasks");
        if let Ok(entries) = std::fs::read_dir(&tasks) {
            for entry in entries.flatten() {
                std::fs::remove_dir_all(entry.path()).ctx("cannot remove", &entry.path())?;
            }
        }
        dom.release_master()?;
        tracing::info!(sd = %dom.id(), pool = %pool, "former master domain demoted");
        Ok(())
    }

    /// Releases a lease, leaving its lockspace too unless the domain is
    /// monitored (the monitor holds the host id there).
    fn let_go(&self, sd: Uuid, lease: &dyn Lease) {
        if self.is_monitoring(sd) {
            lease.release();
        } else {
            lease.leave();
        }
    }

    /// Another member of the pool that is its master at a newer version
    /// than `pmd` (the master moved while this host looked elsewhere).
    fn newer_master(&self, pool: Uuid, master_sd: Uuid, pmd: &PoolMetadata) -> Option<(Uuid, i64)> {
        self.other_masters(pool, master_sd, pmd)
            .into_iter()
            .map(|(dom, v)| (dom.id(), v))
            .find(|(_, v)| *v > pmd.master_version)
    }

    /// Refuses a master another member has superseded.
    pub(crate) fn refuse_moved_master(
        &self,
        pool: Uuid,
        master_sd: Uuid,
        pmd: &PoolMetadata,
    ) -> Result<()> {
        match self.newer_master(pool, master_sd, pmd) {
            Some((sd, version)) => Err(Error::PoolWrongMaster {
                pool,
                reason: format!(
                    "the master moved to {sd} at version {version}; \
                     refresh or connect with that master"
                ),
            }),
            None => Ok(()),
        }
    }

    /// Demotes members still marked master at an older version than the
    /// pool's: what an interrupted switch left. Only the SPM calls it.
    pub(crate) fn demote_stale_masters(
        &self,
        pool: Uuid,
        master_sd: Uuid,
        pmd: &PoolMetadata,
    ) -> Result<()> {
        for (dom, version) in self.other_masters(pool, master_sd, pmd) {
            if version < pmd.master_version {
                self.demote_master(&*dom, pool)?;
            }
        }
        Ok(())
    }

    /// The pool's other members that claim to be its master, with their
    /// master versions.
    fn other_masters(
        &self,
        pool: Uuid,
        master_sd: Uuid,
        pmd: &PoolMetadata,
    ) -> Vec<(Arc<dyn Domain>, i64)> {
        pmd.domains
            .iter()
            .filter(|(sd, _)| *sd != master_sd)
            .filter_map(|(sd, _)| {
                let dom = self.domain(*sd).ok()?;
                let version = master_of(&dom.manifest().ok()?, pool)?.master_version;
                Some((dom, version))
            })
            .collect()
    }

    /// `StoragePool.refresh` onto a new master (after a switch or a
    /// reconstruct elsewhere): a host that is not SPM follows it.
    pub(crate) fn follow_master(
        &self,
        pool: &PoolState,
        master_sd: Uuid,
        master_version: i64,
    ) -> Result<()> {
        if pool.is_spm() {
            return Err(Error::PoolWrongMaster {
                pool: pool.id,
                reason: format!(
                    "this host is SPM on master {}; move it with StoragePool.switchMaster",
                    pool.master_sd
                ),
            });
        }
        let (master, pmd) = self.current_master(pool.id, master_sd, master_version)?;
        self.link_pool(pool.id, master_sd, &pmd)?;
        let lease = self.sdm_lease(&*master)?;
        let state = PoolState::new(pool.id, pool.host_id, master_sd, master_version, lease);
        let installed = self.install_pool(Arc::new(state), false);
        self.let_go(pool.master_sd, pool.lease());
        installed?;
        tracing::info!(pool = %pool.id, master = %master_sd, version = master_version, "following the pool's new master");
        Ok(())
    }
}
