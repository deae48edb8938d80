//! Volume files of a file domain: `<vol>` (data), `<vol>.meta`, `<vol>.lease`.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::super::{DataSpec, Domain, Part, ScannedVolume};
use crate::error::{Error, IoContext, Result};
use crate::format::volume_md::{metadata_bytes, VolumeMetadata};
use crate::primitives::nofollow::{self, Access};
use crate::primitives::probe::{self, ImageHeader};
use crate::primitives::{durable, qcow2_create, qemu_img};
use crate::types::{parse_uuid, Uuid, VolumeAllocation, VolumeFormat};

use super::FileDomain;

pub(super) const META_SUFFIX: &str = ".meta";
pub(super) const LEASE_SUFFIX: &str = ".lease";
pub(super) const VOLUME_MODE: u32 = 0o660;

/// A volume's three files: data, metadata, lease.
pub(super) fn file_names(vol: Uuid) -> [String; 3] {
    [
        vol.to_string(),
        format!("{vol}{META_SUFFIX}"),
        format!("{vol}{LEASE_SUFFIX}"),
    ]
}

impl FileDomain {
    pub(super) fn volume_path(&self, img: Uuid, vol: Uuid) -> PathBuf {
        self.image_dir(img).join(vol.to_string())
    }

    pub(super) fn part_path(&self, img: Uuid, vol: Uuid, part: Part) -> PathBuf {
        let suffix = match part {
            Part::Data => "",
            Part::Metadata => META_SUFFIX,
            Part::Lease => LEASE_SUFFIX,
        };
        self.image_dir(img).join(format!("{vol}{suffix}"))
    }

    /// The volume's data file, checked to be a regular file reached
    /// without links, for programs that open it by name.
    pub(super) fn data_file(&self, img: Uuid, vol: Uuid) -> Result<PathBuf> {
        let path = self.volume_path(img, vol);
        nofollow::check_file(&path).map_err(|e| unsafe_or(e, vol, &path))?;
        Ok(path)
    }

    pub(super) fn meta_path(&self, img: Uuid, vol: Uuid) -> PathBuf {
        self.part_path(img, vol, Part::Metadata)
    }

