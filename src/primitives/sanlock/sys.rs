//! Raw bindings to `libsanlock_client` (sanlock 3.8, LGPL), written from
//! `sanlock.h`, `sanlock_admin.h` and `sanlock_resource.h`. Only what the
//! safe wrapper uses; the layout test checks every struct against the C
//! headers.

use std::ffi::{c_char, c_int, c_void};

pub const SANLK_NAME_LEN: usize = 48;
pub const SANLK_PATH_LEN: usize = 1024;

pub const SANLK_RES_LVER: u32 = 0x1;
pub const SANLK_RES_SHARED: u32 = 0x4;

/// Lease area geometry, for resources (`SANLK_RES_*`) and lockspaces
/// (`SANLK_LSF_*`, the same bits).
pub const SANLK_RES_ALIGN1M: u32 = 0x10;
pub const SANLK_RES_ALIGN2M: u32 = 0x20;
pub const SANLK_RES_ALIGN4M: u32 = 0x40;
pub const SANLK_RES_ALIGN8M: u32 = 0x80;
pub const SANLK_RES_SECTOR512: u32 = 0x100;
pub const SANLK_RES_SECTOR4K: u32 = 0x200;

pub const SANLK_ADD_ASYNC: u32 = 0x1;
pub const SANLK_REM_ASYNC: u32 = 0x1;
pub const SANLK_REM_UNUSED: u32 = 0x2;
pub const SANLK_INQ_WAIT: u32 = 0x1;

pub const SANLK_HOST_MASK: u32 = 0xf;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sanlk_disk {
    pub path: [c_char; SANLK_PATH_LEN],
    pub offset: u64,
    pub pad1: u32,
    pub pad2: u32,
}

