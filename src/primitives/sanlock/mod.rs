//! sanlock, through `libsanlock_client`: lockspaces (host ids on shared
//! storage), resources (leases) and the process registration that holds
//! them. Every call talks to the local sanlock daemon, found through
//! `SANLOCK_RUN_DIR` (default `/run/sanlock`); a lease dies with the
//! registered process, which is what makes sanlock safe: a host that
//! stops renewing loses its leases, and other hosts can take them once
//! its host id has expired on the storage.

pub mod dump;
pub mod sys;

use std::ffi::{c_char, c_int, CStr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr;

/// A sanlock call failed: `rv` is its return value (a negative errno or a
/// sanlock code, e.g. -243 "lease owned by a live host").
#[derive(Debug, Clone, thiserror::Error)]
#[error("sanlock {op}: {message} ({rv})")]
pub struct SanlockError {
    pub op: &'static str,
    pub rv: i32,
    pub message: String,
}

/// sanlock's codes for a lease another live host holds.
const ACQUIRE_IDLIVE: i32 = -243;
const ACQUIRE_OWNED: i32 = -244;
const ACQUIRE_OTHER: i32 = -245;

impl SanlockError {
    fn new(op: &'static str, rv: c_int) -> SanlockError {
        // SAFETY: sanlock_strerror returns a static string for any value.
        let message = unsafe { CStr::from_ptr(sys::sanlock_strerror(rv)) }
            .to_string_lossy()
            .into_owned();
        let message = if message.is_empty() || message.starts_with("Unknown") {
            std::io::Error::from_raw_os_error(-rv).to_string()
        } else {
            message
        };
        SanlockError { op, rv, message }
    }

    /// The daemon has no answer yet (a lockspace just joined reports its
    /// hosts after a few renewals): ask again later.
    pub fn is_not_ready(&self) -> bool {
        self.rv == -libc_errno::EAGAIN
    }

    /// Another host holds the lease.
    pub fn is_held_elsewhere(&self) -> bool {
        matches!(self.rv, ACQUIRE_IDLIVE | ACQUIRE_OWNED | ACQUIRE_OTHER)
            || self.rv == -libc_errno::EAGAIN
    }
}

mod libc_errno {
    pub const EAGAIN: i32 = 11;
    pub const ENOENT: i32 = 2;
    pub const EEXIST: i32 = 17;
    pub const EINPROGRESS: i32 = 115;
    pub const EBUSY: i32 = 16;
}

fn check(op: &'static str, rv: c_int) -> Result<c_int, SanlockError> {
    if rv < 0 {
        Err(SanlockError::new(op, rv))
    } else {
        Ok(rv)
    }
}

/// Where a lease lives: a file (or device) and an offset in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    pub offset: u64,
}

/// How sanlock lays out a lease area: the storage's sector size and the
/// alignment of each lease. Storage with 4K sectors refuses 512-byte
/// direct I/O, so sanlock must be told; larger alignments make room for
/// more hosts on 4K storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    sector: u32,
    align: u64,
}

const MIB: u64 = 1 << 20;

impl Geometry {
    /// 512-byte sectors, 1 MiB alignment: sanlock's classic layout.
    pub const CLASSIC: Geometry = Geometry {
        sector: 512,
        align: MIB,
    };

    /// The combinations sanlock supports: 512 B sectors with 1 MiB
    /// alignment, 4 KiB sectors with 1, 2, 4 or 8 MiB.
    pub fn new(sector: u32, align: u64) -> Result<Geometry, SanlockError> {
        let ok = match sector {
            512 => align == MIB,
            4096 => [MIB, 2 * MIB, 4 * MIB, 8 * MIB].contains(&align),
            _ => false,
        };
        if ok {
            Ok(Geometry { sector, align })
        } else {
            Err(SanlockError {
                op: "geometry",
                rv: -22,
                message: format!(
                    "sanlock has no layout for {sector}-byte sectors aligned to {align} bytes"
                ),
            })
        }
    }

    pub fn align(self) -> u64 {
        self.align
    }

