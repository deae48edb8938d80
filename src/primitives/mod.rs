//! Building blocks with no knowledge of pools or domains.

pub mod child;
pub mod chunked_backup;
pub mod copy;
pub mod durable;
pub mod extents;
pub mod fc;
pub mod iscsi;
pub mod lease;
pub mod luns;
pub mod lvm;
pub mod mailbox;
pub mod mount;
pub mod nbd;
pub mod nofollow;
pub mod pipeline;
pub mod privileges;
pub mod probe;
pub mod qcow2_create;
pub mod qemu_img;
pub mod qmp;
pub mod reserve;
pub mod sanlock;
pub mod sparsify;
pub mod tgt;

/// A read-write file in a test's scratch directory (created if missing,
/// kept if there).
#[cfg(test)]
pub(crate) fn scratch_file(dir: &std::path::Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(name))
        .expect("scratch file")
}
