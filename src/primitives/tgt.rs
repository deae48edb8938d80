//! A small wrapper of `tgtadm`, the control tool of the Linux SCSI target
//! daemon (tgtd): iSCSI targets, one LUN each, reached only with a CHAP
//! account of their own and from the initiator named.

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

fn tgtadm(args: &[&str]) -> io::Result<String> {
    let out = Command::new("tgtadm")
        .args(["--lld", "iscsi"])
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "tgtadm {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The targets tgtd serves: (tid, iqn).
pub fn targets() -> io::Result<Vec<(u32, String)>> {
    let out = tgtadm(&["--op", "show", "--mode", "target"])?;
    Ok(parse_targets(&out))
}

fn parse_targets(show: &str) -> Vec<(u32, String)> {
    show.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Target ")?;
            let (tid, iqn) = rest.split_once(": ")?;
            Some((tid.parse().ok()?, iqn.trim().to_string()))
        })
        .collect()
}

/// What a consumer needs to log in.
#[derive(Debug, Clone)]
pub struct Export<'a> {
    pub iqn: &'a str,
    pub device: &'a Path,
    pub initiator: &'a str,
    pub user: &'a str,
    pub password: &'a str,
}

/// Serves `device` as LUN 1 of a new target; returns its tid. Undone
/// (target and account removed) if a step fails.
pub fn add(e: &Export<'_>) -> io::Result<u32> {
    let tid = targets()?.iter().map(|(t, _)| *t).max().unwrap_or(0) + 1;
    let tid_s = tid.to_string();
    tgtadm(&[
        "--op", "new", "--mode", "target", "--tid", &tid_s, "-T", e.iqn,
    ])?;
    let device = e
        .device
        .to_str()
        .ok_or_else(|| io::Error::other("a device path that is not UTF-8"))?;
    let rest = (|| {
        tgtadm(&[
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            &tid_s,
            "--lun",
            "1",
            "-b",
            device,
        ])?;
        tgtadm(&[
            "--op",
            "new",
            "--mode",
            "account",
            "--user",
            e.user,
            "--password",
            e.password,
        ])?;
        tgtadm(&[
            "--op", "bind", "--mode", "account", "--tid", &tid_s, "--user", e.user,
        ])?;
        // By initiator name (-Q) only: an address rule (-I) lets any name in.
        tgtadm(&[
            "--op",
            "bind",
            "--mode",
            "target",
            "--tid",
            &tid_s,
            "-Q",
            e.initiator,
        ])
    })();
    if let Err(err) = rest {
        let _ = remove(tid, e.user);
        return Err(err);
    }
    Ok(tid)
}

/// Removes a target (its sessions cut) and its account.
pub fn remove(tid: u32, user: &str) -> io::Result<()> {
    let tid_s = tid.to_string();
    let gone = match tgtadm(&[
        "--op", "delete", "--force", "--mode", "target", "--tid", &tid_s,
    ]) {
        Ok(_) => Ok(()),
        Err(_) if !targets()?.iter().any(|(t, _)| *t == tid) => Ok(()),
        Err(e) => Err(e),
    };
    // The account may be gone already (a repeated teardown).
    let _ = tgtadm(&["--op", "delete", "--mode", "account", "--user", user]);
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_read_from_tgtadm_show() {
        let show = "Target 1: iqn.2026-12.org.cairn:volume-a\n    System information:\n        Driver: iscsi\nTarget 12: iqn.x:y\n";
        assert_eq!(
            parse_targets(show),
            [
                (1, "iqn.2026-12.org.cairn:volume-a".to_string()),
                (12, "iqn.x:y".to_string())
            ]
        );
    }
}
