//! Whole image directories of a file domain: delete (retire, purge),
//! import (a staging directory renamed into place) and what a crash can
//! leave of them.
//!
//! A retired or staged image is a directory named `_remove_me_<img>` or
//! `_remove_me_<img>.incoming`, as VDSM names images being removed, so any
//! host's garbage collection recognises it and no listing shows it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::volume::{file_names, LEASE_SUFFIX, META_SUFFIX, VOLUME_MODE};
use super::{FileDomain, REMOVED_IMAGE_PREFIX};
use crate::backend::GcReport;
use crate::error::{Error, IoContext, Result};
use crate::format::volume_md::{metadata_bytes, VolumeMetadata};
use crate::primitives::durable;
use crate::primitives::nofollow::{self, Access};
use crate::types::{parse_uuid, Uuid};

impl FileDomain {
    fn retired_dir(&self, img: Uuid) -> PathBuf {
        self.images_dir()
            .join(format!("{REMOVED_IMAGE_PREFIX}{img}"))
    }

    fn staging_dir(&self, img: Uuid) -> PathBuf {
        self.images_dir()
            .join(format!("{REMOVED_IMAGE_PREFIX}{img}.incoming"))
    }

    /// `dir` if it is a real directory (not a link planted on storage),
    /// None if it is not there.
    fn real_dir(dir: PathBuf) -> Result<Option<PathBuf>> {
        match nofollow::check_dir(&dir) {
            Ok(()) => Ok(Some(dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                Err(Error::UnsafeStorage(e.to_string()))
            }
            Err(e) => Err(Error::io_path("cannot open", &dir, e)),
        }
    }

    /// Removes a directory tree if it is there, durably. A link in its
    /// place is removed, never followed.
    fn remove_tree(&self, dir: &Path) -> Result<()> {
        let removed = match fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Ok(m) if !m.is_dir() => durable::remove_if_exists(dir).ctx("cannot remove", dir)?,
            _ => match fs::remove_dir_all(dir) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(Error::io_path("cannot remove", dir, e)),
            },
        };
        if removed {
            durable::fsync_parent(dir).ctx("cannot sync", dir)?;
        }
        Ok(())
    }

    /// The image directory checked not to be a link: removals inside it
    /// must never reach outside the domain.
    pub(super) fn checked_image_dir(&self, img: Uuid) -> Result<Option<PathBuf>> {
        Self::real_dir(self.image_dir(img))
    }

    /// Renames the image directory to its retired name (a leftover of an
    /// earlier delete of the same image goes first).
    pub(super) fn retire(&self, img: Uuid) -> Result<()> {
        let Some(src) = self.checked_image_dir(img)? else {
            return Ok(());
        };
        let doomed = self.retired_dir(img);
        self.remove_tree(&doomed)?;
        fs::rename(&src, &doomed).ctx("cannot rename", &src)?;
        let images = self.images_dir();
        durable::fsync_dir(&images).ctx("cannot sync", &images)
    }

    pub(super) fn purge(&self, img: Uuid, zero: bool, discard: bool) -> Result<()> {
        let Some(dir) = Self::real_dir(self.retired_dir(img))? else {
            return Ok(());
        };
        if zero || discard {
            for entry in fs::read_dir(&dir).ctx("cannot list", &dir)?.flatten() {
                scrub_file(&entry.path(), zero, discard)?;
            }
        }
        self.remove_tree(&dir)
    }

    pub(super) fn begin_staging(&self, img: Uuid) -> Result<()> {
        let staging = self.staging_dir(img);
        self.remove_tree(&staging)?;
        durable::create_dir(&staging, 0o755)
            .map_err(|e| self.io_failure(e, |e| Error::io_path("cannot create", &staging, e)))
    }

    fn staged(&self, img: Uuid) -> Result<PathBuf> {
        Self::real_dir(self.staging_dir(img))?.ok_or_else(|| {
            Error::io(
                format!("the import of image {img} was not started"),
                io::ErrorKind::NotFound.into(),
            )
        })
    }

    /// Hard links of the template's files, as the clone's own domain has.
    pub(super) fn stage_template(&self, img: Uuid, timg: Uuid, tvol: Uuid) -> Result<()> {
        let staging = self.staged(img)?;
        let from = self.image_dir(timg);
        for name in file_names(tvol) {
            fs::hard_link(from.join(&name), staging.join(&name)).map_err(|e| {
                self.io_failure(e, |e| Error::io_path("cannot copy into", &staging, e))
            })?;
        }
        Ok(())
    }

    pub(super) fn stage_data(&self, img: Uuid, vol: Uuid) -> Result<File> {
        self.stage_file(img, &vol.to_string())
    }

    /// A new lease file in the staged image, `alignment` bytes of zeros.
    pub(super) fn stage_lease(
        &self,
        img: Uuid,
        vol: Uuid,
        alignment: u64,
    ) -> Result<(PathBuf, u64)> {
        let name = format!("{vol}{LEASE_SUFFIX}");
        let f = self.stage_file(img, &name)?;
        let path = self.staged(img)?.join(name);
        f.set_len(alignment).ctx("cannot size", &path)?;
        Ok((path, 0))
    }

    fn stage_file(&self, img: Uuid, name: &str) -> Result<File> {
        let path = self.staged(img)?.join(name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(VOLUME_MODE)
            .open(&path)
            .map_err(|e| self.io_failure(e, |e| Error::io_path("cannot copy into", &path, e)))
    }

    pub(super) fn stage_metadata(
        &self,
        img: Uuid,
        vol: Uuid,
        md: &VolumeMetadata,
        version: u32,
    ) -> Result<()> {
        let path = self.staged(img)?.join(format!("{vol}{META_SUFFIX}"));
        let bytes = metadata_bytes(vol, md, version)?;
        durable::write_atomic(&path, &bytes, VOLUME_MODE)
            .map_err(|e| self.io_failure(e, |e| Error::io_path("cannot write", &path, e)))
    }

    pub(super) fn commit_staging(&self, img: Uuid) -> Result<()> {
        let staging = self.staged(img)?;
        durable::fsync_dir(&staging)
            .map_err(|e| self.io_failure(e, |e| Error::io_path("cannot sync", &staging, e)))?;
        let target = self.image_dir(img);
        fs::rename(&staging, &target).ctx("cannot rename", &staging)?;
        let images = self.images_dir();
        durable::fsync_dir(&images).ctx("cannot sync", &images)
    }

    pub(super) fn discard_staging(&self, img: Uuid) -> Result<()> {
        self.remove_tree(&self.staging_dir(img))
    }

    /// Removes images being deleted or imported, files being written
    /// (`*.new`), volume files without metadata and images without volumes
    /// of their own (the rest of an interrupted clone).
    pub(super) fn collect_leftovers(&self) -> Result<GcReport> {
        let mut report = GcReport::default();
        let images = self.images_dir();
        let entries = fs::read_dir(&images).map_err(|source| Error::DomainAccess {
            sd: self.sd,
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            match parse_uuid(&name) {
                Some(img) => self.collect_image(img, &mut report)?,
                None if name.starts_with(REMOVED_IMAGE_PREFIX) => {
                    self.remove_tree(&entry.path())?;
                    report.removed.push(format!("images/{name}"));
                }
                None => {
                    tracing::warn!(sd = %self.sd, entry = %name, "unexpected entry in images/ left alone")
                }
            }
        }
        if !report.is_empty() {
            durable::fsync_dir(&images).ctx("cannot sync", &images)?;
        }
        Ok(report)
    }

    fn collect_image(&self, img: Uuid, report: &mut GcReport) -> Result<()> {
        let Some(dir) = self.checked_image_dir(img)? else {
            return Ok(());
        };
        let vols = self.list_volumes(img)?;
        let mut removed_any = false;
        for entry in fs::read_dir(&dir).ctx("cannot list", &dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let base = name
                .strip_suffix(META_SUFFIX)
                .or_else(|| name.strip_suffix(LEASE_SUFFIX))
                .unwrap_or(&name);
            let owner = parse_uuid(base);
            let garbage =
                name.ends_with(durable::NEW_SUFFIX) || owner.is_some_and(|v| !vols.contains(&v));
            if garbage {
                let p = entry.path();
                durable::remove_if_exists(&p).ctx("cannot remove", &p)?;
                report.removed.push(format!("images/{img}/{name}"));
                removed_any = true;
            }
        }
        if self.own_volumes(img)?.is_empty() {
            self.remove_image_dir(img)?;
            report.removed.push(format!("images/{img}/"));
        } else if removed_any {
            durable::fsync_dir(&dir).ctx("cannot sync", &dir)?;
        }
        Ok(())
    }
}

/// Zeroes and/or discards one file's data, unless the file is also linked
/// from elsewhere (a template shared with clones keeps its data).
pub(super) fn scrub_file(path: &Path, zero: bool, discard: bool) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let f = match nofollow::open(path, Access::WRITE) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            // A link or special file planted where data was: never
            // zeroed through; removing the entry is all that is left.
            tracing::warn!(path = %path.display(), error = %e, "not scrubbing unsafe storage content");
            return Ok(());
        }
        Err(e) => return Err(Error::io_path("cannot open", path, e)),
    };
    let meta = f.metadata().ctx("cannot stat", path)?;
    if !meta.is_file() || meta.nlink() > 1 {
        return Ok(());
    }
    if zero {
        crate::primitives::extents::zero_data(&f).ctx("cannot zero", path)?;
    }
    if discard {
        crate::primitives::extents::discard(&f).ctx("cannot discard", path)?;
    }
    Ok(())
}
