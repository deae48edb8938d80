//! Crash-safe file updates.
//!
//! Metadata on shared storage is replaced by writing `<name>.new`, syncing it,
//! renaming it over the old file and syncing the directory, so that a crash
//! leaves either the old or the new contents, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Suffix of a metadata file being replaced.
pub const NEW_SUFFIX: &str = ".new";

pub fn new_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(NEW_SUFFIX);
    PathBuf::from(s)
}

/// Atomically replaces `path` with `data`, durably. On a full file system
/// the nearest space reserve is released and the write tried once more:
/// these rewrites (metadata, task records, host state) are what recovery
/// and freeing space need.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    match replace(path, data, mode) {
        Err(e) if crate::error::is_enospc(&e) && super::reserve::release_near(path).is_some() => {
            replace(path, data, mode)
        }
        other => other,
    }
}

fn replace(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = new_path(path);
    let result = (|| {
        // A leftover (or planted) temporary is removed, never opened: it
        // could be a link to a file outside the storage.
        remove_if_exists(&tmp)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fsync_parent(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `path` with `data`; fails with `AlreadyExists` if it exists.
/// The file is synced and so is its directory.
pub fn create_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    create_new_synced(path, data, mode)?;
    fsync_parent(path)
}

/// Creates `path` with `data` and syncs the file, not its directory: for
/// callers that sync the directory together with others.
pub fn create_new_synced(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    let written = f.write_all(data).and_then(|_| f.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Creates `path` with `data` atomically: the contents are written and
/// synced under `<path>.new`, then linked to `path`, which fails with
/// `AlreadyExists` if it exists. `path` never exists with partial contents.
/// Syncing the directory is up to the caller.
pub fn create_new_linked(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = new_path(path);
    remove_if_exists(&tmp)?;
    create_new_synced(&tmp, data, mode)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked
}

/// Syncs several files at once. Independent syncs issued together can share
/// one journal commit instead of waiting for one commit each.
pub fn sync_all_together(files: &[&File]) -> io::Result<()> {
    match files {
        [] => Ok(()),
        [one] => one.sync_all(),
        [first, rest @ ..] => std::thread::scope(|s| {
            let others: Vec<_> = rest.iter().map(|f| s.spawn(move || f.sync_all())).collect();
            let mut result = first.sync_all();
            for h in others {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("sync thread panicked")));
                result = result.and(r);
            }
            result
        }),
    }
}

/// Syncs several directories at once (see `sync_all_together`).
pub fn fsync_dirs_together(dirs: &[&Path]) -> io::Result<()> {
    let opened = dirs
        .iter()
        .map(File::open)
        .collect::<io::Result<Vec<_>>>()?;
    sync_all_together(&opened.iter().collect::<Vec<_>>())
}

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn fsync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => fsync_dir(p),
        _ => fsync_dir(Path::new(".")),
    }
}

/// Creates a directory (mode applied exactly, not masked) and syncs its parent.
pub fn create_dir(path: &Path, mode: u32) -> io::Result<()> {
    make_dir(path, mode)?;
    fsync_parent(path)
}

/// Creates a directory without syncing its parent: for callers that sync
/// the parent once after several steps.
pub fn make_dir(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new().mode(mode).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Removes a file if present; syncing the directory is up to the caller.
pub fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Copies the directory tree `src` to `dst` (which must not exist): every
/// file and directory synced before this returns, modes kept. For small
/// trees of records (a pool's task records); symlinks are refused.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(src)?.permissions().mode() & 0o7777;
    make_dir(dst, mode)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&from, &to)?;
        } else if kind.is_file() {
            fs::copy(&from, &to)?;
            File::open(&to)?.sync_all()?;
        } else {
            return Err(io::Error::other(format!(
                "{} is neither a file nor a directory",
                from.display()
            )));
        }
    }
    fsync_dir(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_copy_keeps_files_and_refuses_links() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("tasks");
        fs::create_dir_all(src.join("t1")).unwrap();
        fs::write(src.join("t1").join("task.json"), b"{}").unwrap();
        copy_tree(&src, &dir.path().join("copy")).unwrap();
        assert_eq!(
            fs::read(dir.path().join("copy/t1/task.json")).unwrap(),
            b"{}"
        );
        std::os::unix::fs::symlink("/etc/passwd", src.join("t1").join("link")).unwrap();
        assert!(copy_tree(&src, &dir.path().join("copy2")).is_err());
    }

    #[test]
    fn atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metadata");
        write_atomic(&p, b"one", 0o660).unwrap();
        write_atomic(&p, b"two", 0o660).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!new_path(&p).exists());
    }

    #[test]
    fn linked_creation_is_exclusive_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.meta");
        create_new_linked(&p, b"a", 0o660).unwrap();
        assert_eq!(
            create_new_linked(&p, b"b", 0o660).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(fs::read(&p).unwrap(), b"a");
        assert!(!new_path(&p).exists());
    }

    #[test]
    fn create_new_refuses_existing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        create_new(&p, b"a", 0o660).unwrap();
        assert_eq!(
            create_new(&p, b"b", 0o660).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(fs::read(&p).unwrap(), b"a");
    }
}