    /// Host ids a lockspace (or lease) of this geometry has room for, as
    /// sanlock defines them: 2000 with 512-byte sectors, 250 per MiB of
    /// alignment with 4K sectors.
    pub fn max_hosts(self) -> u32 {
        if self.sector == 512 {
            2000
        } else {
            250 * (self.align / MIB) as u32
        }
    }

    /// The `SANLK_RES_*` bits, which equal the `SANLK_LSF_*` ones.
    fn flags(self) -> u32 {
        let align = match self.align / MIB {
            1 => sys::SANLK_RES_ALIGN1M,
            2 => sys::SANLK_RES_ALIGN2M,
            4 => sys::SANLK_RES_ALIGN4M,
            _ => sys::SANLK_RES_ALIGN8M,
        };
        let sector = if self.sector == 4096 {
            sys::SANLK_RES_SECTOR4K
        } else {
            sys::SANLK_RES_SECTOR512
        };
        align | sector
    }
}

/// A lockspace: the host id leases of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockspace {
    pub name: String,
    /// 1..=max hosts; ignored by [`write_lockspace`].
    pub host_id: u64,
    pub disk: Disk,
    pub geometry: Geometry,
}

/// A resource lease in a lockspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub lockspace: String,
    pub name: String,
    pub disk: Disk,
    pub shared: bool,
    pub geometry: Geometry,
}

/// A host as a lockspace or a lease reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub host_id: u64,
    pub generation: u64,
    pub timestamp: u64,
    pub io_timeout: u32,
    pub state: HostState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    Unknown,
    Free,
    Live,
    Fail,
    Dead,
}

impl From<&sys::sanlk_host> for Host {
    fn from(h: &sys::sanlk_host) -> Host {
        let state = match h.flags & sys::SANLK_HOST_MASK {
            2 => HostState::Free,
            3 => HostState::Live,
            4 => HostState::Fail,
            5 => HostState::Dead,
            _ => HostState::Unknown,
        };
        Host {
            host_id: h.host_id,
            generation: h.generation,
            timestamp: h.timestamp,
            io_timeout: h.io_timeout,
            state,
        }
    }
}

/// Where a lockspace stands on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockspaceState {
    Joined,
    /// Being added (an async add in progress).
    Joining,
    Absent,
}

fn copy_str<const N: usize>(
    dst: &mut [c_char; N],
    src: &[u8],
    what: &'static str,
) -> Result<(), SanlockError> {
    // Names need no terminating NUL, paths do: both fit in N - 1 here.
    if src.len() >= N || src.contains(&0) {
        return Err(SanlockError {
            op: what,
            rv: -22,
            message: format!("{what} is longer than {} bytes or contains NUL", N - 1),
        });
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s as c_char;
    }
    dst[src.len()] = 0;
    Ok(())
}

fn raw_disk(disk: &Disk) -> Result<sys::sanlk_disk, SanlockError> {
    // The daemon (root) opens the path and writes leases into it: never
    // through a link planted on storage, never into a device or FIFO.
    crate::primitives::nofollow::check_lease_target(&disk.path).map_err(|e| SanlockError {
        op: "lease path",
        rv: -(rustix::io::Errno::LOOP.raw_os_error()),
        message: e.to_string(),
    })?;
    let mut d = sys::sanlk_disk {
        path: [0; sys::SANLK_PATH_LEN],
        offset: disk.offset,
        pad1: 0,
        pad2: 0,
    };
    copy_str(
        &mut d.path,
        disk.path.as_os_str().as_encoded_bytes(),
        "lease path",
    )?;
    Ok(d)
}

fn raw_lockspace(ls: &Lockspace) -> Result<sys::sanlk_lockspace, SanlockError> {
    let mut raw = sys::sanlk_lockspace {
        name: [0; sys::SANLK_NAME_LEN],
        host_id: ls.host_id,
        flags: ls.geometry.flags(),
        host_id_disk: raw_disk(&ls.disk)?,
    };
    copy_str(&mut raw.name, ls.name.as_bytes(), "lockspace name")?;
    Ok(raw)
}