    /// Volumes of an image: those with a metadata file.
    pub(super) fn list_volumes(&self, img: Uuid) -> Result<Vec<Uuid>> {
        let dir = self.image_dir(img);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::ImageNotFound { img, sd: self.sd })
            }
            Err(source) => {
                return Err(Error::DomainAccess {
                    sd: self.sd,
                    source,
                })
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::DomainAccess {
                sd: self.sd,
                source,
            })?;
            let name = entry.file_name();
            if let Some(vol) = name
                .to_str()
                .and_then(|n| n.strip_suffix(META_SUFFIX))
                .and_then(parse_uuid)
            {
                out.push(vol);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Volumes that belong to `img`: templates linked into it not counted.
    pub(super) fn own_volumes(&self, img: Uuid) -> Result<Vec<Uuid>> {
        let mut out = Vec::new();
        for vol in self.list_volumes(img)? {
            match self.read_volume_file(img, vol) {
                Ok(md) if md.image != img => {}
                _ => out.push(vol),
            }
        }
        Ok(out)
    }

    /// Removes an image directory, whatever it holds.
    pub(super) fn remove_image_dir(&self, img: Uuid) -> Result<()> {
        let dir = self.image_dir(img);
        fs::remove_dir_all(&dir).ctx("cannot remove", &dir)?;
        let images = self.images_dir();
        durable::fsync_dir(&images).ctx("cannot sync", &images)
    }

    pub(super) fn read_volume_file(&self, img: Uuid, vol: Uuid) -> Result<VolumeMetadata> {
        let path = self.meta_path(img, vol);
        let read = nofollow::open(&path, Access::READ).and_then(|mut f| {
            let mut b = Vec::new();
            io::Read::read_to_end(&mut f, &mut b).map(|_| b)
        });
        let bytes = match read {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::VolumeNotFound(vol))
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(Error::UnsafeStorage(e.to_string()))
            }
            Err(e) => {
                return Err(Error::VolumeMetadataRead {
                    vol,
                    reason: e.to_string(),
                })
            }
        };
        VolumeMetadata::parse(&bytes).map_err(|e| Error::VolumeMetadataRead {
            vol,
            reason: e.to_string(),
        })
    }

    /// Writes the metadata of a new volume; fails if it exists.
    pub(super) fn create_volume_metadata(
        &self,
        img: Uuid,
        vol: Uuid,
        md: &VolumeMetadata,
        version: u32,
    ) -> Result<()> {
        let bytes = metadata_bytes(vol, md, version)?;
        durable::create_new_linked(&self.meta_path(img, vol), &bytes, VOLUME_MODE).map_err(|e| {
            self.io_failure(e, |e| match e.kind() {
                io::ErrorKind::AlreadyExists => Error::VolumeAlreadyExists(vol),
                _ => Error::VolumeMetadataWrite {
                    vol,
                    reason: e.to_string(),
                },
            })
        })
    }

    /// Replaces a volume's metadata crash-safely.
    pub(super) fn write_volume_file(
        &self,
        img: Uuid,
        vol: Uuid,
        md: &VolumeMetadata,
        version: u32,
    ) -> Result<()> {
        let bytes = metadata_bytes(vol, md, version)?;
        durable::write_atomic(&self.meta_path(img, vol), &bytes, VOLUME_MODE).map_err(|e| {
            self.io_failure(e, |e| Error::VolumeMetadataWrite {
                vol,
                reason: e.to_string(),
            })
        })
    }

    /// Creates the data file, unsynced (`sync_volume` syncs it with the
    /// lease). The name is claimed with O_EXCL first so two creators can
    /// never share a file.
    pub(super) fn create_volume_data(&self, img: Uuid, vol: Uuid, spec: &DataSpec) -> Result<()> {
        let path = self.volume_path(img, vol);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(VOLUME_MODE)
            .open(&path)
            .map_err(|e| {
                self.io_failure(e, |e| match e.kind() {
                    io::ErrorKind::AlreadyExists => Error::VolumeAlreadyExists(vol),
                    _ => Error::VolumeCreation {
                        vol,
                        reason: format!("cannot create {}: {e}", path.display()),
                    },
                })
            })?;
        let fail = |e: io::Error| {
            self.io_failure(e, |e| Error::VolumeCreation {
                vol,
                reason: e.to_string(),
            })
        };
        // The parent is named relative to the image directory, as VDSM does.
        let parent = spec.parent.map(|(p, fmt)| (p.to_string(), fmt));
        let parent = parent.as_ref().map(|(p, fmt)| (p.as_str(), *fmt));
        match (spec.format, spec.allocation, parent) {
            (VolumeFormat::Raw, alloc, None) => {
                file.set_len(spec.capacity).map_err(fail)?;
                if alloc == VolumeAllocation::Preallocated && spec.capacity > 0 {
                    rustix::fs::fallocate(
                        &file,
                        rustix::fs::FallocateFlags::empty(),
                        0,
                        spec.capacity,
                    )
                    .map_err(|e| fail(e.into()))?;
                }
                Ok(())
            }
            (VolumeFormat::Raw, _, Some(_)) => Err(Error::invalid(
                "volFormat",
                "a volume with a parent must be COW",
            )),
            (VolumeFormat::Cow, VolumeAllocation::Sparse, parent) if spec.compat == "1.1" => {
                // Fresh empty qcow2 written natively: spawning qemu-img costs
                // more than the whole rest of a volume create.
                let backing = parent.map(|(name, fmt)| (name, fmt.qemu_name()));
                qcow2_create::write_empty(&file, spec.capacity, backing).map_err(fail)?;
                Ok(())
            }
            (VolumeFormat::Cow, alloc, parent) => {
                drop(file);
                let prealloc = (alloc == VolumeAllocation::Preallocated)
                    .then_some(qemu_img::Preallocation::Falloc);
                let backing = parent.map(|(name, fmt)| (name, fmt.qemu_name()));
                qemu_img::create(
                    &path,
                    &qemu_img::CreateOptions {
                        format: "qcow2",
                        size: Some(spec.capacity),
                        backing,
                        compat: Some(spec.compat),
                        preallocation: prealloc,
                    },
                )
                .map_err(|e| {
                    if e.is_no_space() {
                        Error::NoSpace { sd: self.sd }
                    } else {
                        Error::VolumeCreation {
                            vol,
                            reason: e.to_string(),
                        }
                    }
                })?;
                self.open_part(img, vol, Part::Data, Access::READ).map(drop)
            }
        }
    }

    /// Creates the volume lease file, one alignment unit (sparse),
    /// unsynced. Sanlock initialises the resource in it when the domain
    /// uses sanlock.
    pub(super) fn create_volume_lease(&self, img: Uuid, vol: Uuid, alignment: u64) -> Result<()> {
        let path = self.part_path(img, vol, Part::Lease);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(VOLUME_MODE)
            .open(&path)
            .map_err(|e| {
                self.io_failure(e, |e| Error::VolumeCreation {
                    vol,
                    reason: format!("cannot create lease {}: {e}", path.display()),
                })
            })?;
        file.set_len(alignment).ctx("cannot size", &path)
    }

    /// (apparent size, allocated bytes) of the data file.
    pub(super) fn data_sizes(&self, img: Uuid, vol: Uuid) -> Result<(u64, u64)> {
        let path = self.volume_path(img, vol);
        let st = self
            .open_part(img, vol, Part::Data, Access::READ)?
            .metadata()
            .ctx("cannot stat", &path)?;
        Ok((st.len(), st.blocks() * 512))
    }

    /// Probes the data file's header (COW volumes only: a RAW volume's first
    /// bytes are guest data and prove nothing).
    pub(super) fn probe_header(
        &self,
        img: Uuid,
        vol: Uuid,
        md: &VolumeMetadata,
    ) -> Option<std::io::Result<ImageHeader>> {
        (md.format == VolumeFormat::Cow).then(|| {
            let f = nofollow::open(&self.volume_path(img, vol), Access::READ)?;
            let len = f.metadata()?.len();
            probe::probe_open(&f, len)
        })
    }

    pub(super) fn resize_raw_file(
        &self,
        img: Uuid,
        vol: Uuid,
        size: u64,
        preallocate: bool,
    ) -> Result<()> {
        let path = self.volume_path(img, vol);
        let f = self.open_part(img, vol, Part::Data, Access::WRITE)?;
        let old = f.metadata().ctx("cannot stat", &path)?.len();
        f.set_len(size)
            .map_err(|e| self.io_failure(e, |e| Error::io_path("cannot resize", &path, e)))?;
        if preallocate && size > old {
            rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), old, size - old)
                .map_err(|e| {
                    self.io_failure(e.into(), |e| Error::io_path("cannot allocate", &path, e))
                })?;
        }
        f.sync_all()
            .map_err(|e| self.io_failure(e, |e| Error::io_path("cannot sync", &path, e)))
    }
}

