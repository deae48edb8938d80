//! The one place engine errors become VDSM error codes.

use serde::Serialize;

use crate::error::Error;

/// JSON-RPC 2.0 reserved codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// VDSM's `InvalidParameterException`.
pub const INVALID_PARAMETER: i64 = 1000;

/// An error as it crosses the wire: `{"code": ..., "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    pub code: i64,
    pub message: String,
}

impl ApiError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        ApiError::new(INVALID_PARAMS, message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError {
            code: vdsm_code(&e),
            message: e.to_string(),
        }
    }
}

/// VDSM's code for an engine error (`vdsm.storage.exception`).
pub fn vdsm_code(e: &Error) -> i64 {
    if e.is_no_space() {
        return 397; // NoSpaceLeftOnDomain
    }
    match e {
        Error::InvalidParameter { .. } => INVALID_PARAMETER,
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
        Error::PoolNotConnected(_) => 309,
        Error::PoolAlreadyConnected(_) => 323,
        Error::PoolCreation { .. } => 301,
        Error::PoolWrongMaster { .. } => 324,
        Error::PoolMasterNotFound(_) => 304,
        Error::PoolDescriptionTooLong(_) => 327,
        Error::NotSpm(_) => 654,
        Error::SpmStart { .. } => 650,
        Error::AcquireLease { .. } => 651,
        Error::VolumeNotFound(_) => 201,
        Error::VolumeAlreadyExists(_) => 212,
        Error::ImageNotFound { .. } => 268,
        Error::VolumeHasChildren { .. } => 204,
        Error::CannotDeleteShared(_) => 223,
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
        Error::ResourceTimeout(_) => 851,
        Error::StorageTypeNotSupported(..) => 468,
        Error::Connection { .. } => 451,
        Error::Mount(_) => 477,
        Error::Io { .. } => 100,
    }
}