fn raw_resource(res: &Resource, lver: Option<u64>) -> Result<sys::sanlk_resource, SanlockError> {
    let mut raw = sys::sanlk_resource {
        lockspace_name: [0; sys::SANLK_NAME_LEN],
        name: [0; sys::SANLK_NAME_LEN],
        lver: lver.unwrap_or(0),
        data64: 0,
        data32: 0,
        unused: 0,
        flags: res.geometry.flags()
            | if res.shared { sys::SANLK_RES_SHARED } else { 0 }
            | if lver.is_some() {
                sys::SANLK_RES_LVER
            } else {
                0
            },
        num_disks: 1,
        disks: [raw_disk(&res.disk)?],
    };
    copy_str(
        &mut raw.lockspace_name,
        res.lockspace.as_bytes(),
        "lockspace name",
    )?;
    copy_str(&mut raw.name, res.name.as_bytes(), "resource name")?;
    Ok(raw)
}

/// Copies and frees a host list sanlock allocated.
fn take_hosts(hss: *mut sys::sanlk_host, count: c_int) -> Vec<Host> {
    if hss.is_null() {
        return Vec::new();
    }
    // SAFETY: sanlock returned `count` hosts at `hss`, allocated with malloc.
    let hosts = unsafe { std::slice::from_raw_parts(hss, count.max(0) as usize) }
        .iter()
        .map(Host::from)
        .collect();
    // SAFETY: freed once, with the allocator that made it.
    unsafe { sys::free(hss.cast()) };
    hosts
}

/// Initializes a lockspace's host id area on storage, with a slot for each
/// host its geometry has room for.
pub fn write_lockspace(ls: &Lockspace, io_timeout: u32) -> Result<(), SanlockError> {
    let mut raw = raw_lockspace(ls)?;
    let max_hosts = ls.geometry.max_hosts() as c_int;
    // SAFETY: a valid lockspace struct, used only during the call.
    check("write_lockspace", unsafe {
        sys::sanlock_write_lockspace(&mut raw, max_hosts, 0, io_timeout)
    })
    .map(drop)
}

/// Joins a lockspace with `ls.host_id`. Without `wait` the join runs in the
/// background (see [`inq_lockspace`]); with it, the call returns once this
/// host owns its host id (about 3 io_timeouts after a clean start). Joining
/// a lockspace already joined succeeds.
pub fn add_lockspace(ls: &Lockspace, io_timeout: u32, wait: bool) -> Result<(), SanlockError> {
    let mut raw = raw_lockspace(ls)?;
    let flags = if wait { 0 } else { sys::SANLK_ADD_ASYNC };
    // SAFETY: as above.
    match unsafe { sys::sanlock_add_lockspace_timeout(&mut raw, flags, io_timeout) } {
        rv if rv == -libc_errno::EEXIST => Ok(()),
        rv => check("add_lockspace", rv).map(drop),
    }
}

pub fn inq_lockspace(ls: &Lockspace) -> Result<LockspaceState, SanlockError> {
    let mut raw = raw_lockspace(ls)?;
    // SAFETY: as above.
    match unsafe { sys::sanlock_inq_lockspace(&mut raw, 0) } {
        0 => Ok(LockspaceState::Joined),
        rv if rv == -libc_errno::EINPROGRESS => Ok(LockspaceState::Joining),
        rv if rv == -libc_errno::ENOENT => Ok(LockspaceState::Absent),
        rv => Err(SanlockError::new("inq_lockspace", rv)),
    }
}

/// Leaves a lockspace (with `wait`, once the host id is released).
/// Leaving one not joined succeeds.
pub fn rem_lockspace(ls: &Lockspace, wait: bool) -> Result<(), SanlockError> {
    let mut raw = raw_lockspace(ls)?;
    let flags = if wait { 0 } else { sys::SANLK_REM_ASYNC };
    // SAFETY: as above.
    match unsafe { sys::sanlock_rem_lockspace(&mut raw, flags) } {
        rv if rv == -libc_errno::ENOENT => Ok(()),
        rv => check("rem_lockspace", rv).map(drop),
    }
}

