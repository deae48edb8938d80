//! Cluster leases behind one interface.
//!
//! The SPM role is whoever holds the pool's SDM lease. On a single host the
//! embedded default is an exclusive `flock` on the master domain's
//! `dom_md/leases` file; shared domains get sanlock behind the same trait.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{flock, FlockOperation};

use super::sanlock;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {path} is held by another process")]
    Busy { path: PathBuf },
    #[error("cannot use lease {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub trait Lease: Send + Sync + std::fmt::Debug {
    /// Takes the lease for `host_id`, without waiting.
    fn acquire(&self, host_id: u32) -> Result<(), LeaseError>;
    fn release(&self);
    fn is_held(&self) -> bool;
    /// Releases the lease and whatever holding it needed (sanlock: the
    /// host id in the domain's lockspace, which keeps its files open).
    fn leave(&self) {
        self.release();
    }
}

/// Single-host lease: `flock(LOCK_EX|LOCK_NB)` on a file, released on close,
/// so a crashed daemon never leaves it held.
#[derive(Debug)]
pub struct FlockLease {
    path: PathBuf,
    held: Mutex<Option<File>>,
}

impl FlockLease {
    pub fn new(path: &Path) -> Self {
        FlockLease {
            path: path.to_path_buf(),
            held: Mutex::new(None),
        }
    }
}

impl Lease for FlockLease {
    fn acquire(&self, _host_id: u32) -> Result<(), LeaseError> {
        let mut held = self.held.lock().expect("lease mutex");
        if held.is_some() {
            return Ok(());
        }
        let io_err = |source| LeaseError::Io {
            path: self.path.clone(),
            source,
        };
        let f = super::nofollow::open_lease_target(&self.path, super::nofollow::Access::READ_WRITE)
            .map_err(io_err)?;
        match flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                *held = Some(f);
                Ok(())
            }
            Err(rustix::io::Errno::WOULDBLOCK) => Err(LeaseError::Busy {
                path: self.path.clone(),
            }),
            Err(e) => Err(io_err(e.into())),
        }
    }

    fn release(&self) {
        // Closing the descriptor drops the flock.
        self.held.lock().expect("lease mutex").take();
    }

    fn is_held(&self) -> bool {
        self.held.lock().expect("lease mutex").is_some()
    }
}

/// The SDM lease of a shared domain in sanlock: this host joins the
/// domain's lockspace (its host id in `dom_md/ids`) and acquires the `SDM`
/// resource in slot 1 of `dom_md/leases`. The lease is held through a
/// sanlock registration of this process: if cairnd dies, or this host
/// stops renewing its host id, the lease goes, and another host can take
/// it once the host id has expired on the storage.
#[derive(Debug)]
pub struct SanlockLease {
    lockspace: sanlock::Lockspace,
    sdm: sanlock::Resource,
    io_timeout: u32,
    held: Mutex<Option<sanlock::Registration>>,
    /// The host id this host joined the lockspace with.
    joined: Mutex<Option<u64>>,
}

/// The SDM lease's slot in `dom_md/leases`, in alignment units (VDSM's).
pub const SDM_LEASE_SLOT: u64 = 1;
pub const SDM_LEASE_NAME: &str = "SDM";

impl SanlockLease {
    /// The lease of domain `sd` whose `ids` and `leases` files are given.
    pub fn new(
        sd: &str,
        ids: &Path,
        leases: &Path,
        geometry: sanlock::Geometry,
        io_timeout: u32,
    ) -> Self {
        SanlockLease {
            lockspace: sanlock::Lockspace {
                name: sd.to_string(),
                host_id: 0,
                disk: sanlock::Disk {
                    path: ids.to_path_buf(),
                    offset: 0,
                },
                geometry,
            },
            sdm: sanlock::Resource {
                lockspace: sd.to_string(),
                name: SDM_LEASE_NAME.into(),
                disk: sanlock::Disk {
                    path: leases.to_path_buf(),
                    offset: SDM_LEASE_SLOT * geometry.align(),
                },
                shared: false,
                geometry,
            },
            io_timeout,
            held: Mutex::new(None),
            joined: Mutex::new(None),
        }
    }

    /// Writes a new domain's empty lockspace and SDM lease.
    pub fn format(&self) -> Result<(), LeaseError> {
        let err = |e: sanlock::SanlockError| self.error(e);
        sanlock::write_lockspace(&self.lockspace, self.io_timeout).map_err(err)?;
        sanlock::write_resource(&self.sdm).map_err(err)
    }

    fn error(&self, e: sanlock::SanlockError) -> LeaseError {
        if e.is_held_elsewhere() {
            LeaseError::Busy {
                path: self.sdm.disk.path.clone(),
            }
        } else {
            LeaseError::Io {
                path: self.sdm.disk.path.clone(),
                source: io::Error::other(e),
            }
        }
    }
}

impl Lease for SanlockLease {
    fn acquire(&self, host_id: u32) -> Result<(), LeaseError> {
        let mut held = self.held.lock().expect("lease mutex");
        if held.is_some() {
            return Ok(());
        }
        let max_hosts = self.lockspace.geometry.max_hosts();
        if host_id == 0 || host_id > max_hosts {
            return Err(LeaseError::Io {
                path: self.lockspace.disk.path.clone(),
                source: io::Error::other(format!(
                    "host id {host_id} is outside this lockspace's 1..{max_hosts}"
                )),
            });
        }
        let ls = sanlock::Lockspace {
            host_id: host_id.into(),
            ..self.lockspace.clone()
        };
        // Joining takes a few io_timeouts the first time; a no-op after.
        sanlock::add_lockspace(&ls, self.io_timeout, true).map_err(|e| self.error(e))?;
        *self.joined.lock().expect("lease mutex") = Some(ls.host_id);
        let reg = sanlock::Registration::new().map_err(|e| self.error(e))?;
        reg.acquire(&self.sdm, None).map_err(|e| self.error(e))?;
        *held = Some(reg);
        Ok(())
    }

    fn release(&self) {
        if let Some(reg) = self.held.lock().expect("lease mutex").take() {
            if let Err(e) = reg.release(&self.sdm) {
                // Dropping the registration releases it anyway.
                tracing::warn!(error = %e, "cannot release the SDM lease cleanly");
            }
        }
    }

    fn leave(&self) {
        self.release();
        if let Some(host_id) = self.joined.lock().expect("lease mutex").take() {
            let ls = sanlock::Lockspace {
                host_id,
                ..self.lockspace.clone()
            };
            if let Err(e) = sanlock::rem_lockspace(&ls, true) {
                tracing::warn!(error = %e, "cannot leave the lockspace");
            }
        }
    }

    /// Asks sanlock, not our memory: a lease sanlock took away (the host id
    /// could not be renewed) is not held, and the SPM stops acting at once.
    fn is_held(&self) -> bool {
        let held = self.held.lock().expect("lease mutex");
        match held.as_ref().map(|reg| reg.inquire()) {
            Some(Ok((count, _))) => count > 0,
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot inquire the SDM lease; acting as if lost");
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_between_holders() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("leases");
        File::create(&p).unwrap();
        let a = FlockLease::new(&p);
        let b = FlockLease::new(&p);
        a.acquire(1).unwrap();
        assert!(matches!(b.acquire(2), Err(LeaseError::Busy { .. })));
        a.release();
        b.acquire(2).unwrap();
        assert!(b.is_held());
        assert!(!a.is_held());
    }
}
