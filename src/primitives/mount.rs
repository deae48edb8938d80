//! Mounting storage connections on deterministic mount points.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{program} {target} failed: {stderr}")]
    Failed {
        program: &'static str,
        target: PathBuf,
        stderr: String,
    },
    #[error("{program} {target} did not finish within {timeout:?}")]
    Timeout {
        program: &'static str,
        target: PathBuf,
        timeout: Duration,
    },
}

/// The directory name for a remote path, as VDSM derives it: `_` is doubled
/// and `/` becomes `_`, so distinct remote paths get distinct names and no
/// name contains a path separator. Returns None for names that would be
/// unusable as a directory entry.
pub fn mount_point_name(remote: &str) -> Option<String> {
    if remote.is_empty() || remote.contains('\0') {
        return None;
    }
    let name = remote.replace('_', "__").replace('/', "_");
    if name == "." || name == ".." || name.len() > 255 {
        return None;
    }
    Some(name)
}

/// Options every storage mount gets: nothing on a data mount needs to run,
/// be a device or raise privileges, and storage content is untrusted.
pub const FORCED_OPTIONS: [&str; 3] = ["nosuid", "nodev", "noexec"];

/// File system types a storage connection may mount. Pseudo and stacking
/// file systems (bind mounts, tmpfs, overlay, proc) are never storage.
const LOCAL_TYPES: [&str; 5] = ["xfs", "ext4", "ext3", "ext2", "btrfs"];
const NETWORK_TYPES: [&str; 5] = ["nfs", "nfs4", "glusterfs", "ceph", "cephfs"];

/// Options that take no value, allowed on every type.
const COMMON_FLAGS: [&str; 11] = [
    "ro",
    "rw",
    "noatime",
    "relatime",
    "nodiratime",
    "lazytime",
    "strictatime",
    "sync",
    "async",
    "dirsync",
    "_netdev",
];

/// Per type: options without a value, and options that take one.
fn type_options(vfs: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match vfs {
        "xfs" => (
            &[
                "discard",
                "nodiscard",
                "inode64",
                "largeio",
                "nolargeio",
                "nouuid",
                "noquota",
                "wsync",
            ],
            &["logbufs", "logbsize", "allocsize"],
        ),
        "ext4" | "ext3" | "ext2" => (
            &[
                "discard",
                "nodiscard",
                "nodelalloc",
                "delalloc",
                "journal_checksum",
                "noauto_da_alloc",
            ],
            &["commit", "data", "barrier"],
        ),
        "btrfs" => (
            &["discard", "nodiscard", "ssd", "nossd"],
            &["compress", "subvol", "subvolid"],
        ),
        "nfs" | "nfs4" => (
            &[
                "soft",
                "hard",
                "softerr",
                "nolock",
                "lock",
                "nosharecache",
                "sharecache",
                "noac",
                "ac",
                "acl",
                "noacl",
                "intr",
                "nointr",
                "cto",
                "nocto",
            ],
            &[
                "timeo",
                "retrans",
                "nfsvers",
                "vers",
                "proto",
                "port",
                "rsize",
                "wsize",
                "sec",
                "actimeo",
                "acregmin",
                "acregmax",
                "acdirmin",
                "acdirmax",
                "lookupcache",
                "local_lock",
                "clientaddr",
                "mountport",
                "mountproto",
                "minorversion",
                "namlen",
                "retry",
                "nconnect",
            ],
        ),
        "glusterfs" => (
            &["acl", "selinux", "enable-ino32"],
            &[
                "backup-volfile-servers",
                "backupvolfile-server",
                "log-level",
                "transport",
                "direct-io-mode",
                "volfile-max-fetch-attempts",
                "attribute-timeout",
                "entry-timeout",
            ],
        ),
        "ceph" | "cephfs" => (&["noshare"], &["name", "mds_namespace", "fs", "mon_addr"]),
        _ => (&[], &[]),
    }
}

/// Checks a connection's file system type and options against what storage
/// needs, and returns the options to mount with: the caller's, then
/// [`FORCED_OPTIONS`]. Anything not known to be harmless is refused rather
/// than passed to mount(8): `exec`, `suid`, `dev`, `loop`, `bind`,
/// `errors=panic`, options naming host files (`log-file=`, `secretfile=`).
pub fn police_options(vfs: &str, options: Option<&str>) -> Result<String, String> {
    if !LOCAL_TYPES.contains(&vfs) && !NETWORK_TYPES.contains(&vfs) {
        return Err(format!(
            "file system type {vfs:?} is not storage (allowed: {}, {})",
            LOCAL_TYPES.join(", "),
            NETWORK_TYPES.join(", ")
        ));
    }
    let (flags, valued) = type_options(vfs);
    let mut out: Vec<String> = Vec::new();
    for opt in options.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (opt, None),
        };
        let known = match value {
            None => {
                COMMON_FLAGS.contains(&name)
                    || flags.contains(&name)
                    || FORCED_OPTIONS.contains(&name)
            }
            Some(v) => {
                valued.contains(&name)
                    && !v.is_empty()
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".:_-".contains(c))
            }
        };
        if !known {
            return Err(format!("mount option {opt:?} is not allowed for {vfs}"));
        }
        if !out.iter().any(|o| o == opt) {
            out.push(opt.to_string());
        }
    }
    for forced in FORCED_OPTIONS {
        if !out.iter().any(|o| o == forced) {
            out.push(forced.to_string());
        }
    }
    Ok(out.join(","))
}

