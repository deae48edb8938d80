//! Storage server connections: each one becomes a directory under `mnt/`
//! named after its remote path (a link for LOCALFS, a mount point otherwise).
//!
//! A connection request comes from the network, so nothing it names is
//! trusted: mount points are real directories cairnd made (never reached
//! through a link, so a mount cannot land on the link's target), only
//! storage file system types with known options are mounted, always
//! `nosuid,nodev,noexec`, LOCALFS paths must lie under the configured
//! roots and never in a system directory, and a disconnect only undoes
//! what a recorded connection of the same kind did.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{Error, IoContext, Result};
use crate::primitives::iscsi;
use crate::primitives::mount::{self, MountRequest};
use crate::types::DomainType;

const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// One entry of `connectionParams`, in the form VDSM receives on the wire.
#[derive(Clone, PartialEq, Default)]
pub struct ConnectionParams {
    /// Echoed back in the status list exactly as the caller sent it.
    pub id: serde_json::Value,
    /// `connection` (or `path` / `spec` / `export`).
    pub spec: String,
    pub vfs_type: Option<String>,
    pub options: Option<String>,
    pub nfs_version: Option<String>,
    pub nfs_timeout: Option<u32>,
    pub nfs_retrans: Option<u32>,
    /// iSCSI: the target's port (3260), portal group tag (1), name, the
    /// initiator interface (`default`) and CHAP credentials.
    pub port: Option<u32>,
    pub tpgt: Option<u32>,
    pub iqn: Option<String>,
    pub iface: Option<String>,
    /// iSCSI: what a new iface binds to (`netIfaceName`, `initiatorName`).
    pub iface_binding: iscsi::IfaceBinding,
    pub user: Option<String>,
    pub password: Option<String>,
}

/// Never shows the CHAP password (a debug log must not leak it).
impl std::fmt::Debug for ConnectionParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionParams")
            .field("id", &self.id)
            .field("spec", &self.spec)
            .field("vfs_type", &self.vfs_type)
            .field("options", &self.options)
            .field("nfs_version", &self.nfs_version)
            .field("nfs_timeout", &self.nfs_timeout)
            .field("nfs_retrans", &self.nfs_retrans)
            .field("port", &self.port)
            .field("tpgt", &self.tpgt)
            .field("iqn", &self.iqn)
            .field("iface", &self.iface)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// Waits (5 s at most, as VDSM) for udev to make the device nodes of the
/// LUNs a login brought, so the caller's next `Host.getDeviceList` sees
/// them. Best effort: a host without udevd has nothing to wait for.
fn settle_devices() {
    let mut cmd = std::process::Command::new("udevadm");
    cmd.args(["settle", "--timeout=5"]);
    crate::primitives::child::die_with_parent(&mut cmd);
    if let Err(e) = cmd.output() {
        tracing::debug!(error = %e, "udevadm settle did not run");
    }
}

/// iSCSI logins made at once (VDSM's `[iscsi] parallel_logins`).
const PARALLEL_LOGINS: usize = 10;

/// Per-connection outcome, in request order.
pub type ConnectionStatus = (serde_json::Value, Result<()>);

/// A connection as remembered in the host state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub domain_type: String,
    pub spec: String,
    pub vfs_type: Option<String>,
    pub options: Option<String>,
}

impl ConnectionRecord {
    fn domain_type(&self) -> Result<DomainType> {
        DomainType::from_name(&self.domain_type)
            .ok_or_else(|| Error::StorageTypeNotSupported(self.domain_type.clone(), "unknown type"))
    }
}

