//! The one error type of the engine and its backends.
//!
//! Variants name what went wrong in storage terms, with the context a user
//! needs; `api::errors` maps each to its VDSM error code exactly once.

use std::io;

use crate::types::Uuid;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter { name: &'static str, reason: String },

    #[error("storage domain {0} does not exist (is its storage connected?)")]
    DomainNotFound(Uuid),
    #[error("storage domain {0} already exists")]
    DomainAlreadyExists(Uuid),
    #[error("cannot create storage domain {sd}: {reason}")]
    DomainCreation { sd: Uuid, reason: String },
    #[error("storage domain {sd} metadata is unusable: {reason}")]
    DomainMetadata { sd: Uuid, reason: String },
    #[error("storage domain {sd} has a broken metadata seal: {reason}")]
    DomainSealBroken { sd: Uuid, reason: String },
    #[error("storage domain version {0} is not supported (supported: {1})")]
    UnsupportedDomainVersion(u32, &'static str),
    #[error("illegal remote path {0:?}: {1}")]
    IllegalRemotePath(String, &'static str),
    #[error("storage domain type {0} is not supported here: {1}")]
    DomainTypeNotSupported(String, &'static str),
    #[error("storage domain {sd} is not accessible: {source}")]
    DomainAccess {
        sd: Uuid,
        #[source]
        source: io::Error,
    },
    #[error("storage domain {sd} is attached to pool {pool}; detach it first or pass autoDetach")]
    DomainAttached { sd: Uuid, pool: Uuid },
    #[error("storage domain {sd} is not in pool {pool}")]
    DomainNotInPool { sd: Uuid, pool: Uuid },
    #[error("storage domain {sd} cannot be used here: {reason}")]
    DomainClass { sd: Uuid, reason: &'static str },
    #[error("storage domain {sd} is busy: {reason}")]
    DomainBusy { sd: Uuid, reason: String },
    #[error("no space left on storage domain {sd}")]
    NoSpace { sd: Uuid },

    #[error("{kind} {id} could not be found")]
    CatalogNotFound { kind: &'static str, id: String },
    #[error("Invalid {kind}: {reason}")]
    CatalogInvalid { kind: &'static str, reason: String },
    #[error("{0}")]
    CatalogConflict(String),
    #[error("{0}")]
    CatalogOverQuota(String),
    #[error("the catalog is not served here: {0}")]
    CatalogUnavailable(String),

    #[error("storage pool {0} is not connected on this host")]
    PoolNotConnected(Uuid),
    #[error("this host is already connected to pool {0}")]
    PoolAlreadyConnected(Uuid),
    #[error("cannot create storage pool {pool}: {reason}")]
    PoolCreation { pool: Uuid, reason: String },
    #[error("wrong master domain or version for pool {pool}: {reason}")]
    PoolWrongMaster { pool: Uuid, reason: String },
    #[error("master domain of pool {0} was not found")]
    PoolMasterNotFound(Uuid),
    #[error("pool description is {0} characters, more than 50")]
    PoolDescriptionTooLong(usize),
    #[error("pool {pool} has a task in progress ({task}); wait for it or stop it")]
    TaskInProgress { pool: Uuid, task: Uuid },
    #[error("storage domain {0} is not active in its pool")]
    DomainNotActive(Uuid),
    #[error("this host is not the SPM of pool {0}")]
    NotSpm(Uuid),
    #[error("cannot become SPM of pool {pool}: {reason}")]
    SpmStart { pool: Uuid, reason: String },
    #[error("cannot acquire the SPM lease of pool {pool}: {reason}")]
    AcquireLease { pool: Uuid, reason: String },

    #[error("volume {0} does not exist")]
    VolumeNotFound(Uuid),
    #[error("volume {0} already exists")]
    VolumeAlreadyExists(Uuid),
    #[error("image {img} does not exist in domain {sd}")]
    ImageNotFound { img: Uuid, sd: Uuid },
    #[error("volume {vol} has children: {children}")]
    VolumeHasChildren { vol: Uuid, children: String },
    #[error("volume {0} is a shared template; pass force to delete it")]
    CannotDeleteShared(Uuid),
    #[error("template {vol} is used by {users} other image(s); delete those first")]
    TemplateInUse { vol: Uuid, users: u64 },
    #[error("cannot snapshot illegal volume {0}")]
    SnapshotOfIllegal(Uuid),
    #[error("volume {0} is illegal and cannot be prepared")]
    PrepareIllegal(Uuid),
    #[error("image {img} chain is broken: {reason}")]
    BrokenChain { img: Uuid, reason: String },
    #[error("cannot create volume {vol}: {reason}")]
    VolumeCreation { vol: Uuid, reason: String },
    #[error("metadata of volume {vol} is unreadable: {reason}")]
    VolumeMetadataRead { vol: Uuid, reason: String },
    #[error("cannot write metadata of volume {vol}: {reason}")]
    VolumeMetadataWrite { vol: Uuid, reason: String },

    #[error("task {0} is unknown")]
    UnknownTask(Uuid),
    #[error("task {0} is not finished")]
    TaskNotFinished(Uuid),
    #[error("task {0} was aborted")]
    TaskAborted(Uuid),
    #[error("cannot queue task: {0}")]
    AddTask(String),
    #[error("task {task} cannot be reverted: {reason}")]
    NotRevertible { task: Uuid, reason: String },
    #[error("job {0} already exists")]
    JobExists(Uuid),
    #[error("job {0} does not exist")]
    NoSuchJob(Uuid),
    #[error("cannot acquire the lease of volume {vol}: {reason}")]
    VolumeLease { vol: Uuid, reason: String },
    #[error("image ticket {id}: {reason}")]
    Ticket { id: Uuid, reason: String },
    #[error("volume {vol} is busy: {reason}")]
    VolumeBusy { vol: Uuid, reason: String },
    #[error("destination volume {vol} is {size} bytes; the source needs {needed}")]
    DestinationTooSmall { vol: Uuid, size: u64, needed: u64 },
    #[error("volume {vol} is {current} bytes; it cannot be resized to {requested}")]
    ResizeSmaller {
        vol: Uuid,
        current: u64,
        requested: u64,
    },
    #[error("volume {vol} does not grow on demand: {reason}")]
    NotThin { vol: Uuid, reason: &'static str },
    #[error("volume {vol} may hold at most {cap} bytes (1.1 times its virtual size); {requested} were asked for")]
    ExtendBeyondCap { vol: Uuid, requested: u64, cap: u64 },
    #[error("volume group of domain {sd} has {free} bytes free; volume {vol} needs {needed} more")]
    VolumeGroupFull {
        sd: Uuid,
        vol: Uuid,
        needed: u64,
        free: u64,
    },
    #[error("cannot extend volume {vol}: {reason}")]
    Extend { vol: Uuid, reason: String },
    #[error("volume {vol} has generation {actual}, not {expected}")]
    GenerationMismatch {
        vol: Uuid,
        expected: u32,
        actual: u32,
    },

    #[error("timed out waiting for {0}")]
    ResourceTimeout(String),

    #[error("storage type {0} connections are not supported: {1}")]
    StorageTypeNotSupported(String, &'static str),
    #[error("cannot connect storage {connection}: {reason}")]
    Connection { connection: String, reason: String },
    #[error("mount failed: {0}")]
    Mount(String),
    #[error(transparent)]
    Iscsi(#[from] crate::primitives::iscsi::IscsiError),
    /// An lvm command failed.
    #[error("cannot {action}: {source}")]
    Lvm {
        action: LvmAction,
        #[source]
        source: crate::primitives::lvm::LvmError,
    },
    #[error("volume group {0} does not exist on the connected LUNs")]
    VolumeGroupNotFound(String),
    #[error("volume group {vg} already belongs to a storage domain")]
    VolumeGroupHasDomain { vg: String },
    #[error("volume group {vg} cannot hold a domain: {reason}")]
    VolumeGroupUnusable { vg: String, reason: String },
    #[error("LUN {guid} cannot be used: {reason}")]
    LunUnusable { guid: String, reason: String },
    #[error("LUN {guid} has {size} B blocks; block domains need {need} B")]
    LunBlockSize { guid: String, size: u32, need: u32 },
    #[error("LUN {guid} is not a physical volume of volume group {vg}")]
    PhysicalVolumeNotFound { guid: String, vg: String },
    #[error("volume group {vg} cannot be removed: {reason}")]
    VolumeGroupInUse { vg: String, reason: String },
    #[error("{format} {allocation} volumes cannot be made on block storage")]
    IncorrectFormat {
        format: crate::types::VolumeFormat,
        allocation: crate::types::VolumeAllocation,
    },
    #[error("logical volume of volume {vol} is missing: {reason}")]
    LogicalVolumeMissing { vol: Uuid, reason: String },

    /// Storage content that would lead cairnd outside the storage: a link,
    /// a device node, a FIFO where a volume or directory should be.
    #[error("refusing unsafe storage content: {0}")]
    UnsafeStorage(String),

    /// A failure restored from a persisted task record.
    #[error("{message}")]
    Recorded { code: i64, message: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name,
            reason: reason.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn io_path(what: &str, path: &std::path::Path, source: io::Error) -> Self {
        Error::Io {
            context: format!("{what} {}", path.display()),
            source,
        }
    }

    /// VDSM's error code (`vdsm.storage.exception`): the one mapping, used
    /// on the wire and in persisted task results.
    pub fn code(&self) -> i64 {
        if self.is_no_space() {
            return 397; // NoSpaceLeftOnDomain
        }
        match self {
            Error::InvalidParameter { .. } => 1000,
            Error::DomainNotFound(_) => 358,
            Error::DomainAlreadyExists(_) => 365,
            Error::DomainCreation { .. } => 351,
            Error::DomainMetadata { .. } => 364,
            Error::DomainSealBroken { .. } => 752,
            Error::UnsupportedDomainVersion(..) => 394,
            Error::IllegalRemotePath(..) => 390,
            Error::DomainTypeNotSupported(..) => 372,
            Error::DomainAccess { .. } => 379,
            Error::DomainAttached { .. } => 391,
            Error::DomainNotInPool { .. } => 353,
            Error::DomainClass { .. } => 386,
            Error::NoSpace { .. } => 397,
            Error::DomainBusy { .. } => 350,
            // Cairn's catalog (served by the Cinder face, which maps
            // these to HTTP statuses): VDSM's nearest codes.
            Error::CatalogNotFound { .. } => 100,
            Error::CatalogInvalid { .. } => 1000,
            Error::CatalogConflict(_) => 100,
            Error::CatalogOverQuota(_) => 1000,
            Error::CatalogUnavailable(_) => 654,
            Error::PoolNotConnected(_) => 309,
            Error::PoolAlreadyConnected(_) => 323,
            Error::PoolCreation { .. } => 301,
            Error::PoolWrongMaster { .. } => 324,
            Error::PoolMasterNotFound(_) => 304,
            Error::PoolDescriptionTooLong(_) => 327,
            Error::NotSpm(_) => 654,
            Error::TaskInProgress { .. } => 406,
            Error::DomainNotActive(_) => 369,
            Error::SpmStart { .. } => 650,
            Error::AcquireLease { .. } => 651,
            Error::VolumeNotFound(_) => 201,
            Error::VolumeAlreadyExists(_) => 212,
            Error::ImageNotFound { .. } => 268,
            Error::VolumeHasChildren { .. } => 204,
            Error::CannotDeleteShared(_) | Error::TemplateInUse { .. } => 223,
            Error::SnapshotOfIllegal(_) => 226,
            Error::PrepareIllegal(_) => 227,
            Error::BrokenChain { .. } => 262,
            Error::VolumeCreation { .. } => 205,
            Error::VolumeMetadataRead { .. } => 207,
            Error::VolumeMetadataWrite { .. } => 208,
            Error::UnknownTask(_) => 401,
            Error::TaskNotFinished(_) => 403,
            Error::TaskAborted(_) => 411,
            Error::AddTask(_) => 405,
            Error::JobExists(_) => 69,
            Error::NotRevertible { .. } => 410,
            Error::NoSuchJob(_) => 66,
            Error::GenerationMismatch { .. } => 911,
            Error::NotThin { .. } => 233,
            Error::ExtendBeyondCap { .. } => 232,
            Error::VolumeGroupFull { .. } => 504,
            Error::Extend { .. } => 554,
            Error::ResizeSmaller { .. } => 232,
            Error::VolumeBusy { .. } => 203,
            Error::Ticket { .. } => 482,
            Error::VolumeLease { .. } => 651,
            Error::DestinationTooSmall { .. } => 79,
            Error::ResourceTimeout(_) => 851,
            Error::StorageTypeNotSupported(..) => 468,
            Error::Connection { .. } => 451,
            Error::Mount(_) => 477,
            Error::Iscsi(e) => {
                use crate::primitives::iscsi::IscsiError as I;
                match e {
                    I::Invalid { .. } => 1000,
                    I::AddNode { .. } => 460,
                    I::Auth(_) => 461,
                    I::Login { .. } => 464,
                    I::Setup(_) => 465,
                    I::Logout { .. } => 474,
                    I::LoginAuth { .. } => 476,
                    I::Iface { .. } => 473,
                }
            }
            Error::Lvm { action, .. } => action.code(),
            Error::VolumeGroupNotFound(_) => 506,
            Error::VolumeGroupHasDomain { .. } => 515,
            Error::VolumeGroupUnusable { .. } => 509,
            Error::LunUnusable { .. } => 606,
            Error::LunBlockSize { .. } => 518,
            Error::PhysicalVolumeNotFound { .. } => 619,
            Error::VolumeGroupInUse { .. } => 508,
            Error::IncorrectFormat { .. } => 202,
            Error::LogicalVolumeMissing { .. } => 610,
            Error::UnsafeStorage(_) => 254,
            Error::Io { .. } => 100,
            Error::Recorded { code, .. } => *code,
        }
    }

    /// True if the root cause is a full file system.
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::NoSpace { .. } => true,
            Error::Io { source, .. } | Error::DomainAccess { source, .. } => is_enospc(source),
            Error::VolumeCreation { reason, .. } => reason.contains("No space left on device"),
            _ => false,
        }
    }
}

/// What an lvm command was doing, for the message and VDSM's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LvmAction {
    CreatePv,
    CreateVg,
    ExtendVg,
    RemoveVg,
    ResizePv,
    ReadVg,
    ReplaceVgTags,
    CreateLv,
    RemoveLv,
    ActivateLv,
    DeactivateLv,
    ExtendLv,
    RefreshLv,
    ReplaceLvTags,
    ReadLvs,
}

impl LvmAction {
    /// VDSM's code for the same failure.
    pub fn code(self) -> i64 {
        match self {
            LvmAction::CreatePv => 601,
            LvmAction::CreateVg => 502,
            LvmAction::ExtendVg => 503,
            LvmAction::RemoveVg => 508,
            LvmAction::ResizePv => 615,
            LvmAction::ReadVg => 513,
            LvmAction::ReplaceVgTags => 516,
            LvmAction::CreateLv => 550,
            LvmAction::RemoveLv => 573,
            LvmAction::ActivateLv => 570,
            LvmAction::DeactivateLv => 552,
            LvmAction::ExtendLv => 554,
            LvmAction::RefreshLv => 556,
            LvmAction::ReplaceLvTags => 572,
            LvmAction::ReadLvs => 569,
        }
    }
}

impl std::fmt::Display for LvmAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LvmAction::CreatePv => "initialize the LUN as a physical volume",
            LvmAction::CreateVg => "create the volume group",
            LvmAction::ExtendVg => "extend the volume group",
            LvmAction::RemoveVg => "remove the volume group",
            LvmAction::ResizePv => "resize the physical volume",
            LvmAction::ReadVg => "read the volume group",
            LvmAction::ReplaceVgTags => "write the domain metadata (VG tags)",
            LvmAction::CreateLv => "create the logical volume",
            LvmAction::RemoveLv => "remove the logical volume",
            LvmAction::ActivateLv => "activate logical volumes",
            LvmAction::DeactivateLv => "deactivate logical volumes",
            LvmAction::ExtendLv => "extend the logical volume",
            LvmAction::RefreshLv => "refresh the logical volume",
            LvmAction::ReplaceLvTags => "change logical volume tags",
            LvmAction::ReadLvs => "list logical volumes",
        })
    }
}

pub fn is_enospc(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
        || e.raw_os_error() == Some(rustix::io::Errno::DQUOT.raw_os_error())
}

/// A full file system is `NoSpace` on domain `sd`; any other I/O error is
/// what `other` makes of it.
pub fn no_space_or(sd: Uuid, e: io::Error, other: impl FnOnce(io::Error) -> Error) -> Error {
    if is_enospc(&e) {
        Error::NoSpace { sd }
    } else {
        other(e)
    }
}

/// Extension for attaching a path to I/O errors.
pub trait IoContext<T> {
    fn ctx(self, what: &str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: &str, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io_path(what, path, e))
    }
}
