//! Garbage collection of what a crash can leave on a file domain, and the
//! engine's recovery step runner.
//!
//! Runs when this host becomes SPM, after interrupted tasks are recovered
//! and before any new task can start, so nothing it removes is in use.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::recovery::{Commit, Step, StepRunner};
use super::volumes::children_of;
use super::Engine;
use crate::backend::file::volume::{LEASE_SUFFIX, META_SUFFIX};
use crate::backend::file::{FileDomain, REMOVED_IMAGE_PREFIX};
use crate::error::{Error, IoContext, Result};
use crate::primitives::durable;
use crate::primitives::qemu_img::{self, InfoOptions};
use crate::types::{parse_uuid, Uuid, VolumeRole};

/// What garbage collection did, for the log and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Paths removed, relative to their domain.
    pub removed: Vec<String>,
    /// Volumes whose role was repaired.
    pub repaired: Vec<String>,
}

impl GcReport {
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.repaired.is_empty()
    }
}

/// Resolves a domain-relative path from a task record, refusing anything
/// that could leave the domain (records live on shared storage): `..`,
/// absolute paths, and a directory on the way that is a link (an unlink
/// or a commit check would go through it).
fn domain_path(dom: &FileDomain, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Error::invalid(
            "task record",
            format!("path {rel:?} is not inside a domain"),
        ));
    }
    let full = dom.root().join(p);
    let parent = full.parent().unwrap_or(dom.root());
    match crate::primitives::nofollow::check_dir(parent) {
        Ok(()) => Ok(full),
        // Nothing there: nothing to remove, and nothing committed.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(full),
        Err(e) => Err(Error::UnsafeStorage(e.to_string())),
    }
}