impl Engine {
    pub fn connect_storage_server(
        &self,
        domain_type: DomainType,
        conns: &[ConnectionParams],
    ) -> Vec<ConnectionStatus> {
        if domain_type == DomainType::Fcp {
            return self.connect_fc(conns);
        }
        // Records (and iSCSI node records, under iscsiadm's own lock) one
        // at a time; then iSCSI logins at once, up to PARALLEL_LOGINS: a
        // dead portal costs its login timeout, not every other login's
        // wait (VDSM logs in 10 at a time). Mounts go one by one.
        let prepared: Vec<Result<ConnectionRecord>> = conns
            .iter()
            .map(|c| {
                self.police_local(domain_type, c)
                    .and_then(|()| record_for(domain_type, c, &self.local_roots))
                    .and_then(|rec| {
                        if domain_type == DomainType::Iscsi {
                            let iface = c.iface.as_deref().unwrap_or("default");
                            iscsi::ensure_iface(iface, &c.iface_binding)?;
                            add_iscsi_node(c)?;
                        }
                        Ok(rec)
                    })
            })
            .collect();
        let mut established: Vec<Option<Result<()>>> = Vec::with_capacity(conns.len());
        let at_once = if domain_type == DomainType::Iscsi {
            PARALLEL_LOGINS
        } else {
            1
        };
        for batch in prepared.chunks(at_once) {
            std::thread::scope(|s| {
                let handles: Vec<_> = batch
                    .iter()
                    .map(|rec| {
                        let rec = rec.as_ref().ok()?;
                        Some(s.spawn(move || self.establish(rec)))
                    })
                    .collect();
                for h in handles {
                    established
                        .push(h.map(|h| h.join().expect("a connection thread does not panic")));
                }
            });
        }
        if domain_type == DomainType::Iscsi && established.iter().any(|r| matches!(r, Some(Ok(()))))
        {
            settle_devices();
        }
        conns
            .iter()
            .zip(prepared)
            .zip(established)
            .map(|((c, rec), done)| {
                let result = rec.and_then(|rec| {
                    done.expect("a recorded connection was made")?;
                    self.save_host_state(|st| {
                        if !st.connections.contains(&rec) {
                            st.connections.push(rec.clone());
                        }
                    })
                });
                match &result {
                    Ok(()) => tracing::info!(connection = %c.spec, kind = %domain_type, "storage connected"),
                    Err(e) => tracing::warn!(connection = %c.spec, kind = %domain_type, error = %e, "storage connection failed"),
                }
                (c.id.clone(), result)
            })
            .collect()
    }

    pub fn disconnect_storage_server(
        &self,
        domain_type: DomainType,
        conns: &[ConnectionParams],
    ) -> Vec<ConnectionStatus> {
        if domain_type == DomainType::Fcp {
            // Nothing was made: the fabric's LUNs stay visible (VDSM alike).
            return conns.iter().map(|c| (c.id.clone(), Ok(()))).collect();
        }
        conns
            .iter()
            .map(|c| {
                // Only a recorded connection of this kind is undone, as it
                // was made: nothing else at its directory is touched.
                let spec = match domain_type {
                    DomainType::Iscsi => iscsi_node(c).map(|n| n.spec()),
                    _ => self.mount_dir(&c.spec).map(|_| c.spec.clone()),
                };
                let result = spec.and_then(|spec| {
                    let rec = ConnectionRecord {
                        domain_type: domain_type.name().to_string(),
                        spec,
                        vfs_type: None,
                        options: None,
                    };
                    self.tear_down(&rec)?;
                    self.save_host_state(|st| {
                        st.connections
                            .retain(|r| r.spec != rec.spec || r.domain_type != rec.domain_type)
                    })
                });
                (c.id.clone(), result)
            })
            .collect()
    }

    /// FC has no connection to make: as VDSM, each succeeds once the HBAs
    /// have rescanned their fabrics for new and grown LUNs.
    fn connect_fc(&self, conns: &[ConnectionParams]) -> Vec<ConnectionStatus> {
        let scanned = crate::primitives::fc::rescan(Path::new(crate::primitives::fc::SYSFS));
        tracing::info!(
            hosts = scanned.hosts,
            devices = scanned.devices,
            failures = scanned.failures.len(),
            "FC rescan"
        );
        conns.iter().map(|c| (c.id.clone(), Ok(()))).collect()
    }

