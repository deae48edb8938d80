//! Space held back for recovery on a file system that fills up.
//!
//! A full domain must still let a host take the SPM role, persist the
//! tasks that delete volumes and rewrite metadata, or nothing can free the
//! space but an operator deleting files by hand. Each domain (and the data
//! directory) keeps a preallocated `.cairn-reserve` file; a metadata
//! rewrite that hits ENOSPC releases the nearest reserve and tries again.
//! New volumes are refused before the reserve would be touched, and the
//! reserve is made again once there is room.

use std::io;
use std::path::{Path, PathBuf};

pub const RESERVE_NAME: &str = ".cairn-reserve";
/// Enough for thousands of metadata rewrites and task records.
pub const RESERVE_SIZE: u64 = 8 << 20;
/// How many directories up from a file its reserve may be.
const SEARCH_DEPTH: usize = 4;

/// Makes `dir`'s reserve if it is missing and there is room; true if it
/// exists afterwards.
pub fn ensure(dir: &Path) -> bool {
    let path = dir.join(RESERVE_NAME);
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() >= RESERVE_SIZE) {
        return true;
    }
    let made = (|| -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .mode(0o600)
            .open(&path)?;
        rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, RESERVE_SIZE)?;
        f.sync_all()
    })();
    match made {
        Ok(()) => {
            tracing::debug!(path = %path.display(), "space reserve in place");
            true
        }
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            tracing::debug!(path = %path.display(), error = %e, "no room for the space reserve yet");
            false
        }
    }
}

/// Releases the reserve nearest to `path` (in its directory or one of the
/// few above); the reserve released, if any.
pub fn release_near(path: &Path) -> Option<PathBuf> {
    for dir in path.ancestors().skip(1).take(SEARCH_DEPTH) {
        let reserve = dir.join(RESERVE_NAME);
        if std::fs::symlink_metadata(&reserve).is_ok_and(|m| m.is_file())
            && std::fs::remove_file(&reserve).is_ok()
        {
            tracing::warn!(reserve = %reserve.display(), "file system full: released the space reserve to keep recovery going; delete volumes to free space");
            return Some(reserve);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_reserve_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        assert!(ensure(dir.path()));
        assert!(ensure(dir.path()), "ensuring twice keeps it");
        assert_eq!(
            std::fs::metadata(dir.path().join(RESERVE_NAME))
                .unwrap()
                .len(),
            RESERVE_SIZE
        );
        assert_eq!(
            release_near(&deep.join("file")),
            Some(dir.path().join(RESERVE_NAME))
        );
        assert_eq!(release_near(&deep.join("file")), None);
    }
}