/// `struct sanlk_resource` followed by its disks (the C struct ends in a
/// flexible array); Cairn's resources have one disk.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sanlk_resource {
    pub lockspace_name: [c_char; SANLK_NAME_LEN],
    pub name: [c_char; SANLK_NAME_LEN],
    pub lver: u64,
    pub data64: u64,
    pub data32: u32,
    pub unused: u32,
    pub flags: u32,
    pub num_disks: u32,
    pub disks: [sanlk_disk; 1],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sanlk_lockspace {
    pub name: [c_char; SANLK_NAME_LEN],
    pub host_id: u64,
    pub flags: u32,
    pub host_id_disk: sanlk_disk,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sanlk_host {
    pub host_id: u64,
    pub generation: u64,
    pub timestamp: u64,
    pub io_timeout: u32,
    pub flags: u32,
}

#[link(name = "sanlock_client")]
extern "C" {
    pub fn sanlock_register() -> c_int;
    pub fn sanlock_acquire(
        sock: c_int,
        pid: c_int,
        flags: u32,
        res_count: c_int,
        res_args: *mut *mut sanlk_resource,
        opt_in: *mut c_void,
    ) -> c_int;
    pub fn sanlock_release(
        sock: c_int,
        pid: c_int,
        flags: u32,
        res_count: c_int,
        res_args: *mut *mut sanlk_resource,
    ) -> c_int;
    pub fn sanlock_inquire(
        sock: c_int,
        pid: c_int,
        flags: u32,
        res_count: *mut c_int,
        res_state: *mut *mut c_char,
    ) -> c_int;
    pub fn sanlock_add_lockspace_timeout(
        ls: *mut sanlk_lockspace,
        flags: u32,
        io_timeout: u32,
    ) -> c_int;
    pub fn sanlock_inq_lockspace(ls: *mut sanlk_lockspace, flags: u32) -> c_int;
    pub fn sanlock_rem_lockspace(ls: *mut sanlk_lockspace, flags: u32) -> c_int;
    pub fn sanlock_get_hosts(
        ls_name: *const c_char,
        host_id: u64,
        hss: *mut *mut sanlk_host,
        hss_count: *mut c_int,
        flags: u32,
    ) -> c_int;
    pub fn sanlock_write_lockspace(
        ls: *mut sanlk_lockspace,
        max_hosts: c_int,
        flags: u32,
        io_timeout: u32,
    ) -> c_int;
    pub fn sanlock_write_resource(
        res: *mut sanlk_resource,
        max_hosts: c_int,
        num_hosts: c_int,
        flags: u32,
    ) -> c_int;
    pub fn sanlock_read_resource(res: *mut sanlk_resource, flags: u32) -> c_int;
    pub fn sanlock_read_resource_owners(
        res: *mut sanlk_resource,
        flags: u32,
        hss: *mut *mut sanlk_host,
        hss_count: *mut c_int,
    ) -> c_int;
    pub fn sanlock_strerror(rv: c_int) -> *const c_char;
}

extern "C" {
    /// libc's free, for what sanlock allocates with malloc.
    pub fn free(p: *mut c_void);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Every size and offset the bindings rely on, as the C compiler sees
    /// them in sanlock's own headers.
    #[test]
    fn layouts_match_the_c_headers() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("layout.c");
        std::fs::write(
            &src,
            r#"
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <sanlock.h>
#define P(t, f) printf(#t "." #f " %zu\n", offsetof(struct t, f));
#define S(t) printf(#t " %zu\n", sizeof(struct t));
int main(void) {
    S(sanlk_disk) P(sanlk_disk, offset) P(sanlk_disk, pad2)
    S(sanlk_resource) P(sanlk_resource, name) P(sanlk_resource, lver)
    P(sanlk_resource, data64) P(sanlk_resource, data32) P(sanlk_resource, flags)
    P(sanlk_resource, num_disks) P(sanlk_resource, disks)
    S(sanlk_lockspace) P(sanlk_lockspace, host_id) P(sanlk_lockspace, flags)
    P(sanlk_lockspace, host_id_disk)
    S(sanlk_host) P(sanlk_host, generation) P(sanlk_host, timestamp)
    P(sanlk_host, io_timeout) P(sanlk_host, flags)
#define F(f) printf(#f " %u\n", (unsigned)f);
    F(SANLK_RES_ALIGN1M) F(SANLK_RES_ALIGN2M) F(SANLK_RES_ALIGN4M)
    F(SANLK_RES_ALIGN8M) F(SANLK_RES_SECTOR512) F(SANLK_RES_SECTOR4K)
    F(SANLK_LSF_ALIGN1M) F(SANLK_LSF_ALIGN2M) F(SANLK_LSF_ALIGN4M)
    F(SANLK_LSF_ALIGN8M) F(SANLK_LSF_SECTOR512) F(SANLK_LSF_SECTOR4K)
    F(SANLK_RES_LVER) F(SANLK_RES_SHARED)
    return 0;
}
"#,
        )
        .unwrap();
        let exe = dir.path().join("layout");
        let built = std::process::Command::new("cc")
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .status()
            .expect("a C compiler (scripts/deps.sh installs gcc)");
        assert!(built.success(), "sanlock.h (libsanlock-dev) is needed");
        let out = std::process::Command::new(&exe).output().unwrap();
        let c: std::collections::HashMap<String, usize> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap();
                (k.to_string(), v.parse().unwrap())
            })
            .collect();
        let disk = size_of::<sanlk_disk>();
        let rust = [
            ("sanlk_disk", disk),
            ("sanlk_disk.offset", offset_of!(sanlk_disk, offset)),
            ("sanlk_disk.pad2", offset_of!(sanlk_disk, pad2)),
            // The C struct has a zero-length disks array; ours has one.
            ("sanlk_resource", size_of::<sanlk_resource>() - disk),
            ("sanlk_resource.name", offset_of!(sanlk_resource, name)),
            ("sanlk_resource.lver", offset_of!(sanlk_resource, lver)),
            ("sanlk_resource.data64", offset_of!(sanlk_resource, data64)),
            ("sanlk_resource.data32", offset_of!(sanlk_resource, data32)),
            ("sanlk_resource.flags", offset_of!(sanlk_resource, flags)),
            (
                "sanlk_resource.num_disks",
                offset_of!(sanlk_resource, num_disks),
            ),
            ("sanlk_resource.disks", offset_of!(sanlk_resource, disks)),
            ("sanlk_lockspace", size_of::<sanlk_lockspace>()),
            (
                "sanlk_lockspace.host_id",
                offset_of!(sanlk_lockspace, host_id),
            ),
            ("sanlk_lockspace.flags", offset_of!(sanlk_lockspace, flags)),
            (
                "sanlk_lockspace.host_id_disk",
                offset_of!(sanlk_lockspace, host_id_disk),
            ),
            ("sanlk_host", size_of::<sanlk_host>()),
            ("sanlk_host.generation", offset_of!(sanlk_host, generation)),
            ("sanlk_host.timestamp", offset_of!(sanlk_host, timestamp)),
            ("sanlk_host.io_timeout", offset_of!(sanlk_host, io_timeout)),
            ("sanlk_host.flags", offset_of!(sanlk_host, flags)),
        ];
        let flags = [
            ("ALIGN1M", SANLK_RES_ALIGN1M),
            ("ALIGN2M", SANLK_RES_ALIGN2M),
            ("ALIGN4M", SANLK_RES_ALIGN4M),
            ("ALIGN8M", SANLK_RES_ALIGN8M),
            ("SECTOR512", SANLK_RES_SECTOR512),
            ("SECTOR4K", SANLK_RES_SECTOR4K),
        ];
        for (name, value) in flags {
            for kind in ["RES", "LSF"] {
                let c_name = format!("SANLK_{kind}_{name}");
                assert_eq!(Some(&(value as usize)), c.get(&c_name), "{c_name}");
            }
        }
        assert_eq!(Some(&(SANLK_RES_LVER as usize)), c.get("SANLK_RES_LVER"));
        assert_eq!(
            Some(&(SANLK_RES_SHARED as usize)),
            c.get("SANLK_RES_SHARED")
        );
        for (name, value) in rust {
            assert_eq!(Some(&value), c.get(name), "{name}");
        }
    }
}