impl Engine {
    /// Runs one recovery step (also used by task bodies for their redo part).
    pub(crate) fn run_step(&self, step: &Step) -> Result<()> {
        match step {
            Step::RemoveFile { sd, path } => {
                let p = domain_path(&*self.domain(*sd)?, path)?;
                if durable::remove_if_exists(&p).ctx("cannot remove", &p)? {
                    durable::fsync_parent(&p).ctx("cannot sync", &p)?;
                }
                Ok(())
            }
            Step::RemoveEmptyDir { sd, path } => {
                let p = domain_path(&*self.domain(*sd)?, path)?;
                match fs::remove_dir(&p) {
                    Ok(()) => durable::fsync_parent(&p).ctx("cannot sync", &p),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e)
                        if e.raw_os_error() == Some(rustix::io::Errno::NOTEMPTY.raw_os_error()) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(Error::io_path("cannot remove", &p, e)),
                }
            }
            Step::RemoveTree { sd, path } => {
                let p = domain_path(&*self.domain(*sd)?, path)?;
                match fs::remove_dir_all(&p) {
                    Ok(()) => durable::fsync_parent(&p).ctx("cannot sync", &p),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::io_path("cannot remove", &p, e)),
                }
            }
            Step::WriteVolumeMetadata {
                sd,
                img,
                vol,
                contents,
            } => {
                let dom = self.domain(*sd)?;
                let p = dom.meta_path(*img, *vol);
                durable::write_atomic(
                    &p,
                    contents.as_bytes(),
                    crate::backend::file::volume::VOLUME_MODE,
                )
                .ctx("cannot write", &p)
            }
            Step::RelinkLeaf { sd, img, vol } => {
                let dom = self.domain(*sd)?;
                let Ok(mut md) = dom.read_volume(*img, *vol) else {
                    return Ok(());
                };
                if md.role == VolumeRole::Internal && children_of(&dom, *img, *vol)?.is_empty() {
                    md.role = VolumeRole::Leaf;
                    dom.write_volume(*img, *vol, &md, dom.manifest()?.version)?;
                }
                Ok(())
            }
            Step::Scrub {
                sd,
                path,
                zero,
                discard,
            } => {
                let p = domain_path(&*self.domain(*sd)?, path)?;
                let files: Vec<PathBuf> = match fs::read_dir(&p) {
                    Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
                    Err(e)
                        if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) =>
                    {
                        vec![p.clone()]
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(Error::io_path("cannot list", &p, e)),
                };
                for f in files {
                    scrub_file(&f, *zero, *discard)?;
                }
                Ok(())
            }
            Step::ResizeImage {
                sd,
                img,
                vol,
                format,
                size,
            } => self.resize_volume_data(*sd, *img, *vol, *format, *size),
            Step::RemoveBitmap { sd, img, vol, name } => {
                let dom = self.domain(*sd)?;
                if !dom.volume_path(*img, *vol).exists() {
                    return Ok(());
                }
                let path = dom.data_file(*img, *vol)?;
                let failed = |e: qemu_img::QemuImgError| Error::VolumeMetadataWrite {
                    vol: *vol,
                    reason: e.to_string(),
                };
                let info = qemu_img::info(&path, InfoOptions::format("qcow2")).map_err(failed)?;
                if info.bitmap_names().contains(name) {
                    qemu_img::bitmap(&path, name, qemu_img::BitmapOp::Remove).map_err(failed)?;
                }
                Ok(())
            }
            Step::Rebase {
                sd,
                img,
                vol,
                backing,
                backing_format,
            } => {
                let path = self.domain(*sd)?.data_file(*img, *vol)?;
                qemu_img::rebase_unsafe(&path, &backing.to_string(), backing_format.qemu_name())
                    .map_err(|e| Error::VolumeMetadataWrite {
                        vol: *vol,
                        reason: e.to_string(),
                    })
            }
            Step::RemoveImageIfEmpty { sd, img } => {
                let dom = self.domain(*sd)?;
                match super::volumes::own_volumes(&dom, *img) {
                    Ok(v) if v.is_empty() => super::volumes::remove_image_dir(&dom, *img),
                    Ok(_) | Err(Error::ImageNotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn is_committed(&self, check: &Commit) -> Result<bool> {
        let (sd, path, want) = match check {
            Commit::Exists { sd, path } => (sd, path, true),
            Commit::Missing { sd, path } => (sd, path, false),
            Commit::VolumeMetadataIs {
                sd,
                img,
                vol,
                contents,
            } => {
                let p = self.domain(*sd)?.meta_path(*img, *vol);
                return Ok(fs::read(p).is_ok_and(|b| b == contents.as_bytes()));
            }
        };
        let p = domain_path(&*self.domain(*sd)?, path)?;
        Ok(fs::symlink_metadata(p).is_ok() == want)
    }

    /// Removes crash leftovers from a domain: images being deleted, files
    /// being written (`*.new`), volume files without metadata, empty images;
    /// and repairs parent roles a crash left inconsistent.
    pub fn collect_garbage(&self, dom: &FileDomain) -> Result<GcReport> {
        let mut report = GcReport::default();
        let images = dom.images_dir();
        let entries =
            fs::read_dir(&images).map_err(|source| Error::DomainAccess { sd: dom.sd, source })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            match parse_uuid(&name) {
                Some(img) => self.collect_image(dom, img, &mut report)?,
                None if name.starts_with(REMOVED_IMAGE_PREFIX) => {
                    fs::remove_dir_all(&path).ctx("cannot remove", &path)?;
                    report.removed.push(format!("images/{name}"));
                }
                None => {
                    tracing::warn!(sd = %dom.sd, entry = %name, "unexpected entry in images/ left alone")
                }
            }
        }
        if !report.is_empty() {
            durable::fsync_dir(&images).ctx("cannot sync", &images)?;
            tracing::info!(sd = %dom.sd, removed = ?report.removed, repaired = ?report.repaired, "garbage collected");
        }
        Ok(report)
    }

    fn collect_image(&self, dom: &FileDomain, img: Uuid, report: &mut GcReport) -> Result<()> {
        let dir = dom.image_dir(img);
        let vols = dom.volumes(img)?;
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
        // Only linked templates left: the rest of an interrupted clone.
        let own = super::volumes::own_volumes(dom, img)?;
        if own.is_empty() {
            super::volumes::remove_image_dir(dom, img)?;
            report.removed.push(format!("images/{img}/"));
            return Ok(());
        }
        if removed_any {
            durable::fsync_dir(&dir).ctx("cannot sync", &dir)?;
        }
        let version = dom.manifest()?.version;
        for &vol in &own {
            let Ok(mut md) = dom.read_volume(img, vol) else {
                continue;
            };
            let has_children = !children_of(dom, img, vol)?.is_empty();
            let fixed = match (md.role, has_children) {
                (VolumeRole::Internal, false) => Some(VolumeRole::Leaf),
                (VolumeRole::Leaf, true) => Some(VolumeRole::Internal),
                _ => None,
            };
            if let Some(role) = fixed {
                md.role = role;
                dom.write_volume(img, vol, &md, version)?;
                report
                    .repaired
                    .push(format!("images/{img}/{vol}: now {role}"));
            }
        }
        Ok(())
    }
}

/// Zeroes and/or discards one file's data, unless the file is also linked
/// from elsewhere (a template shared with clones keeps its data).
fn scrub_file(path: &Path, zero: bool, discard: bool) -> Result<()> {
    use crate::primitives::nofollow::{self, Access};
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

/// The engine as the task manager's recovery step runner. Holds the engine
/// weakly: the engine owns the task manager.
pub struct EngineRunner(pub std::sync::Weak<Engine>);

impl StepRunner for EngineRunner {
    fn run(&self, step: &Step) -> Result<()> {
        self.engine()?.run_step(step)
    }

    fn committed(&self, check: &Commit) -> Result<bool> {
        self.engine()?.is_committed(check)
    }
}

impl EngineRunner {
    fn engine(&self) -> Result<std::sync::Arc<Engine>> {
        self.0
            .upgrade()
            .ok_or_else(|| Error::AddTask("the engine is shutting down".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_paths_stay_inside_the_domain() {
        let dom_dir = tempfile::tempdir().unwrap();
        let sd = Uuid::new_v4();
        let root = dom_dir.path().join(sd.to_string());
        std::fs::create_dir_all(root.join("dom_md")).unwrap();
        let md = crate::format::manifest::initial_metadata(&crate::format::manifest::NewDomain {
            sd,
            name: "t".into(),
            class: crate::types::DomainClass::Data,
            domain_type: crate::types::DomainType::LocalFs,
            version: 5,
            block_size: 512,
            alignment: 1 << 20,
            remote_path: "/x".into(),
        });
        std::fs::write(root.join("dom_md/metadata"), md.render()).unwrap();
        let dom = FileDomain::open(root).unwrap();
        assert!(domain_path(&dom, "images/a/b").is_ok());
        for bad in ["../x", "/etc/passwd", "images/../../x", "", "./x"] {
            assert!(domain_path(&dom, bad).is_err(), "{bad}");
        }
        // A directory link planted on storage: a record naming a file
        // below it would make recovery unlink a host file.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), b"host").unwrap();
        std::fs::create_dir(dom.root().join("images")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dom.root().join("images/evil")).unwrap();
        assert!(matches!(
            domain_path(&dom, "images/evil/victim"),
            Err(Error::UnsafeStorage(_))
        ));
        assert!(
            domain_path(&dom, "images/evil").is_ok(),
            "the link itself may be removed"
        );
    }
}
