//! Domain monitoring (`Host.startMonitoringDomain`, `stopMonitoringDomain`,
//! `getStorageRepoStats`): one thread per domain reads the first 4 KiB of
//! `dom_md/metadata` with O_DIRECT every interval and records how long it
//! took.
//!
//! The read runs in a child process (`dd iflag=direct`), as VDSM runs its
//! storage I/O out of process: a read stuck on a dead mount (a process in
//! uninterruptible sleep) holds only that child, never a cairnd thread,
//! and cairnd can still exit. A read that does not finish within the
//! timeout makes the domain invalid; the monitor keeps checking.
//!
//! On a shared domain (one with sanlock leases) the monitor also joins the
//! domain's lockspace with the given host id, in the background, as VDSM
//! does: `acquired` turns true once this host owns its id, and from then on
//! it can take volume leases. Stopping leaves the lockspace unless this
//! host holds leases in it (the SPM keeps its SDM lease).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::primitives::child::output_within;
use crate::primitives::sanlock;
use crate::types::Uuid;

/// How often each domain is checked (VDSM: 10 s).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// How long one read may take before the domain counts as invalid.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read per check (one block of the metadata).
const READ_SIZE: usize = 4096;

/// The reader program; overridable for tests and odd installs.
fn dd_binary() -> PathBuf {
    std::env::var_os("CAIRN_DD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("dd"))
}

/// `StorageDomainVitals`, as last measured.
#[derive(Debug, Clone)]
struct Vitals {
    code: i64,
    valid: bool,
    delay: Duration,
    version: i64,
    /// When the last check ended (None before the first).
    checked: Option<Instant>,
}

/// `StorageDomainVitals` on the wire (floats as strings, as VDSM sends).
#[derive(Debug, Clone, Serialize)]
pub struct RepoStats {
    pub code: i64,
    #[serde(rename = "lastCheck")]
    pub last_check: String,
    pub delay: String,
    pub valid: bool,
    pub version: i64,
    pub acquired: bool,
    pub actual: bool,
}

struct Monitor {
    host_id: u64,
    /// The domain's lockspace, joined with `host_id` (shared domains).
    lockspace: Option<sanlock::Lockspace>,
    vitals: Arc<Mutex<Vitals>>,
    /// Dropping it stops the monitor thread at its next wake-up.
    _stop: mpsc::Sender<()>,
}

#[derive(Default)]
pub struct Monitors {
    monitors: Mutex<HashMap<Uuid, Monitor>>,
}

/// Timing of the monitors (tests check faster than production).
#[derive(Debug, Clone, Copy)]
pub struct MonitorTiming {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for MonitorTiming {
    fn default() -> Self {
        MonitorTiming {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl Engine {
    /// `Host.startMonitoringDomain`: idempotent for a domain already
    /// monitored (the host id is updated).
    pub fn start_monitoring(&self, sd: Uuid, host_id: i64) -> Result<()> {
        if !(1..=2000).contains(&host_id) {
            return Err(Error::invalid(
                "hostID",
                format!("{host_id} is not 1 to 2000"),
            ));
        }
        let mut monitors = self.monitors.monitors.lock().expect("monitors");
        if monitors.contains_key(&sd) {
            return Ok(());
        }
        let lockspace = self.join_lockspace(sd, host_id as u64);
        let vitals = Arc::new(Mutex::new(Vitals {
            code: 0,
            valid: false,
            delay: Duration::ZERO,
            version: -1,
            checked: None,
        }));
        let (stop, stopped) = mpsc::channel();
        let timing = self.monitor_timing;
        let shared = vitals.clone();
        let paths_mnt = self.paths.mnt.clone();
        // Found now, while the storage answers; afterwards only the child
        // reader touches it (a stat on a dead mount would block a thread).
        let known = self.domain(sd).ok().map(|d| d.monitor_target());
        std::thread::Builder::new()
            .name(format!("monitor-{sd}"))
            .spawn(move || monitor_loop(sd, (&paths_mnt, known), timing, &shared, &stopped))
            .map_err(|e| Error::io("cannot start a domain monitor", e))?;
        tracing::info!(sd = %sd, host_id, interval_ms = timing.interval.as_millis() as u64, "domain monitoring started");
        monitors.insert(
            sd,
            Monitor {
                host_id: host_id as u64,
                lockspace,
                vitals,
                _stop: stop,
            },
        );
        Ok(())
    }

    pub fn is_monitoring(&self, sd: Uuid) -> bool {
        self.monitors
            .monitors
            .lock()
            .expect("monitors")
            .contains_key(&sd)
    }

    /// `Host.stopMonitoringDomain`: stopping one not monitored succeeds.
    pub fn stop_monitoring(&self, sd: Uuid) {
        let removed = self.monitors.monitors.lock().expect("monitors").remove(&sd);
        if let Some(m) = removed {
            if let Some(ls) = &m.lockspace {
                match sanlock::rem_lockspace_if_unused(ls) {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::info!(sd = %sd, "lockspace kept: this host holds leases in it")
                    }
                    Err(e) => tracing::warn!(sd = %sd, error = %e, "cannot leave the lockspace"),
                }
            }
            tracing::info!(sd = %sd, host_id = m.host_id, "domain monitoring stopped");
        }
    }

    /// Starts joining a shared domain's lockspace with `host_id` (in the
    /// background); None for domains without sanlock leases.
    fn join_lockspace(&self, sd: Uuid, host_id: u64) -> Option<sanlock::Lockspace> {
        let dom = self.domain(sd).ok()?;
        let m = dom.manifest().ok()?;
        let io_timeout = self.sanlock_for(&*dom)?;
        let ls = sanlock::Lockspace {
            name: sd.to_string(),
            host_id,
            disk: sanlock::Disk {
                path: dom.lease_areas().ids,
                offset: 0,
            },
            geometry: crate::engine::domains::lease_geometry(&m).ok()?,
        };
        if let Err(e) = sanlock::add_lockspace(&ls, io_timeout, false) {
            tracing::warn!(sd = %sd, host_id, error = %e, "cannot join the domain's lockspace");
        }
        Some(ls)
    }

    /// `Host.getStorageRepoStats`: the monitored domains (or those named).
    pub fn repo_stats(&self, only: &[Uuid]) -> HashMap<Uuid, RepoStats> {
        let now = Instant::now();
        self.monitors
            .monitors
            .lock()
            .expect("monitors")
            .iter()
            .filter(|(sd, _)| only.is_empty() || only.contains(sd))
            .map(|(sd, m)| {
                let v = m.vitals.lock().expect("vitals").clone();
                let acquired = m.lockspace.as_ref().is_some_and(|ls| {
                    matches!(
                        sanlock::inq_lockspace(ls),
                        Ok(sanlock::LockspaceState::Joined)
                    )
                });
                let stats = RepoStats {
                    code: v.code,
                    last_check: format!(
                        "{:.1}",
                        v.checked.map_or(0.0, |c| (now - c).as_secs_f64())
                    ),
                    delay: format!("{:.6}", v.delay.as_secs_f64()),
                    valid: v.valid,
                    version: v.version,
                    acquired,
                    actual: v.checked.is_some(),
                };
                (*sd, stats)
            })
            .collect()
    }
}

/// `(mnt, known)`: the connections' directory, and the metadata path if
/// the domain was found when monitoring started.
fn monitor_loop(
    sd: Uuid,
    (mnt, mut known): (&Path, Option<PathBuf>),
    timing: MonitorTiming,
    vitals: &Mutex<Vitals>,
    stopped: &mpsc::Receiver<()>,
) {
    let mut was_valid = None;
    loop {
        let started = Instant::now();
        if known.is_none() {
            known = crate::backend::monitor_target(mnt, sd);
        }
        let outcome = match &known {
            Some(p) => read_direct(sd, p, timing.timeout),
            None => Err(Error::DomainNotFound(sd)),
        };
        let mut v = vitals.lock().expect("vitals");
        v.checked = Some(Instant::now());
        match outcome {
            Ok(block) => {
                v.code = 0;
                v.valid = true;
                v.delay = started.elapsed();
                v.version = metadata_version(&block).unwrap_or(v.version);
            }
            Err(e) => {
                v.code = e.code();
                v.valid = false;
                if was_valid != Some(false) {
                    tracing::warn!(sd = %sd, error = %e, "storage domain check failed");
                }
            }
        }
        if was_valid == Some(false) && v.valid {
            tracing::info!(sd = %sd, delay_ms = v.delay.as_millis() as u64, "storage domain is valid again");
        }
        was_valid = Some(v.valid);
        drop(v);
        match stopped.recv_timeout(timing.interval.saturating_sub(started.elapsed())) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Stopped (the sender was dropped).
            _ => return,
        }
    }
}

/// Reads the first block of `path` with O_DIRECT in a child process,
/// giving up after `timeout`.
fn read_direct(sd: Uuid, path: &Path, timeout: Duration) -> Result<Vec<u8>> {
    let mut dd = Command::new(dd_binary());
    crate::primitives::child::die_with_parent(&mut dd);
    dd.arg(format!("if={}", path.display()))
        .args(["iflag=direct", "count=1", "status=none"])
        .arg(format!("bs={READ_SIZE}"));
    let out = output_within(dd, timeout)
        .map_err(|e| Error::io_path("cannot run dd to read", path, e))?
        .ok_or_else(|| Error::DomainAccess {
            sd,
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("reading {} took longer than {timeout:?}", path.display()),
            ),
        })?;
    if !out.status.success() || out.stdout.is_empty() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file or directory") {
            return Err(Error::DomainNotFound(sd));
        }
        return Err(Error::DomainAccess {
            sd,
            source: std::io::Error::other(format!(
                "reading {} failed: {}",
                path.display(),
                err.trim()
            )),
        });
    }
    Ok(out.stdout)
}

/// `VERSION=` from a block of domain metadata.
fn metadata_version(block: &[u8]) -> Option<i64> {
    String::from_utf8_lossy(block)
        .lines()
        .find_map(|l| l.strip_prefix("VERSION=")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_read_from_the_metadata() {
        assert_eq!(
            metadata_version(b"CLASS=Data\nVERSION=5\nPOOL_UUID=\n"),
            Some(5)
        );
        assert_eq!(metadata_version(b"CLASS=Data\n"), None);
    }

    #[test]
    fn a_hung_read_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("slow-dd");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::env::set_var("CAIRN_DD", &script);
        let start = Instant::now();
        let err = read_direct(
            Uuid::nil(),
            Path::new("/dev/null"),
            Duration::from_millis(200),
        )
        .unwrap_err();
        std::env::remove_var("CAIRN_DD");
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(err.to_string().contains("longer than"), "{err}");
    }
}