/// True for types whose spec is a local block device (not a server path).
pub fn is_local_type(vfs: &str) -> bool {
    LOCAL_TYPES.contains(&vfs)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    pub spec: String,
    pub target: PathBuf,
    pub vfs_type: Option<String>,
    pub options: Option<String>,
}

impl MountRequest {
    /// Arguments for mount(8).
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        if let Some(t) = &self.vfs_type {
            args.push("-t".into());
            args.push(t.into());
        }
        if let Some(o) = self.options.as_deref().filter(|o| !o.is_empty()) {
            args.push("-o".into());
            args.push(o.into());
        }
        // "--" keeps a spec starting with '-' from being read as an option.
        args.push("--".into());
        args.push(self.spec.clone().into());
        args.push(self.target.clone().into());
        args
    }
}

/// The mount program: mount(8), unless `CAIRN_MOUNT` names another (a
/// wrapper that takes the same arguments; the tests use one to stand in
/// for the NFS client this kernel lacks).
fn mount_program() -> OsString {
    std::env::var_os("CAIRN_MOUNT").unwrap_or_else(|| "mount".into())
}

pub fn mount(req: &MountRequest, timeout: Duration) -> Result<(), MountError> {
    let mut cmd = Command::new(mount_program());
    cmd.args(req.args());
    run_with_timeout(cmd, "mount", &req.target, timeout)
}

pub fn umount(target: &Path, timeout: Duration) -> Result<(), MountError> {
    let mut cmd = Command::new("umount");
    cmd.arg("--").arg(target);
    run_with_timeout(cmd, "umount", target, timeout)
}

/// True if `path` is a mount point, from /proc/self/mountinfo.
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Ok(canon) = path.canonicalize() else {
        return false;
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(&unescape_mountinfo(mp)) == canon)
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn run_with_timeout(
    mut cmd: Command,
    program: &'static str,
    target: &Path,
    timeout: Duration,
) -> Result<(), MountError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|source| MountError::Spawn { program, source })?;
    let start = Instant::now();
    loop {
        match child
            .try_wait()
            .map_err(|source| MountError::Spawn { program, source })?
        {
            Some(status) => {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut stderr);
                }
                if status.success() {
                    return Ok(());
                }
                return Err(MountError::Failed {
                    program,
                    target: target.to_path_buf(),
                    stderr: stderr.trim().to_string(),
                });
            }
            None if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(MountError::Timeout {
                    program,
                    target: target.to_path_buf(),
                    timeout,
                });
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_injective_and_flat() {
        assert_eq!(
            mount_point_name("server:/export/data").unwrap(),
            "server:_export_data"
        );
        assert_eq!(mount_point_name("/a_b").unwrap(), "_a__b");
        assert_ne!(mount_point_name("/a_b"), mount_point_name("/a/b"));
        assert_eq!(mount_point_name(".."), None);
        assert_eq!(mount_point_name(""), None);
        assert!(!mount_point_name("../../etc").unwrap().contains('/'));
    }

    #[test]
    fn mount_arguments() {
        let req = MountRequest {
            spec: "/dev/loop3".into(),
            target: "/srv/m".into(),
            vfs_type: Some("xfs".into()),
            options: Some("noatime".into()),
        };
        let args: Vec<_> = req
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            ["-t", "xfs", "-o", "noatime", "--", "/dev/loop3", "/srv/m"]
        );
    }

    #[test]
    fn options_are_policed() {
        assert_eq!(
            police_options("xfs", Some("noatime")).unwrap(),
            "noatime,nosuid,nodev,noexec"
        );
        assert_eq!(police_options("xfs", None).unwrap(), "nosuid,nodev,noexec");
        assert_eq!(
            police_options("nfs", Some("soft,timeo=600,nfsvers=4.2")).unwrap(),
            "soft,timeo=600,nfsvers=4.2,nosuid,nodev,noexec"
        );
        for bad in [
            "exec",
            "suid",
            "dev",
            "loop",
            "bind",
            "remount",
            "errors=panic",
            "noatime,exec",
            "logbufs=../x",
            "uid=0",
            "context=x",
        ] {
            assert!(police_options("xfs", Some(bad)).is_err(), "{bad}");
        }
        assert!(police_options("glusterfs", Some("log-file=/etc/passwd")).is_err());
        for t in [
            "none", "tmpfs", "overlay", "proc", "bind", "sysfs", "9p", "",
        ] {
            assert!(police_options(t, None).is_err(), "{t}");
        }
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b"), "/mnt/a b");
    }
}