    /// A LOCALFS connection may not be one of cairnd's own directories.
    fn police_local(&self, domain_type: DomainType, c: &ConnectionParams) -> Result<()> {
        if domain_type != DomainType::LocalFs {
            return Ok(());
        }
        let data = &self.local_roots[0];
        let path = Path::new(&c.spec);
        let run = self.paths.run.parent().unwrap_or(&self.paths.run);
        let own = [
            self.paths.mnt.as_path(),
            run,
            &self.paths.data_center,
            &self.paths.jobs,
        ]
        .iter()
        .filter_map(|d| d.canonicalize().ok())
        .any(|d| path.starts_with(d));
        if path == data || own {
            return Err(Error::IllegalRemotePath(
                c.spec.clone(),
                "cairnd's own directories are not storage",
            ));
        }
        Ok(())
    }

    /// The directory under `mnt/` for a remote path.
    pub fn mount_dir(&self, remote: &str) -> Result<PathBuf> {
        let name = mount::mount_point_name(remote).ok_or_else(|| {
            Error::IllegalRemotePath(remote.to_string(), "not usable as a connection path")
        })?;
        Ok(self.paths.mnt.join(name))
    }
}

/// The iSCSI node a connection names (VDSM's defaults: port 3260, portal
/// group 1, the `default` interface).
fn iscsi_node(c: &ConnectionParams) -> Result<iscsi::Node> {
    let port = c.port.unwrap_or(3260);
    let node = iscsi::Node {
        iqn: c
            .iqn
            .clone()
            .ok_or_else(|| Error::invalid("iqn", "an ISCSI connection needs the target's iqn"))?,
        host: c.spec.clone(),
        port: u16::try_from(port).map_err(|_| Error::invalid("port", port.to_string()))?,
        tpgt: c.tpgt.unwrap_or(1),
        iface: c.iface.clone().unwrap_or_else(|| "default".into()),
    };
    node.validate()?;
    Ok(node)
}

/// Writes the node record a login uses, CHAP credentials included.
fn add_iscsi_node(c: &ConnectionParams) -> Result<()> {
    let chap = match (&c.user, &c.password) {
        (Some(user), Some(password)) if !user.is_empty() => Some(iscsi::Chap {
            user: user.clone(),
            password: password.clone(),
        }),
        (Some(u), _) if !u.is_empty() => {
            return Err(Error::invalid(
                "password",
                "CHAP needs a user and a password",
            ))
        }
        _ => None,
    };
    Ok(iscsi::add_node(&iscsi_node(c)?, chap.as_ref())?)
}

fn record_for(
    domain_type: DomainType,
    c: &ConnectionParams,
    local_roots: &[PathBuf],
) -> Result<ConnectionRecord> {
    if domain_type == DomainType::Iscsi {
        return Ok(ConnectionRecord {
            domain_type: domain_type.name().to_string(),
            spec: iscsi_node(c)?.spec(),
            vfs_type: None,
            options: None,
        });
    }
    let (vfs_type, options) = match domain_type {
        DomainType::LocalFs => {
            police_local_path(&c.spec, local_roots)?;
            (None, None)
        }
        DomainType::SharedFs => {
            let vfs = c
                .vfs_type
                .clone()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    Error::invalid(
                        "vfs_type",
                        "POSIXFS connections need a file system type (vfs_type)",
                    )
                })?;
            validate_mount_text("vfs_type", &vfs)?;
            if mount::is_local_type(&vfs) {
                check_block_device(&c.spec)?;
            }
            let options = police(&vfs, c.options.as_deref())?;
            (Some(vfs), Some(options))
        }
        DomainType::GlusterFs => (
            Some("glusterfs".to_string()),
            Some(police("glusterfs", c.options.as_deref())?),
        ),
        DomainType::Nfs => (
            Some("nfs".to_string()),
            Some(police("nfs", Some(&nfs_options(c)?))?),
        ),
        other => {
            return Err(Error::StorageTypeNotSupported(
                other.name().to_string(),
                "FC and CIFS connections are not implemented yet",
            ))
        }
    };
    if c.spec.is_empty() || c.spec.contains(['\0', '\n']) {
        return Err(Error::invalid(
            "connection",
            "empty or contains control characters",
        ));
    }
    if let Some(o) = &options {
        validate_mount_text("mnt_options", o)?;
    }
    Ok(ConnectionRecord {
        domain_type: domain_type.name().to_string(),
        spec: c.spec.clone(),
        vfs_type,
        options,
    })
}

