//! The resource manager: named locks in namespaces, shared or exclusive.
//!
//! - Namespaces follow VDSM: `00_storage` (pools, domains), `01_img_<sd>`
//!   (an image lock covers its whole chain), `02_vol_<sd>`.
//! - Requests queue in arrival order per resource: a shared request waits
//!   behind a queued exclusive one, so writers are never starved.
//! - A request for several resources takes them in one global order
//!   (sorted), so two requests can never wait on each other.
//! - Every wait has a deadline; a timed-out request releases what it took
//!   and says which resource it waited for.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::types::Uuid;

/// VDSM's resource timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    pub namespace: String,
    pub name: String,
}

impl Resource {
    /// A pool or a domain.
    pub fn storage(id: Uuid) -> Resource {
        Resource {
            namespace: "00_storage".into(),
            name: id.to_string(),
        }
    }

    /// An image of a domain: the whole chain.
    pub fn image(sd: Uuid, img: Uuid) -> Resource {
        Resource {
            namespace: format!("01_img_{sd}"),
            name: img.to_string(),
        }
    }

    /// A volume of a domain.
    pub fn volume(sd: Uuid, vol: Uuid) -> Resource {
        Resource {
            namespace: format!("02_vol_{sd}"),
            name: vol.to_string(),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    Shared,
    Exclusive,
}

#[derive(Default)]
struct Entry {
    shared: usize,
    exclusive: bool,
    /// Waiting requests in arrival order, each with its own wake-up, so a
    /// release wakes exactly the requests it lets in.
    queue: VecDeque<(u64, Mode, Arc<Condvar>)>,
}

impl Entry {
    fn grantable(&self, ticket: u64, mode: Mode) -> bool {
        if self.exclusive {
            return false;
        }
        let ahead = self.queue.iter().take_while(|(t, ..)| *t != ticket);
        match mode {
            Mode::Exclusive => self.shared == 0 && ahead.count() == 0,
            // Shared requests may pass only other shared requests.
            Mode::Shared => ahead.into_iter().all(|(_, m, _)| *m == Mode::Shared),
        }
    }

    /// Wakes the waiters at the head of the queue that can go now: one
    /// exclusive request, or a run of shared ones.
    fn wake_next(&self) {
        if self.exclusive {
            return;
        }
        match self.queue.front() {
            Some((_, Mode::Exclusive, wake)) if self.shared == 0 => wake.notify_one(),
            Some((_, Mode::Exclusive, _)) | None => {}
            Some((_, Mode::Shared, _)) => {
                for (_, _, wake) in self.queue.iter().take_while(|(_, m, _)| *m == Mode::Shared) {
                    wake.notify_one();
                }
            }
        }
    }

    fn idle(&self) -> bool {
        self.shared == 0 && !self.exclusive && self.queue.is_empty()
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<Resource, Entry>,
    next_ticket: u64,
}

#[derive(Clone, Default)]
pub struct ResourceManager {
    inner: Arc<Mutex<State>>,
}

/// Held resources; released (last taken first) when dropped.
pub struct Guard {
    mgr: ResourceManager,
    held: Vec<(Resource, Mode)>,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.held.iter().map(|(r, m)| format!("{r} {m:?}")))
            .finish()
    }
}

impl ResourceManager {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes every requested resource, in sorted order, within `timeout`.
    /// A resource asked for twice is taken once, in the stronger mode.
    pub fn acquire(&self, requests: &[(Resource, Mode)], timeout: Duration) -> Result<Guard> {
        let mut wanted: Vec<(Resource, Mode)> = requests.to_vec();
        wanted.sort();
        // Sorted by (resource, mode): the last of equal resources is the strongest.
        wanted.reverse();
        wanted.dedup_by(|a, b| a.0 == b.0);
        wanted.reverse();
        let deadline = Instant::now() + timeout;
        let mut guard = Guard {
            mgr: self.clone(),
            held: Vec::with_capacity(wanted.len()),
        };
        for (res, mode) in wanted {
            self.take(&res, mode, deadline)?;
            guard.held.push((res, mode));
        }
        Ok(guard)
    }

    fn take(&self, res: &Resource, mode: Mode, deadline: Instant) -> Result<()> {
        let mut st = self.inner.lock().expect("resources");
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        let wake = Arc::new(Condvar::new());
        st.entries
            .entry(res.clone())
            .or_default()
            .queue
            .push_back((ticket, mode, wake.clone()));
        loop {
            let entry = st.entries.get_mut(res).expect("queued entry");
            if entry.grantable(ticket, mode) {
                entry.queue.retain(|(t, ..)| *t != ticket);
                match mode {
                    Mode::Shared => entry.shared += 1,
                    Mode::Exclusive => entry.exclusive = true,
                }
                // Shared requests right behind this one may go too.
                entry.wake_next();
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                entry.queue.retain(|(t, ..)| *t != ticket);
                // Requests queued behind this one may be grantable now.
                entry.wake_next();
                if entry.idle() {
                    st.entries.remove(res);
                }
                return Err(Error::ResourceTimeout(format!("{res} ({mode:?})")));
            }
            st = wake.wait_timeout(st, left).expect("resources").0;
        }
    }

    fn release(&self, res: &Resource, mode: Mode) {
        let mut st = self.inner.lock().expect("resources");
        if let Some(entry) = st.entries.get_mut(res) {
            match mode {
                Mode::Shared => entry.shared -= 1,
                Mode::Exclusive => entry.exclusive = false,
            }
            entry.wake_next();
            if entry.idle() {
                st.entries.remove(res);
            }
        }
    }