/// A missing data file is a missing volume; a link or special file is
/// refused as unsafe.
pub(super) fn unsafe_or(e: io::Error, vol: Uuid, path: &Path) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound => Error::VolumeNotFound(vol),
        io::ErrorKind::InvalidData => Error::UnsafeStorage(e.to_string()),
        _ => Error::io_path("cannot open", path, e),
    }
}

impl FileDomain {
    /// Every volume of the domain with its metadata and sizes, read with
    /// directory-relative calls (one path lookup per file instead of a walk
    /// from the root) on two threads. The listing hot path.
    pub(super) fn scan_volumes(&self) -> Result<Vec<ScannedVolume>> {
        use rustix::fs::{open, Mode, OFlags};
        let access = |source: rustix::io::Errno| Error::DomainAccess {
            sd: self.sd,
            source: source.into(),
        };
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let images_fd = open(self.images_dir(), dir_flags, Mode::empty()).map_err(access)?;
        let mut images = Vec::new();
        for entry in rustix::fs::Dir::read_from(&images_fd).map_err(access)? {
            let entry = entry.map_err(access)?;
            if let Some(img) = entry.file_name().to_str().ok().and_then(parse_uuid) {
                images.push(img);
            }
        }
        images.sort();
        let half = images.len().div_ceil(2);
        let (first, second) = images.split_at(half);
        let scan_part = |part: &[Uuid]| -> Vec<ScannedVolume> {
            let mut out = Vec::new();
            for &img in part {
                // An image removed while listing is simply not listed.
                if let Ok(fd) =
                    rustix::fs::openat(&images_fd, img.to_string(), dir_flags, Mode::empty())
                {
                    scan_image(&fd, img, &mut out);
                }
            }
            out
        };
        let (mut a, b) = std::thread::scope(|s| {
            let other = s.spawn(|| scan_part(second));
            (scan_part(first), other.join().unwrap_or_default())
        });
        a.extend(b);
        Ok(a)
    }
}

fn scan_image(fd: &rustix::fd::OwnedFd, img: Uuid, out: &mut Vec<ScannedVolume>) {
    use rustix::fs::{openat, Mode, OFlags};
    let Ok(dir) = rustix::fs::Dir::read_from(fd) else {
        return;
    };
    let mut vols: Vec<Uuid> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str().ok()?.to_string();
            name.strip_suffix(META_SUFFIX).and_then(parse_uuid)
        })
        .collect();
    vols.sort();
    let mut buf = [0u8; 4096];
    for vol in vols {
        let name = vol.to_string();
        let md = openat(
            fd,
            format!("{name}{META_SUFFIX}"),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|f| rustix::io::read(&f, &mut buf))
        .map_err(|e| Error::VolumeMetadataRead {
            vol,
            reason: e.to_string(),
        })
        .and_then(|n| {
            VolumeMetadata::parse(&buf[..n]).map_err(|e| Error::VolumeMetadataRead {
                vol,
                reason: e.to_string(),
            })
        });
        let data = openat(
            fd,
            name.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .map(fs::File::from);
        let sizes = data
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|st| (st.len(), st.blocks() * 512));
        let header = match (&md, &data, sizes) {
            (Ok(m), Some(f), Some((len, _))) if m.format == VolumeFormat::Cow => {
                Some(probe::probe_open(f, len))
            }
            _ => None,
        };
        // A template linked into a clone is listed in its own image.
        if md.as_ref().is_ok_and(|m| m.image != img) {
            continue;
        }
        out.push(ScannedVolume {
            img,
            vol,
            md,
            sizes,
            header,
        });
    }
}