impl Engine {
    /// Makes the connection's directory usable; idempotent.
    pub(crate) fn establish(&self, rec: &ConnectionRecord) -> Result<()> {
        if rec.domain_type()? == DomainType::Iscsi {
            let node = iscsi::Node::from_spec(&rec.spec)?;
            if let Err(e) = iscsi::login(&node) {
                // As VDSM: a node that cannot log in is not kept.
                let _ = iscsi::delete_node(&node);
                return Err(e.into());
            }
            return Ok(());
        }
        let dir = self.mount_dir(&rec.spec)?;
        if rec.domain_type()? == DomainType::LocalFs {
            let target = Path::new(&rec.spec);
            if !target.is_dir() {
                return Err(Error::Connection {
                    connection: rec.spec.clone(),
                    reason: "no such directory".into(),
                });
            }
            return match fs::read_link(&dir) {
                Ok(existing) if existing == target => Ok(()),
                Ok(existing) => Err(Error::Connection {
                    connection: rec.spec.clone(),
                    reason: format!("{} already links to {}", dir.display(), existing.display()),
                }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    std::os::unix::fs::symlink(target, &dir).ctx("cannot link", &dir)
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => Err(Error::Connection {
                    connection: rec.spec.clone(),
                    reason: format!("{} is another connection's mount point", dir.display()),
                }),
                Err(e) => Err(Error::io_path("cannot read link", &dir, e)),
            };
        }
        // A mount goes only onto a real directory of cairnd's: mount(8)
        // would follow a LOCALFS connection's link of the same name and
        // mount over whatever it points to.
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {
                if mount::is_mountpoint(&dir) {
                    return Ok(());
                }
            }
            Ok(_) => {
                return Err(Error::Connection {
                    connection: rec.spec.clone(),
                    reason: format!(
                        "{} is another connection's link, never a mount point",
                        dir.display()
                    ),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&dir).ctx("cannot create mount point", &dir)?
            }
            Err(e) => return Err(Error::io_path("cannot inspect mount point", &dir, e)),
        }
        let req = MountRequest {
            spec: rec.spec.clone(),
            target: dir.clone(),
            vfs_type: rec.vfs_type.clone(),
            options: rec.options.clone(),
        };
        mount::mount(&req, MOUNT_TIMEOUT).map_err(|e| {
            let _ = fs::remove_dir(&dir);
            Error::Mount(e.to_string())
        })
    }

    fn tear_down(&self, rec: &ConnectionRecord) -> Result<()> {
        let recorded = self
            .host_state
            .lock()
            .expect("host state")
            .connections
            .iter()
            .any(|r| r.spec == rec.spec && r.domain_type == rec.domain_type);
        if !recorded {
            // Not this kind of connection of ours: whatever is at the
            // directory (another connection's link or mount) stays.
            tracing::info!(connection = %rec.spec, kind = %rec.domain_type, "not connected; nothing to disconnect");
            return Ok(());
        }
        if rec.domain_type()? == DomainType::Iscsi {
            let node = iscsi::Node::from_spec(&rec.spec)?;
            iscsi::logout(&node)?;
            iscsi::delete_node(&node)?;
            self.domain_cache.lock().expect("domain cache").clear();
            return Ok(());
        }
        let dir = self.mount_dir(&rec.spec)?;
        let entry = fs::symlink_metadata(&dir).ok();
        if rec.domain_type()? == DomainType::LocalFs {
            if entry.is_some_and(|m| m.file_type().is_symlink()) {
                fs::remove_file(&dir).ctx("cannot remove link", &dir)?;
            }
        } else if entry.is_some_and(|m| m.is_dir()) {
            if mount::is_mountpoint(&dir) {
                mount::umount(&dir, MOUNT_TIMEOUT).map_err(|e| Error::Mount(e.to_string()))?;
            }
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io_path("cannot remove mount point", &dir, e)),
            }
        }
        self.domain_cache.lock().expect("domain cache").clear();
        Ok(())
    }
}

