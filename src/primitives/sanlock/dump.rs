//! Reading lease areas as they are on storage, with `sanlock direct dump`
//! (no daemon involved): what `StorageDomain.dump full` reports.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{Geometry, SanlockError};

/// One lease record: a host id slot of a lockspace, or a resource lease
/// (which also has a version).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseRecord {
    pub offset: u64,
    pub lockspace: String,
    pub resource: String,
    pub timestamp: u64,
    pub own: u64,
    pub gen: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lver: Option<u64>,
}

/// The initialized leases in the first `size` bytes of `path`. Runs in a
/// child process, so a hung mount costs at most `timeout`.
pub fn direct_dump(
    path: &Path,
    size: u64,
    geometry: Geometry,
    timeout: Duration,
) -> Result<Vec<LeaseRecord>, SanlockError> {
    let fail = |message: String| SanlockError {
        op: "direct dump",
        rv: -5,
        message,
    };
    let (Some(dir), Some(file)) = (path.parent(), path.file_name()) else {
        return Err(fail(format!("{} is not a file path", path.display())));
    };
    crate::primitives::nofollow::check_lease_target(path).map_err(|e| fail(e.to_string()))?;
    // sanlock splits its argument at colons, which mount paths may hold:
    // name the file relative to its directory.
    let mut cmd = Command::new("sanlock");
    crate::primitives::child::die_with_parent(&mut cmd);
    cmd.current_dir(dir)
        .args(["direct", "dump"])
        .arg(format!("{}:0:{size}", file.to_string_lossy()))
        .args(["-Z", &geometry.sector.to_string()])
        .args(["-A", &format!("{}M", geometry.align >> 20)]);
    let out = crate::primitives::child::output_within(cmd, timeout)
        .map_err(|e| fail(format!("cannot run sanlock: {e}")))?
        .ok_or_else(|| {
            fail(format!(
                "reading {} took longer than {timeout:?}",
                path.display()
            ))
        })?;
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses the dump's table (a heading line, then one line per lease).
fn parse(text: &str) -> Vec<LeaseRecord> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| f.get(i)?.parse::<u64>().ok();
            Some(LeaseRecord {
                offset: num(0)?,
                lockspace: f.get(1)?.to_string(),
                resource: f.get(2)?.to_string(),
                timestamp: num(3)?,
                own: num(4)?,
                gen: num(5)?,
                lver: num(6),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lockspace_and_resource_tables() {
        let text = "  offset                            lockspace                                         resource  timestamp  own  gen lver
00000000 3bbc2a9b-8d7a-4e4e-9a8f-0f0e1c2d3e4f 7c5e1c2a-4a3c-4b51-9b5e-1d2e3f4a5b6c.host-a 0000012345 0001 0002
01048576 3bbc2a9b-8d7a-4e4e-9a8f-0f0e1c2d3e4f SDM 0000000000 0000 0000 3
garbage line
";
        let r = parse(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].offset, 0);
        assert_eq!(
            (r[0].timestamp, r[0].own, r[0].gen, r[0].lver),
            (12345, 1, 2, None)
        );
        assert_eq!(r[1].resource, "SDM");
        assert_eq!((r[1].offset, r[1].lver), (1 << 20, Some(3)));
    }
}
