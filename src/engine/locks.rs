//! Exclusive image locks: one change at a time per image, so concurrent
//! creates, snapshots and deletes in the same chain serialize.
//!
//! Requests for several images take them in sorted order, so two requests can
//! never wait on each other.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::types::Uuid;

/// VDSM's resource timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

type Key = (Uuid, Uuid);

#[derive(Clone, Default)]
pub struct ImageLocks {
    inner: Arc<(Mutex<HashSet<Key>>, Condvar)>,
}

pub struct ImageGuard {
    locks: ImageLocks,
    keys: Vec<Key>,
}

impl ImageLocks {
    /// Locks images `imgs` of domain `sd` exclusively.
    pub fn lock(&self, sd: Uuid, imgs: &[Uuid], timeout: Duration) -> Result<ImageGuard> {
        let mut keys: Vec<Key> = imgs.iter().map(|&i| (sd, i)).collect();
        keys.sort();
        keys.dedup();
        let deadline = Instant::now() + timeout;
        let (set, cv) = &*self.inner;
        let mut held = set.lock().expect("image locks");
        let mut taken = Vec::with_capacity(keys.len());
        for key in &keys {
            while held.contains(key) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    for k in &taken {
                        held.remove(k);
                    }
                    cv.notify_all();
                    return Err(Error::ResourceTimeout(format!(
                        "image {} of domain {}",
                        key.1, key.0
                    )));
                }
                held = cv.wait_timeout(held, left).expect("image locks").0;
            }
            held.insert(*key);
            taken.push(*key);
        }
        Ok(ImageGuard {
            locks: self.clone(),
            keys,
        })
    }
}

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let (set, cv) = &*self.locks.inner;
        let mut held = set.lock().expect("image locks");
        for k in &self.keys {
            held.remove(k);
        }
        cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_and_timeout() {
        let l = ImageLocks::default();
        let sd = Uuid::new_v4();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let g = l.lock(sd, &[a], DEFAULT_TIMEOUT).unwrap();
        assert!(l.lock(sd, &[b, a], Duration::from_millis(20)).is_err());
        // The failed request released what it took.
        drop(l.lock(sd, &[b], Duration::from_millis(20)).unwrap());
        drop(g);
        drop(l.lock(sd, &[a, b], Duration::from_millis(20)).unwrap());
    }
}