/// LOCALFS paths must be absolute and normalized: no `.`/`..` components.
fn validate_local_path(p: &str) -> Result<()> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err(Error::IllegalRemotePath(
            p.to_string(),
            "a local path must be absolute",
        ));
    }
    // Path::components() hides inner "." segments, so look at the text.
    if p.contains('\0') || p.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(Error::IllegalRemotePath(
            p.to_string(),
            "a local path may not contain '.' or '..'",
        ));
    }
    if p.len() > 1 && p.ends_with('/') {
        return Err(Error::IllegalRemotePath(
            p.to_string(),
            "a local path may not end with '/'",
        ));
    }
    Ok(())
}

/// Directories a LOCALFS connection may never be, nor lie below.
const SYSTEM_TREES: [&str; 12] = [
    "/etc", "/proc", "/sys", "/dev", "/boot", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
    "/run",
];
/// Top-level directories a LOCALFS connection may lie below but never be.
const SYSTEM_DIRS: [&str; 8] = [
    "/", "/root", "/home", "/var", "/tmp", "/srv", "/mnt", "/opt",
];

/// A LOCALFS path: absolute and normalized, reached without links, under
/// one of `roots`, and no system directory. The roots are the data
/// directory (the embedded domain lives there) and those the administrator
/// configured (`local_roots`).
fn police_local_path(p: &str, roots: &[PathBuf]) -> Result<()> {
    validate_local_path(p)?;
    let path = Path::new(p);
    let refuse = |why: &'static str| Err(Error::IllegalRemotePath(p.to_string(), why));
    if SYSTEM_DIRS.iter().any(|d| path == Path::new(d))
        || SYSTEM_TREES.iter().any(|d| path.starts_with(d))
    {
        return refuse("a system directory is never storage");
    }
    if !roots.iter().any(|r| path.starts_with(r)) {
        return refuse("not under an allowed local storage root (local_roots)");
    }
    match path.canonicalize() {
        Ok(real) if real == path => Ok(()),
        Ok(_) => refuse("a local path may not pass through a symbolic link"),
        Err(_) => Err(Error::Connection {
            connection: p.to_string(),
            reason: "no such directory".into(),
        }),
    }
}

/// Local file systems are mounted from block devices only: mount(8) would
/// turn a regular file (say, an uploaded volume) into a loop device and
/// let the kernel parse whatever file system a tenant wrote into it.
fn check_block_device(spec: &str) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match fs::metadata(spec) {
        Ok(m) if m.file_type().is_block_device() => Ok(()),
        Ok(_) => Err(Error::IllegalRemotePath(
            spec.to_string(),
            "a local file system is mounted from a block device only",
        )),
        // mount(8) reports a missing device itself (477).
        Err(_) => Ok(()),
    }
}

fn police(vfs: &str, options: Option<&str>) -> Result<String> {
    mount::police_options(vfs, options).map_err(|reason| Error::invalid("mnt_options", reason))
}

/// Mount types and options become arguments of mount(8): no control
/// characters, no leading '-'.
fn validate_mount_text(name: &'static str, s: &str) -> Result<()> {
    if s.starts_with('-') || s.chars().any(|c| c.is_control() || c == ' ') {
        return Err(Error::invalid(
            name,
            format!("{s:?} is not a valid mount {name}"),
        ));
    }
    Ok(())
}