    /// Resources with holders or waiters (for tests and diagnostics).
    pub fn busy(&self) -> usize {
        self.inner.lock().expect("resources").entries.len()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for (res, mode) in self.held.drain(..).rev() {
            self.mgr.release(&res, mode);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
    use std::thread;

    fn r(n: u128) -> Resource {
        Resource::storage(Uuid::from_u128(n))
    }

    const SHORT: Duration = Duration::from_millis(30);

    #[test]
    fn shared_with_shared_exclusive_alone() {
        let m = ResourceManager::new();
        let a = m.acquire(&[(r(1), Mode::Shared)], SHORT).unwrap();
        let b = m.acquire(&[(r(1), Mode::Shared)], SHORT).unwrap();
        assert!(m.acquire(&[(r(1), Mode::Exclusive)], SHORT).is_err());
        drop((a, b));
        let x = m.acquire(&[(r(1), Mode::Exclusive)], SHORT).unwrap();
        assert!(m.acquire(&[(r(1), Mode::Shared)], SHORT).is_err());
        drop(x);
        assert_eq!(
            m.busy(),
            0,
            "nothing left behind, timed-out requests included"
        );
    }

    #[test]
    fn shared_waits_behind_a_queued_exclusive() {
        let m = ResourceManager::new();
        let reader = m.acquire(&[(r(1), Mode::Shared)], SHORT).unwrap();
        let m2 = m.clone();
        let writer = thread::spawn(move || {
            m2.acquire(&[(r(1), Mode::Exclusive)], Duration::from_secs(5))
                .map(drop)
        });
        // Wait until the writer is queued.
        while m.inner.lock().unwrap().entries[&r(1)].queue.is_empty() {
            thread::yield_now();
        }
        // A new reader does not overtake the queued writer...
        assert!(m.acquire(&[(r(1), Mode::Shared)], SHORT).is_err());
        // ...and the writer gets in once the first reader leaves.
        drop(reader);
        writer.join().unwrap().unwrap();
    }

    #[test]
    fn timeout_names_the_resource_and_releases_the_rest() {
        let m = ResourceManager::new();
        let _held = m.acquire(&[(r(2), Mode::Exclusive)], SHORT).unwrap();
        let err = m
            .acquire(&[(r(1), Mode::Exclusive), (r(2), Mode::Exclusive)], SHORT)
            .unwrap_err();
        assert!(err.to_string().contains(&r(2).to_string()), "{err}");
        assert_eq!(err.code(), 851);
        // r(1) was released when the request gave up.
        drop(m.acquire(&[(r(1), Mode::Exclusive)], SHORT).unwrap());
    }

    #[test]
    fn duplicates_take_the_stronger_mode() {
        let m = ResourceManager::new();
        let g = m
            .acquire(&[(r(1), Mode::Shared), (r(1), Mode::Exclusive)], SHORT)
            .unwrap();
        assert_eq!(g.held, vec![(r(1), Mode::Exclusive)]);
        assert!(m.acquire(&[(r(1), Mode::Shared)], SHORT).is_err());
    }

    /// Random multi-resource requests from many threads: never an exclusive
    /// holder beside anyone else, never a deadlock (every request is granted
    /// within a generous deadline).
    #[test]
    fn random_contention_keeps_the_invariants() {
        const RESOURCES: usize = 6;
        let m = ResourceManager::new();
        // Per resource: >0 readers, -1 one writer.
        let state: Arc<Vec<AtomicI64>> =
            Arc::new((0..RESOURCES).map(|_| AtomicI64::new(0)).collect());
        let done = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let (m, state, done) = (m.clone(), state.clone(), done.clone());
                thread::spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(t + 1);
                    for _ in 0..300 {
                        let n = rng.usize(1..=3);
                        let reqs: Vec<(Resource, Mode)> = (0..n)
                            .map(|_| {
                                let i = rng.usize(..RESOURCES);
                                let mode = if rng.usize(..3) == 0 {
                                    Mode::Exclusive
                                } else {
                                    Mode::Shared
                                };
                                (r(i as u128), mode)
                            })
                            .collect();
                        let g = m
                            .acquire(&reqs, Duration::from_secs(30))
                            .expect("no deadlock");
                        for (res, mode) in &g.held {
                            let i = res.name.chars().last().unwrap().to_digit(16).unwrap() as usize;
                            match mode {
                                Mode::Exclusive => {
                                    assert_eq!(state[i].swap(-1, Ordering::SeqCst), 0)
                                }
                                Mode::Shared => {
                                    assert!(state[i].fetch_add(1, Ordering::SeqCst) >= 0)
                                }
                            }
                        }
                        thread::yield_now();
                        for (res, mode) in &g.held {
                            let i = res.name.chars().last().unwrap().to_digit(16).unwrap() as usize;
                            match mode {
                                Mode::Exclusive => {
                                    assert_eq!(state[i].swap(0, Ordering::SeqCst), -1)
                                }
                                Mode::Shared => {
                                    assert!(state[i].fetch_sub(1, Ordering::SeqCst) > 0)
                                }
                            }
                        }
                        drop(g);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(done.load(Ordering::SeqCst), 16 * 300);
        assert_eq!(m.busy(), 0);
    }
}
