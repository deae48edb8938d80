//! A pool's member domains: `StorageDomain.attach`, `activate`,
//! `deactivate`, `detach` (SPM only: they write pool metadata) and
//! `StoragePool.refresh`.
//!
//! Membership is written in two places, in an order that makes a crash
//! between them harmless: attaching marks the domain (`POOL_UUID`) before
//! the master lists it, so a domain can be attached without being listed
//! (an attach run again finishes it) but never listed without being
//! attached; detaching does the reverse.

use crate::engine::pool::{STATUS_ACTIVE, STATUS_ATTACHED};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::domain_md::is_safe_value;
use crate::format::manifest::{K_POOL_UUID, K_ROLE, MAX_DESCRIPTION};
use crate::types::{DomainRole, Uuid};

impl Engine {
    /// `StorageDomain.attach`: the domain joins the pool as Attached.
    /// Attaching a domain already in this pool succeeds.
    pub fn attach_domain(&self, sd: Uuid, pool_id: Uuid) -> Result<()> {
        let pool = self.require_spm(pool_id)?;
        let _lock = self.lock_storage(&[pool_id, sd])?;
        let dom = self.domain(sd)?;
        let m = crate::engine::pool::joinable(&*dom)?;
        if let Some(&other) = m.pools.first().filter(|p| **p != pool_id) {
            return Err(Error::DomainAttached { sd, pool: other });
        }
        let (master, pmd, _) = self.pool_metadata(&pool)?;
        if pmd.domains.iter().any(|(d, _)| *d == sd) {
            return Ok(());
        }
        // As VDSM: a domain joins at its pool master's format.
        self.upgrade_domain(&*dom, master.manifest()?.version)?;
        dom.update(|md| {
            md.set(K_POOL_UUID, pool_id.to_string());
            md.set(K_ROLE, DomainRole::Regular.name());
            Ok(())
        })?;
        self.set_member(&*master, sd, Some(STATUS_ATTACHED))?;
        self.relink(&pool)?;
        tracing::info!(sd = %sd, pool = %pool_id, "storage domain attached");
        Ok(())
    }

    /// `StorageDomain.activate`: an attached domain becomes Active.
    pub fn activate_domain(&self, sd: Uuid, pool_id: Uuid) -> Result<()> {
        self.change_status(sd, pool_id, STATUS_ACTIVE)
    }

    /// `StorageDomain.deactivate`: an active domain becomes Attached. The
    /// master cannot be deactivated (move it first: switchMaster).
    pub fn deactivate_domain(&self, sd: Uuid, pool_id: Uuid) -> Result<()> {
        let pool = self.require_spm(pool_id)?;
        if sd == pool.master_sd {
            return Err(Error::invalid(
                "storagedomainID",
                format!("{sd} is the pool's master domain; move the master first (StoragePool.switchMaster)"),
            ));
        }
        self.refuse_if_exported(sd)?;
        self.change_status(sd, pool_id, STATUS_ATTACHED)
    }

    /// `StorageDomain.detach`: an inactive domain leaves the pool (`force`
    /// detaches an active one). The master cannot be detached.
    pub fn detach_domain(&self, sd: Uuid, pool_id: Uuid, force: bool) -> Result<()> {
        let pool = self.require_spm(pool_id)?;
        self.refuse_if_exported(sd)?;
        if sd == pool.master_sd {
            return Err(Error::invalid(
                "storagedomainID",
                format!("{sd} is the pool's master domain"),
            ));
        }
        let _lock = self.lock_storage(&[pool_id, sd])?;
        let (master, pmd, _) = self.pool_metadata(&pool)?;
        match pmd.domains.iter().find(|(d, _)| *d == sd) {
            None => return Err(Error::DomainNotInPool { sd, pool: pool_id }),
            Some((_, st)) if st == STATUS_ACTIVE && !force => {
                return Err(Error::invalid(
                    "storagedomainID",
                    format!("domain {sd} is active; deactivate it first (or pass force)"),
                ))
            }
            Some(_) => {}
        }
        self.set_member(&*master, sd, None)?;
        if let Ok(dom) = self.domain(sd) {
            dom.update(|md| {
                md.set(K_POOL_UUID, String::new());
                Ok(())
            })?;
        }
        self.relink(&pool)?;
        tracing::info!(sd = %sd, pool = %pool_id, "storage domain detached");
        Ok(())
    }

    /// `StoragePool.refresh`: re-reads the pool from its master, which must
    /// be `master_sd` at `master_version`; a host that is not SPM follows a
    /// master that moved (switchMaster, reconstructMaster).
    pub fn refresh_pool(&self, pool_id: Uuid, master_sd: Uuid, master_version: i64) -> Result<()> {
        let pool = self.connected_pool(pool_id)?;
        if pool.master_sd != master_sd {
            let _lock = self.lock_storage(&[pool_id])?;
            return self.follow_master(&pool, master_sd, master_version);
        }
        let (_, pmd, _) = self.pool_metadata(&pool)?;
        crate::engine::pool::check_master_version(pool_id, &pmd, master_version)?;
        self.link_pool(pool_id, master_sd, &pmd)
    }

    /// Rebuilds the pool's `data-center/` links from its metadata.
    fn relink(&self, pool: &crate::engine::PoolState) -> Result<()> {
        let (_, pmd, _) = self.pool_metadata(pool)?;
        self.link_pool(pool.id, pool.master_sd, &pmd)
    }