/// VDSM's NFS options: soft mounts that time out instead of hanging.
fn nfs_options(c: &ConnectionParams) -> Result<String> {
    let mut o = vec![
        "soft".to_string(),
        "nosharecache".to_string(),
        format!("timeo={}", c.nfs_timeout.unwrap_or(100)),
        format!("retrans={}", c.nfs_retrans.unwrap_or(3)),
    ];
    match c.nfs_version.as_deref() {
        None | Some("") | Some("auto") => {}
        Some(v @ ("3" | "4" | "4.0" | "4.1" | "4.2")) => {
            o.push(format!("nfsvers={v}"));
            if v == "3" {
                o.push("nolock".to_string());
            }
        }
        Some(v) => {
            return Err(Error::invalid(
                "protocol_version",
                format!("unsupported NFS version {v:?}"),
            ))
        }
    }
    if let Some(extra) = c.options.as_deref().filter(|s| !s.is_empty()) {
        o.push(extra.to_string());
    }
    Ok(o.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(spec: &str) -> ConnectionParams {
        ConnectionParams {
            id: serde_json::json!(1),
            spec: spec.into(),
            ..Default::default()
        }
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let c = ConnectionParams {
            password: Some("s3cret-pass".into()),
            ..params("10.0.0.1")
        };
        let chap = iscsi::Chap {
            user: "u".into(),
            password: "s3cret-pass".into(),
        };
        for text in [format!("{c:?}"), format!("{chap:?}")] {
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("<hidden>"), "{text}");
        }
    }

    #[test]
    fn local_paths() {
        assert!(validate_local_path("/srv/data").is_ok());
        assert!(validate_local_path("srv/data").is_err());
        assert!(validate_local_path("/srv/../etc").is_err());
        assert!(validate_local_path("/srv/./x").is_err());
        assert!(validate_local_path("/srv/x/").is_err());
    }

    #[test]
    fn nfs_mount_options_follow_vdsm() {
        let mut c = params("server:/export");
        assert_eq!(
            nfs_options(&c).unwrap(),
            "soft,nosharecache,timeo=100,retrans=3"
        );
        c.nfs_version = Some("3".into());
        c.nfs_timeout = Some(600);
        c.nfs_retrans = Some(6);
        assert_eq!(
            nfs_options(&c).unwrap(),
            "soft,nosharecache,timeo=600,retrans=6,nfsvers=3,nolock"
        );
        c.nfs_version = Some("5".into());
        assert!(nfs_options(&c).is_err());
        let rec = record_for(DomainType::Nfs, &params("server:/export"), &[]).unwrap();
        assert_eq!(rec.vfs_type.as_deref(), Some("nfs"));
        assert_eq!(
            rec.options.as_deref(),
            Some("soft,nosharecache,timeo=100,retrans=3,nosuid,nodev,noexec")
        );
    }

    #[test]
    fn posix_needs_a_type_and_sane_options() {
        let record = |t, c: &ConnectionParams| record_for(t, c, &[]);
        assert!(record(DomainType::SharedFs, &params("/dev/loop0")).is_err());
        let mut c = params("/dev/loop0");
        c.vfs_type = Some("xfs".into());
        assert!(record(DomainType::SharedFs, &c).is_ok());
        c.options = Some("-o remount".into());
        assert!(record(DomainType::SharedFs, &c).is_err());
        c.options = Some("exec".into());
        assert!(record(DomainType::SharedFs, &c).is_err());
        c.options = None;
        c.spec = "/etc/passwd".into();
        assert!(
            record(DomainType::SharedFs, &c).is_err(),
            "a file is no block device"
        );
        assert!(
            record(DomainType::Iscsi, &params("10.0.0.1")).is_err(),
            "an iSCSI connection needs an iqn"
        );
        let mut c = params("10.0.0.1");
        c.iqn = Some("iqn.2026-12.org.example:lun1".into());
        assert_eq!(
            record(DomainType::Iscsi, &c).unwrap().spec,
            "iqn.2026-12.org.example:lun1 10.0.0.1:3260,1 default"
        );
        c.spec = "10.0.0.1 -o delete".into();
        assert!(record(DomainType::Iscsi, &c).is_err());
    }

    #[test]
    fn local_paths_stay_under_their_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("data")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        let roots = [root.clone()];
        let ok = |p: &Path| police_local_path(p.to_str().unwrap(), &roots);
        ok(&root.join("data")).unwrap();
        assert!(ok(&root.join("etc-link")).is_err());
        for p in [
            "/",
            "/etc",
            "/etc/x",
            "/proc",
            "/root",
            "/usr/lib",
            "/run/cairn",
        ] {
            assert!(police_local_path(p, &[PathBuf::from("/")]).is_err(), "{p}");
        }
        assert!(
            police_local_path("/srv/data", &roots).is_err(),
            "outside the roots"
        );
    }
}
