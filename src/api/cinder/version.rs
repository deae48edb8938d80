//! Microversions: `OpenStack-API-Version: volume 3.N`, negotiated between
//! 3.0 and 3.71 (absent: 3.0, `latest`: 3.71), and the version documents
//! clients discover the API by.

use std::fmt;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::Fault;

pub const MIN_VERSION: &str = "3.0";
pub const MAX_VERSION: &str = "3.71";
const MAX_MINOR: u32 = 71;

/// A negotiated version: 3.minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    minor: u32,
}

impl Version {
    pub const MIN: Version = Version { minor: 0 };

    pub fn at_least(self, minor: u32) -> bool {
        self.minor >= minor
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "3.{}", self.minor)
    }
}

/// The request's version, or Cinder's 400 (malformed) or 406 (out of range).
pub fn negotiate(headers: &HeaderMap) -> Result<Version, Fault> {
    let Some(raw) = headers.get("openstack-api-version") else {
        return Ok(Version::MIN);
    };
    let raw = raw
        .to_str()
        .map_err(|_| Fault::bad("OpenStack-API-Version is not text"))?;
    let Some(item) = raw.split(',').map(str::trim).find(|i| i.contains("volume")) else {
        return Err(Fault::bad(format!(
            "OpenStack-API-Version {raw:?} names no version for the volume service"
        )));
    };
    let value = item.split_whitespace().nth(1).unwrap_or("");
    if value == "latest" {
        return Ok(Version { minor: MAX_MINOR });
    }
    let parsed = value.split_once('.').and_then(|(major, minor)| {
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars().all(|c| c.is_ascii_digit())
                && (s == "0" || !s.starts_with('0'))
        };
        (ok(major) && ok(minor) && major != "0")
            .then(|| Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?)))
            .flatten()
    });
    let Some((major, minor)) = parsed else {
        return Err(Fault::bad(format!(
            "API Version String {value:?} is of invalid format. Must be of format MajorNum.MinorNum."
        )));
    };
    if major != 3 || minor > MAX_MINOR {
        return Err(Fault::new(
            StatusCode::NOT_ACCEPTABLE,
            format!("Version {value} is not supported by the API. Minimum is {MIN_VERSION} and maximum is {MAX_VERSION}."),
        ));
    }
    Ok(Version { minor })
}

/// The version document (`GET /` and `GET /v3/`).
pub fn document(base: &str) -> Value {
    json!({"versions": [{
        "id": "v3.0",
        "status": "CURRENT",
        "version": MAX_VERSION,
        "min_version": MIN_VERSION,
        "updated": "2023-08-31T00:00:00Z",
        "links": [
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
            {"rel": "self", "href": format!("{base}/v3/")},
        ],
        "media-types": [{
            "base": "application/json",
            "type": "application/vnd.openstack.volume+json;version=3",
        }],
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(v: &str) -> Result<Version, Fault> {
        let mut h = HeaderMap::new();
        h.insert("openstack-api-version", v.parse().unwrap());
        negotiate(&h)
    }

    #[test]
    fn versions_negotiate_as_cinder_does() {
        assert_eq!(negotiate(&HeaderMap::new()).unwrap(), Version::MIN);
        assert_eq!(with("volume 3.27").unwrap().to_string(), "3.27");
        assert_eq!(with("volume latest").unwrap().to_string(), "3.71");
        assert_eq!(with("compute 2.1, volume 3.5").unwrap().to_string(), "3.5");
        assert_eq!(
            with("volume 3.72").unwrap_err().status,
            StatusCode::NOT_ACCEPTABLE
        );
        assert_eq!(
            with("volume 2.0").unwrap_err().status,
            StatusCode::NOT_ACCEPTABLE
        );
        for bad in [
            "volume 3",
            "volume 3.x",
            "volume 03.1",
            "volume 3.01",
            "volume",
            "compute 2.1",
        ] {
            assert_eq!(
                with(bad).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }
}