    fn change_status(&self, sd: Uuid, pool_id: Uuid, status: &str) -> Result<()> {
        let pool = self.require_spm(pool_id)?;
        let _lock = self.lock_storage(&[pool_id, sd])?;
        let (master, pmd, _) = self.pool_metadata(&pool)?;
        match pmd.domains.iter().find(|(d, _)| *d == sd) {
            None => return Err(Error::DomainNotInPool { sd, pool: pool_id }),
            Some((_, st)) if st == status => return Ok(()),
            Some(_) => {}
        }
        // The domain must be reachable to be activated, and is brought to
        // its master's format.
        if status == STATUS_ACTIVE {
            self.upgrade_domain(&*self.domain(sd)?, master.manifest()?.version)?;
        }
        self.set_member(&*master, sd, Some(status))?;
        tracing::info!(sd = %sd, pool = %pool_id, status, "storage domain status changed");
        Ok(())
    }

    /// Sets (or, with None, removes) a domain's entry in the master's
    /// `POOL_DOMAINS`.
    fn set_member(
        &self,
        master: &dyn crate::backend::Domain,
        sd: Uuid,
        status: Option<&str>,
    ) -> Result<()> {
        master.update(|md| {
            let m = crate::format::manifest::DomainManifest::from_metadata(master.id(), md)?;
            let mut p = m.pool.ok_or(Error::PoolMasterNotFound(Uuid::nil()))?;
            p.domains.retain(|(d, _)| *d != sd);
            if let Some(st) = status {
                p.domains.push((sd, st.to_string()));
            }
            p.write(md);
            Ok(())
        })
    }
}

/// `StoragePool.reconstructMaster`'s request.
#[derive(Debug, Clone)]
pub struct Reconstruct {
    pub pool: Uuid,
    pub host_id: u32,
    pub name: String,
    pub master_sd: Uuid,
    pub master_version: i64,
    /// Member domains and their status ("Active" or "Attached").
    pub domains: Vec<(Uuid, String)>,
}

impl Engine {
    /// `StoragePool.reconstructMaster`: rebuilds a pool whose master is
    /// lost on another of its domains, from a host not connected to it.
    /// The new master's SDM lease is held while its metadata is written, so
    /// no SPM can be changing the pool meanwhile. Members are marked first
    /// and the master written last: an interrupted reconstruct leaves no
    /// new master, and running it again finishes it.
    pub fn reconstruct_master(&self, req: &Reconstruct) -> Result<()> {
        if let Some(p) = self.connected_pool_id() {
            return Err(Error::PoolAlreadyConnected(p));
        }
        if req.master_version < 1 {
            return Err(Error::invalid("masterVersion", "must be positive"));
        }
        if !(1..=crate::engine::pool::MAX_HOST_ID).contains(&req.host_id) {
            return Err(Error::invalid(
                "hostId",
                format!(
                    "{} is not in 1..{}",
                    req.host_id,
                    crate::engine::pool::MAX_HOST_ID
                ),
            ));
        }
        if req.name.chars().count() > MAX_DESCRIPTION {
            return Err(Error::PoolDescriptionTooLong(req.name.chars().count()));
        }
        if !is_safe_value(&req.name) {
            return Err(Error::invalid("name", "may not contain line breaks or NUL"));
        }
        let mut members = req.domains.clone();
        if let Some(m) = members.iter_mut().find(|(sd, _)| *sd == req.master_sd) {
            m.1 = STATUS_ACTIVE.into();
        } else {
            members.push((req.master_sd, STATUS_ACTIVE.into()));
        }
        let mut ids: Vec<Uuid> = members.iter().map(|(sd, _)| *sd).collect();
        ids.push(req.pool);
        let _lock = self.lock_storage(&ids)?;
        let master = self.domain(req.master_sd)?;
        let mm = master.manifest()?;
        if let Some(other) = mm.pools.first().filter(|p| **p != req.pool) {
            return Err(Error::DomainAttached {
                sd: req.master_sd,
                pool: *other,
            });
        }
        if let Some(old) = mm
            .pool
            .as_ref()
            .filter(|p| p.master_version >= req.master_version)
        {
            return Err(Error::PoolWrongMaster {
                pool: req.pool,
                reason: format!(
                    "master version {} is not newer than the domain's {}",
                    req.master_version, old.master_version
                ),
            });
        }
        let lease = self.sdm_lease(&*master)?;
        lease
            .acquire(req.host_id)
            .map_err(|e| Error::AcquireLease {
                pool: req.pool,
                reason: e.to_string(),
            })?;
        let result = (|| -> Result<()> {
            for (sd, _) in members.iter().filter(|(sd, _)| *sd != req.master_sd) {
                let dom = self.domain(*sd)?;
                if let Some(other) = dom.manifest()?.pools.first().filter(|p| **p != req.pool) {
                    return Err(Error::DomainAttached {
                        sd: *sd,
                        pool: *other,
                    });
                }
                dom.update(|md| {
                    md.set(K_POOL_UUID, req.pool.to_string());
                    md.set(K_ROLE, DomainRole::Regular.name());
                    Ok(())
                })?;
            }
            master.ensure_master_dirs()?;
            crate::engine::pool::write_master(
                &*master,
                req.pool,
                members.clone(),
                &req.name,
                req.master_version,
            )
        })();
        lease.leave();
        result?;
        tracing::info!(pool = %req.pool, master = %req.master_sd, version = req.master_version, "pool master reconstructed");
        Ok(())
    }
}