/// Leaves a lockspace unless this host holds leases in it; returns whether
/// it left (or was not joined).
pub fn rem_lockspace_if_unused(ls: &Lockspace) -> Result<bool, SanlockError> {
    let mut raw = raw_lockspace(ls)?;
    // SAFETY: as above.
    match unsafe { sys::sanlock_rem_lockspace(&mut raw, sys::SANLK_REM_UNUSED) } {
        rv if rv == -libc_errno::ENOENT => Ok(true),
        rv if rv == -libc_errno::EBUSY => Ok(false),
        rv => check("rem_lockspace", rv).map(|_| true),
    }
}

/// The hosts of a joined lockspace (all of them for `host_id` 0).
pub fn get_hosts(lockspace: &str, host_id: u64) -> Result<Vec<Host>, SanlockError> {
    let mut name = [0 as c_char; sys::SANLK_NAME_LEN];
    copy_str(&mut name, lockspace.as_bytes(), "lockspace name")?;
    let (mut hss, mut count) = (ptr::null_mut(), 0);
    // SAFETY: name is NUL-terminated; sanlock fills hss and count.
    let rv = unsafe { sys::sanlock_get_hosts(name.as_ptr(), host_id, &mut hss, &mut count, 0) };
    let hosts = take_hosts(hss, count);
    check("get_hosts", rv)?;
    Ok(hosts)
}

/// Initializes a resource lease on storage.
pub fn write_resource(res: &Resource) -> Result<(), SanlockError> {
    let mut raw = raw_resource(res, None)?;
    let max_hosts = res.geometry.max_hosts() as c_int;
    // SAFETY: a valid one-disk resource struct, used only during the call.
    check("write_resource", unsafe {
        sys::sanlock_write_resource(&mut raw, max_hosts, 0, 0)
    })
    .map(drop)
}

/// A lease as stored: its version (incremented by each acquire) and the
/// hosts holding it.
pub fn read_resource_owners(res: &Resource) -> Result<(u64, Vec<Host>), SanlockError> {
    let mut raw = raw_resource(res, None)?;
    // SAFETY: as above.
    check("read_resource", unsafe {
        sys::sanlock_read_resource(&mut raw, 0)
    })?;
    let (mut hss, mut count) = (ptr::null_mut(), 0);
    // SAFETY: as above; sanlock fills hss and count.
    let rv = unsafe { sys::sanlock_read_resource_owners(&mut raw, 0, &mut hss, &mut count) };
    let owners = take_hosts(hss, count);
    check("read_resource_owners", rv)?;
    Ok((raw.lver, owners))
}

/// This process registered with the daemon: the leases it acquires are
/// held until released or until the registration (this process, or this
/// value) goes away.
#[derive(Debug)]
pub struct Registration {
    fd: OwnedFd,
}

