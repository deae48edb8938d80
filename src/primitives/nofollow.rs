//! Opening files on storage without following links.
//!
//! Storage content is untrusted: another host, a tenant or a restored
//! backup may have replaced a volume or an image directory with a symlink
//! to a host file, or with a device node. Domain roots are canonical (no
//! links anywhere in them), so every link met on the way to a file below a
//! root was found on storage, and is refused: the kernel resolves the whole
//! path with `RESOLVE_NO_SYMLINKS`, and the result must be a regular file.

use std::fs::File;
use std::io;
use std::path::Path;

use rustix::fs::{openat2, FileType, Mode, OFlags, ResolveFlags, CWD};

/// How a file is opened: read, write or both, with extra flags (O_DIRECT).
#[derive(Debug, Clone, Copy)]
pub struct Access {
    flags: OFlags,
}

impl Access {
    pub const READ: Access = Access {
        flags: OFlags::RDONLY,
    };
    pub const WRITE: Access = Access {
        flags: OFlags::WRONLY,
    };
    pub const READ_WRITE: Access = Access {
        flags: OFlags::RDWR,
    };

    /// Adds O_DIRECT.
    pub fn direct(self) -> Access {
        Access {
            flags: self.flags | OFlags::DIRECT,
        }
    }
}

impl Access {
    /// The same access for a path Cairn trusts (a device under /dev).
    pub fn open_options(self) -> std::fs::OpenOptions {
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = std::fs::OpenOptions::new();
        let rw = self.flags & (OFlags::RDONLY | OFlags::WRONLY | OFlags::RDWR);
        o.read(rw != OFlags::WRONLY)
            .write(rw.intersects(OFlags::WRONLY | OFlags::RDWR))
            .custom_flags((self.flags & OFlags::DIRECT).bits() as i32);
        o
    }
}

fn resolve() -> ResolveFlags {
    ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

fn refused(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} is {what}; storage content is never followed or opened as a special file",
            path.display()
        ),
    )
}

fn explain(path: &Path, e: rustix::io::Errno) -> io::Error {
    if e == rustix::io::Errno::LOOP {
        refused(path, "reached through a symbolic link")
    } else {
        e.into()
    }
}

/// Opens an existing regular file with no link anywhere in `path`.
pub fn open(path: &Path, access: Access) -> io::Result<File> {
    let fd = openat2(
        CWD,
        path,
        access.flags | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
        resolve(),
    )
    .map_err(|e| explain(path, e))?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(refused(path, "not a regular file"));
    }
    // O_NONBLOCK kept a FIFO from blocking the open; regular files ignore
    // it for I/O, but clear it so nothing depends on that.
    rustix::fs::fcntl_setfl(&fd, rustix::fs::fcntl_getfl(&fd)? - OFlags::NONBLOCK)?;
    Ok(File::from(fd))
}

/// Opens where a lease lives, as [`check_lease_target`] allows.
pub fn open_lease_target(path: &Path, access: Access) -> io::Result<File> {
    let fd = openat2(
        CWD,
        path,
        access.flags | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
        resolve(),
    )
    .map_err(|e| explain(path, e))?;
    match FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) {
        FileType::RegularFile => Ok(File::from(fd)),
        FileType::BlockDevice if path.parent() == Some(Path::new("/dev")) => Ok(File::from(fd)),
        _ => Err(refused(
            path,
            "neither a regular file nor a device under /dev",
        )),
    }
}

/// Checks that `path` is a regular file reached without links, before it
/// is handed to a program (qemu-img, qemu-nbd) that opens it by name.
pub fn check_file(path: &Path) -> io::Result<()> {
    check_kind(path, FileType::RegularFile, "not a regular file")
}

/// Checks that `path` is where the sanlock daemon may write leases: a
/// regular file, or a block device node directly under `/dev` (the
/// kernel's devtmpfs, where storage content cannot plant one), reached
/// without links.
pub fn check_lease_target(path: &Path) -> io::Result<()> {
    match kind_of(path)? {
        FileType::RegularFile => Ok(()),
        FileType::BlockDevice if path.parent() == Some(Path::new("/dev")) => Ok(()),
        _ => Err(refused(
            path,
            "neither a regular file nor a device under /dev",
        )),
    }
}

/// Checks that `path` is a directory reached without links.
pub fn check_dir(path: &Path) -> io::Result<()> {
    check_kind(path, FileType::Directory, "not a directory")
}

fn check_kind(path: &Path, want: FileType, otherwise: &str) -> io::Result<()> {
    if kind_of(path)? == want {
        Ok(())
    } else {
        Err(refused(path, otherwise))
    }
}

fn kind_of(path: &Path) -> io::Result<FileType> {
    let fd = openat2(
        CWD,
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        resolve(),
    )
    .map_err(|e| explain(path, e))?;
    Ok(FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn links_and_special_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("vol"), b"data").unwrap();
        std::fs::write(root.join("host-secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(root.join("host-secret"), root.join("link")).unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("img")).unwrap();
        std::fs::write(root.join("real/vol"), b"x").unwrap();

        let mut s = String::new();
        open(&root.join("vol"), Access::READ)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "data");
        check_file(&root.join("vol")).unwrap();
        for p in ["link", "img/vol"] {
            let e = open(&root.join(p), Access::READ).unwrap_err();
            assert!(e.to_string().contains("symbolic link"), "{p}: {e}");
            assert!(check_file(&root.join(p)).is_err());
            assert!(open(&root.join(p), Access::WRITE).is_err());
        }
        assert!(check_dir(&root.join("img")).is_err());
        check_dir(&root.join("real")).unwrap();
        let e = open(Path::new("/dev/null"), Access::WRITE).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(check_file(&root.join("real")).is_err());
        rustix::fs::mknodat(
            CWD,
            root.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(open(&root.join("fifo"), Access::READ).is_err());
    }
}
