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

/// VDSM's code for an engine error.
pub fn vdsm_code(e: &Error) -> i64 {
    e.code()
}
