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

/// The longest error message sent or logged: messages quote bad input,
/// and a caller must not make cairnd echo (or log) megabytes.
pub const MAX_MESSAGE: usize = 1024;

impl ApiError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: cap(message.into(), MAX_MESSAGE),
        }
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        ApiError::new(INVALID_PARAMS, message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::new(vdsm_code(&e), e.to_string())
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), saying so.
pub fn cap(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let cut = text.len();
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!("... ({} of {cut} bytes not shown)", cut - end));
    text
}

/// VDSM's code for an engine error.
pub fn vdsm_code(e: &Error) -> i64 {
    e.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_capped() {
        let long = format!("bad value {}", "é".repeat(1 << 19));
        let e = ApiError::new(INVALID_PARAMETER, long);
        assert!(e.message.len() < MAX_MESSAGE + 64, "{}", e.message.len());
        assert!(e.message.ends_with("bytes not shown)"));
        assert_eq!(ApiError::new(1, "short").message, "short");
    }
}
