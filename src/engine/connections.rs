//! Storage server connections: each one becomes a directory under `mnt/`
//! named after its remote path (a link for LOCALFS, a mount point otherwise).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Engine;
use crate::error::{Error, IoContext, Result};
use crate::primitives::mount::{self, MountRequest};
use crate::types::DomainType;

const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// One entry of `connectionParams`, in the form VDSM receives on the wire.
#[derive(Debug, Clone, PartialEq)]
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
}

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
        conns
            .iter()
            .map(|c| {
                let result = Self::record_for(domain_type, c).and_then(|rec| {
                    self.establish(&rec)?;
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
        conns
            .iter()
            .map(|c| {
                let result = Self::record_for(domain_type, c).and_then(|rec| {
                    self.tear_down(&rec)?;
                    self.save_host_state(|st| st.connections.retain(|r| r.spec != rec.spec))
                });
                (c.id.clone(), result)
            })
            .collect()
    }

    /// The directory under `mnt/` for a remote path.
    pub fn mount_dir(&self, remote: &str) -> Result<PathBuf> {
        let name = mount::mount_point_name(remote).ok_or_else(|| {
            Error::IllegalRemotePath(remote.to_string(), "not usable as a connection path")
        })?;
        Ok(self.paths.mnt.join(name))
    }

    fn record_for(domain_type: DomainType, c: &ConnectionParams) -> Result<ConnectionRecord> {
        let (vfs_type, options) = match domain_type {
            DomainType::LocalFs => {
                validate_local_path(&c.spec)?;
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
                (Some(vfs), c.options.clone())
            }
            DomainType::GlusterFs => (Some("glusterfs".to_string()), c.options.clone()),
            DomainType::Nfs => (Some("nfs".to_string()), Some(nfs_options(c)?)),
            other => {
                return Err(Error::StorageTypeNotSupported(
                    other.name().to_string(),
                    "block storage (iSCSI, FC) and CIFS connections are not implemented yet",
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

    /// Makes the connection's directory usable; idempotent.
    pub(crate) fn establish(&self, rec: &ConnectionRecord) -> Result<()> {
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
                Err(e) => Err(Error::io_path("cannot read link", &dir, e)),
            };
        }
        if mount::is_mountpoint(&dir) {
            return Ok(());
        }
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io_path("cannot create mount point", &dir, e)),
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
        let dir = self.mount_dir(&rec.spec)?;
        if rec.domain_type()? == DomainType::LocalFs {
            if fs::symlink_metadata(&dir).is_ok() {
                fs::remove_file(&dir).ctx("cannot remove link", &dir)?;
            }
        } else {
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
            vfs_type: None,
            options: None,
            nfs_version: None,
            nfs_timeout: None,
            nfs_retrans: None,
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
        let rec = Engine::record_for(DomainType::Nfs, &params("server:/export")).unwrap();
        assert_eq!(rec.vfs_type.as_deref(), Some("nfs"));
    }

    #[test]
    fn posix_needs_a_type_and_sane_options() {
        assert!(Engine::record_for(DomainType::SharedFs, &params("/dev/loop0")).is_err());
        let mut c = params("/dev/loop0");
        c.vfs_type = Some("xfs".into());
        assert!(Engine::record_for(DomainType::SharedFs, &c).is_ok());
        c.options = Some("-o remount".into());
        assert!(Engine::record_for(DomainType::SharedFs, &c).is_err());
        assert!(Engine::record_for(DomainType::Iscsi, &params("10.0.0.1")).is_err());
    }
}
