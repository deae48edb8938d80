//! Cluster leases behind one interface.
//!
//! The SPM role is whoever holds the pool's SDM lease. On a single host the
//! embedded default is an exclusive `flock` on the master domain's
//! `dom_md/leases` file; shared domains get sanlock behind the same trait.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{flock, FlockOperation};

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
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
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