impl Registration {
    pub fn new() -> Result<Registration, SanlockError> {
        // SAFETY: no arguments; returns a new socket fd or an error.
        let fd = check("register", unsafe { sys::sanlock_register() })?;
        // SAFETY: the fd is new and ours alone.
        Ok(Registration {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn sock(&self) -> c_int {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    /// Acquires a lease; with `lver` (non-zero; 0 checks nothing), only if
    /// the lease is still at that version (nobody took it since). Fails with
    /// [`SanlockError::is_held_elsewhere`] when a live host holds it.
    pub fn acquire(&self, res: &Resource, lver: Option<u64>) -> Result<(), SanlockError> {
        let mut raw = raw_resource(res, lver)?;
        let mut args = [&mut raw as *mut sys::sanlk_resource];
        // SAFETY: one valid resource pointer for the duration of the call.
        check("acquire", unsafe {
            sys::sanlock_acquire(self.sock(), -1, 0, 1, args.as_mut_ptr(), ptr::null_mut())
        })
        .map(drop)
    }

    pub fn release(&self, res: &Resource) -> Result<(), SanlockError> {
        let mut raw = raw_resource(res, None)?;
        let mut args = [&mut raw as *mut sys::sanlk_resource];
        // SAFETY: as above.
        check("release", unsafe {
            sys::sanlock_release(self.sock(), -1, 0, 1, args.as_mut_ptr())
        })
        .map(drop)
    }

    /// The leases this registration holds, in sanlock's text form
    /// (`lockspace:name:path:offset:lver`, space separated).
    pub fn inquire(&self) -> Result<(usize, String), SanlockError> {
        let (mut count, mut state) = (0, ptr::null_mut());
        // SAFETY: sanlock fills count and a malloc'ed state string.
        let rv = unsafe { sys::sanlock_inquire(self.sock(), -1, 0, &mut count, &mut state) };
        let text = if state.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated string sanlock allocated; freed once.
            let s = unsafe { CStr::from_ptr(state) }
                .to_string_lossy()
                .into_owned();
            unsafe { sys::free(state.cast()) };
            s
        };
        check("inquire", rv)?;
        Ok((count.max(0) as usize, text))
    }
}

/// Lets the sanlock daemon (which runs as user `sanlock`) read and write a
/// lease file: group `sanlock`, mode 0660. Without that group (a daemon
/// running as root) there is nothing to do.
pub fn share_with_daemon(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let gid = groups.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some("sanlock")).then(|| f.nth(1)?.parse::<u32>().ok())?
    });
    if let Some(gid) = gid {
        let gid = rustix::fs::Gid::from_raw(gid);
        rustix::fs::chown(path, None, Some(gid))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    }
    Ok(())
}

/// The daemon's run directory this process talks to.
pub fn run_dir() -> PathBuf {
    std::env::var_os("SANLOCK_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("/run/sanlock").to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ids = dir.path().join("ids");
        std::fs::write(&ids, b"").unwrap();
        let ls = Lockspace {
            name: "x".repeat(48),
            host_id: 1,
            disk: Disk {
                path: ids,
                offset: 0,
            },
            geometry: Geometry::CLASSIC,
        };
        assert!(raw_lockspace(&ls).is_err());
        let ls = Lockspace {
            name: "ok".into(),
            ..ls
        };
        let raw = raw_lockspace(&ls).unwrap();
        assert_eq!(raw.name[..3], [b'o' as c_char, b'k' as c_char, 0]);
        let long = Lockspace {
            disk: Disk {
                path: PathBuf::from("/".repeat(1024)),
                offset: 0,
            },
            ..ls
        };
        assert!(raw_lockspace(&long).is_err());
        // A link planted on storage is never handed to the daemon.
        let canary = dir.path().join("canary");
        std::fs::write(&canary, b"host file").unwrap();
        let link = dir.path().join("leases");
        std::os::unix::fs::symlink(&canary, &link).unwrap();
        let res = Resource {
            lockspace: "ok".into(),
            name: "SDM".into(),
            disk: Disk {
                path: link,
                offset: 0,
            },
            shared: false,
            geometry: Geometry::CLASSIC,
        };
        let Err(e) = raw_resource(&res, None) else {
            panic!("a linked lease path was accepted")
        };
        assert!(e.message.contains("symbolic link"), "{e:?}");
    }

    #[test]
    fn geometries_are_sanlocks() {
        assert!(Geometry::new(512, 2 * MIB).is_err());
        assert!(Geometry::new(4096, 3 * MIB).is_err());
        assert!(Geometry::new(1024, MIB).is_err());
        let hosts = |s, a| Geometry::new(s, a).unwrap().max_hosts();
        assert_eq!(hosts(512, MIB), 2000);
        assert_eq!(hosts(4096, MIB), 250);
        assert_eq!(hosts(4096, 2 * MIB), 500);
        assert_eq!(hosts(4096, 4 * MIB), 1000);
        assert_eq!(hosts(4096, 8 * MIB), 2000);
        let four_k = Geometry::new(4096, 8 * MIB).unwrap();
        assert_eq!(
            four_k.flags(),
            sys::SANLK_RES_ALIGN8M | sys::SANLK_RES_SECTOR4K
        );
    }
}
