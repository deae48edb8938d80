//! Fibre Channel: a rescan of the host bus adapters, what VDSM's `fc-scan`
//! does. FC needs no login: new LUNs appear once each FC host scans its
//! fabric, and a LUN grown on the storage once its SCSI devices rescan.

use std::io;
use std::path::{Path, PathBuf};

/// Where the kernel lists FC hosts and SCSI hosts.
pub const SYSFS: &str = "/sys";
/// Writes in flight at once: one slow HBA or device must not serialize
/// the others (VDSM measured 20 s with one worker, 1 s with 64).
const WORKERS: usize = 64;

/// What a rescan touched.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    pub hosts: usize,
    pub devices: usize,
    /// Writes that failed, with why; the others still ran.
    pub failures: Vec<(PathBuf, String)>,
}

/// Scans every FC host under `sys` for new LUNs (`- - -` to its SCSI
/// host's `scan`), then rescans each FC-attached SCSI device for a new
/// size (`1` to its `rescan`). A host without FC adapters has nothing to
/// scan.
pub fn rescan(sys: &Path) -> Scanned {
    let fc_hosts: Vec<PathBuf> = list(&sys.join("class/fc_host"));
    let scans: Vec<(PathBuf, &str)> = fc_hosts
        .iter()
        .filter_map(|h| h.file_name())
        .map(|name| (sys.join("class/scsi_host").join(name).join("scan"), "- - -"))
        .collect();
    let mut out = Scanned {
        hosts: scans.len(),
        failures: write_all(&scans),
        ..Default::default()
    };
    // <fc_host>/device/rport-*/target*/<H:C:T:L>/rescan
    let mut rescans = Vec::new();
    for host in &fc_hosts {
        for rport in list(&host.join("device"))
            .into_iter()
            .filter(|p| named(p, "rport-"))
        {
            for target in list(&rport).into_iter().filter(|p| named(p, "target")) {
                for dev in list(&target) {
                    let rescan = dev.join("rescan");
                    if rescan.is_file() {
                        rescans.push((rescan, "1"));
                    }
                }
            }
        }
    }
    out.devices = rescans.len();
    out.failures.extend(write_all(&rescans));
    for (path, why) in &out.failures {
        tracing::warn!(path = %path.display(), error = %why, "FC rescan write failed");
    }
    out
}

fn named(p: &Path, prefix: &str) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(prefix))
}

/// Entries of a sysfs directory (their links unresolved: sysfs's own
/// links point within sysfs); none if it is missing.
fn list(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Writes each value to its file, [`WORKERS`] at a time; returns failures.
fn write_all(writes: &[(PathBuf, &str)]) -> Vec<(PathBuf, String)> {
    let mut failures = Vec::new();
    for batch in writes.chunks(WORKERS) {
        std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|(path, value)| s.spawn(move || write_existing(path, value)))
                .collect();
            for ((path, _), h) in batch.iter().zip(handles) {
                if let Err(e) = h.join().expect("a sysfs write does not panic") {
                    failures.push((path.clone(), e.to_string()));
                }
            }
        });
    }
    failures
}

/// A sysfs attribute is written, never created.
fn write_existing(path: &Path, value: &str) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A sysfs tree with two FC hosts (one with a LUN behind a remote
    /// port) and a SCSI host that is not FC.
    fn tree(root: &Path) -> Vec<PathBuf> {
        let mut attrs = Vec::new();
        for h in ["host3", "host4", "host0"] {
            let scan = root.join("class/scsi_host").join(h).join("scan");
            fs::create_dir_all(scan.parent().unwrap()).unwrap();
            fs::write(&scan, "").unwrap();
            attrs.push(scan);
        }
        for h in ["host3", "host4"] {
            fs::create_dir_all(root.join("class/fc_host").join(h).join("device")).unwrap();
        }
        let dev = root.join("class/fc_host/host3/device/rport-3:0-0/target3:0:0/3:0:0:1");
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("rescan"), "").unwrap();
        attrs.push(dev.join("rescan"));
        attrs
    }

    #[test]
    fn scans_fc_hosts_and_rescans_their_devices_only() {
        let root = tempfile::tempdir().unwrap();
        let attrs = tree(root.path());
        let scanned = rescan(root.path());
        assert_eq!((scanned.hosts, scanned.devices), (2, 1));
        assert!(scanned.failures.is_empty(), "{:?}", scanned.failures);
        let read = |p: &PathBuf| fs::read_to_string(p).unwrap();
        assert_eq!(read(&attrs[0]), "- - -");
        assert_eq!(read(&attrs[1]), "- - -");
        assert_eq!(read(&attrs[2]), "", "host0 is not an FC host");
        assert_eq!(read(&attrs[3]), "1");
    }

    #[test]
    fn a_host_without_fc_has_nothing_to_scan() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(rescan(root.path()), Scanned::default());
        // An FC host whose SCSI host is gone: reported, not fatal.
        fs::create_dir_all(root.path().join("class/fc_host/host9")).unwrap();
        let scanned = rescan(root.path());
        assert_eq!(scanned.hosts, 1);
        assert_eq!(scanned.failures.len(), 1);
    }
}
