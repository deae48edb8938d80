//! iSCSI through open-iscsi's `iscsiadm`: node records (with CHAP), logins
//! and logouts. The kernel keeps a session across cairnd restarts; the node
//! record (credentials included) lives in iscsiadm's database, so a restart
//! logs in again without cairnd keeping a password.

use std::process::Command;
use std::time::Duration;

/// A login to a dead portal takes about 120 s before it fails.
const ISCSIADM_TIMEOUT: Duration = Duration::from_secs(150);
/// iscsiadm exit codes (open-iscsi's iscsi_err.h).
const ERR_SESSION_EXISTS: i32 = 15;
const ERR_NO_OBJECTS: i32 = 21;
const ERR_LOGIN_AUTH_FAILED: i32 = 24;

/// One target portal as the host logs in to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub iqn: String,
    pub host: String,
    pub port: u16,
    pub tpgt: u32,
    pub iface: String,
}

#[derive(Clone)]
pub struct Chap {
    pub user: String,
    pub password: String,
}

/// Never shows the password (a debug log must not leak it).
impl std::fmt::Debug for Chap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chap")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IscsiError {
    #[error("invalid iSCSI {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("cannot add the iSCSI node {node}: {reason}")]
    AddNode { node: String, reason: String },
    #[error("cannot set the iSCSI node's CHAP credentials: {0}")]
    Auth(String),
    #[error("login to {node} refused: authentication failed")]
    LoginAuth { node: String },
    #[error("login to {node} failed: {reason}")]
    Login { node: String, reason: String },
    #[error("logout from {node} failed: {reason}")]
    Logout { node: String, reason: String },
    #[error("cannot run iscsiadm: {0}")]
    Setup(String),
    #[error("iSCSI interface {iface}: {reason}")]
    Iface { iface: String, reason: String },
}

fn plain(field: &'static str, text: &str, extra: &str, max: usize) -> Result<(), IscsiError> {
    let ok = !text.is_empty()
        && text.len() <= max
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
    if ok {
        Ok(())
    } else {
        Err(IscsiError::Invalid {
            field,
            reason: format!("{text:?}"),
        })
    }
}

impl Node {
    /// Checks every field: they become iscsiadm arguments.
    pub fn validate(&self) -> Result<(), IscsiError> {
        let names = ["iqn.", "eui.", "naa."];
        if !names.iter().any(|p| self.iqn.starts_with(p)) {
            return Err(IscsiError::Invalid {
                field: "iqn",
                reason: format!("{:?} is not an iqn., eui. or naa. name", self.iqn),
            });
        }
        plain("iqn", &self.iqn, ".:-", 223)?;
        plain("connection", &self.host, ".:-[]", 255)?;
        plain("ifaceName", &self.iface, "._-", 64)?;
        if self.port == 0 {
            return Err(IscsiError::Invalid {
                field: "port",
                reason: "0".into(),
            });
        }
        Ok(())
    }

    /// `host:port,tpgt`, as iscsiadm takes a portal.
    pub fn portal(&self) -> String {
        format!("{}:{},{}", self.host, self.port, self.tpgt)
    }

    /// One line naming the node: `<iqn> <portal> <iface>`.
    pub fn spec(&self) -> String {
        format!("{} {} {}", self.iqn, self.portal(), self.iface)
    }

    /// The node a [`Node::spec`] names.
    pub fn from_spec(spec: &str) -> Result<Node, IscsiError> {
        let bad = || IscsiError::Invalid {
            field: "connection",
            reason: format!("{spec:?} does not name an iSCSI node"),
        };
        let mut parts = spec.split(' ');
        let (Some(iqn), Some(portal), Some(iface), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let (address, tpgt) = portal.rsplit_once(',').ok_or_else(bad)?;
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let node = Node {
            iqn: iqn.to_string(),
            host: host.to_string(),
            port: port.parse().map_err(|_| bad())?,
            tpgt: tpgt.parse().map_err(|_| bad())?,
            iface: iface.to_string(),
        };
        node.validate()?;
        Ok(node)
    }

    fn args(&self) -> Vec<String> {
        [
            "-m",
            "node",
            "-T",
            &self.iqn,
            "-I",
            &self.iface,
            "-p",
            &self.portal(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// Runs iscsiadm; Ok(exit code, stdout) once it ran.
fn iscsiadm_out(args: &[String]) -> Result<(i32, String), IscsiError> {
    let mut cmd = Command::new("iscsiadm");
    cmd.args(args);
    crate::primitives::child::die_with_parent(&mut cmd);
    let out = crate::primitives::child::output_within(cmd, ISCSIADM_TIMEOUT)
        .map_err(|e| IscsiError::Setup(e.to_string()))?
        .ok_or_else(|| IscsiError::Setup("iscsiadm did not finish".into()))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Runs iscsiadm; Ok(exit code, stderr) once it ran.
fn iscsiadm(args: &[String]) -> Result<(i32, String), IscsiError> {
    let mut cmd = Command::new("iscsiadm");
    cmd.args(args);
    crate::primitives::child::die_with_parent(&mut cmd);
    let out = crate::primitives::child::output_within(cmd, ISCSIADM_TIMEOUT)
        .map_err(|e| IscsiError::Setup(e.to_string()))?
        .ok_or_else(|| {
            IscsiError::Setup(format!(
                "iscsiadm did not finish in {} s",
                ISCSIADM_TIMEOUT.as_secs()
            ))
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Ok((out.status.code().unwrap_or(-1), stderr))
}

fn update(node: &Node, name: &str, value: &str) -> Result<(i32, String), IscsiError> {
    let mut args = node.args();
    args.extend(["-o", "update", "-n", name, "-v", value].map(String::from));
    iscsiadm(&args)
}

/// Creates (or replaces) the node record: manual start-up (cairnd logs in
/// when asked), and CHAP when credentials are given.
pub fn add_node(node: &Node, chap: Option<&Chap>) -> Result<(), IscsiError> {
    node.validate()?;
    let mut args = node.args();
    args.extend(["-o", "new"].map(String::from));
    let (code, err) = iscsiadm(&args)?;
    if code != 0 {
        return Err(IscsiError::AddNode {
            node: node.spec(),
            reason: err,
        });
    }
    let (code, err) = update(node, "node.startup", "manual")?;
    if code != 0 {
        return Err(IscsiError::AddNode {
            node: node.spec(),
            reason: err,
        });
    }
    if let Some(chap) = chap {
        for (name, value) in [
            ("node.session.auth.authmethod", "CHAP"),
            ("node.session.auth.username", chap.user.as_str()),
            ("node.session.auth.password", chap.password.as_str()),
        ] {
            if value.contains(['\n', '\0']) || value.is_empty() {
                return Err(IscsiError::Invalid {
                    field: "user/password",
                    reason: "empty or with control characters".into(),
                });
            }
            let (code, err) = update(node, name, value)?;
            if code != 0 {
                return Err(IscsiError::Auth(err));
            }
        }
    }
    Ok(())
}

/// What an iSCSI interface (an open-iscsi iface record) binds to: a
/// network interface and an initiator name, either optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfaceBinding {
    pub net_ifacename: Option<String>,
    pub initiatorname: Option<String>,
}

/// Makes sure the iface record `name` exists with `binding`, as VDSM
/// does: a missing one is made; an existing one gets the binding it lacks;
/// one bound otherwise is refused (other connections use it).
pub fn ensure_iface(name: &str, binding: &IfaceBinding) -> Result<(), IscsiError> {
    plain("ifaceName", name, "._-", 64)?;
    for (field, value) in [
        ("netIfaceName", &binding.net_ifacename),
        ("initiatorName", &binding.initiatorname),
    ] {
        if let Some(v) = value {
            plain(field, v, ".:_-", 223)?;
        }
    }
    let fail = |reason: String| IscsiError::Iface {
        iface: name.to_string(),
        reason,
    };
    let base = ["-m", "iface", "-I", name].map(String::from).to_vec();
    let (code, shown) = iscsiadm_out(&base)?;
    let current = |key: &str| {
        shown.lines().find_map(|l| {
            let (k, v) = l.split_once(" = ")?;
            (k.trim() == key && v.trim() != "<empty>").then(|| v.trim().to_string())
        })
    };
    if code != 0 {
        if name == "default" {
            return Ok(());
        }
        let mut args = base.clone();
        args.extend(["-o", "new"].map(String::from));
        let (code, err) = iscsiadm(&args)?;
        if code != 0 {
            return Err(fail(err));
        }
    }
    for (key, want) in [
        ("iface.net_ifacename", &binding.net_ifacename),
        ("iface.initiatorname", &binding.initiatorname),
    ] {
        let Some(want) = want else { continue };
        match current(key) {
            Some(have) if &have == want => {}
            Some(have) if code == 0 => {
                return Err(fail(format!("{key} is {have}, not {want}")));
            }
            _ => {
                let mut args = base.clone();
                args.extend(["-o", "update", "-n", key, "-v", want].map(String::from));
                let (code, err) = iscsiadm(&args)?;
                if code != 0 {
                    return Err(fail(err));
                }
            }
        }
    }
    Ok(())
}

/// Logs in with the node record; already logged in is fine.
pub fn login(node: &Node) -> Result<(), IscsiError> {
    let mut args = node.args();
    args.push("--login".into());
    match iscsiadm(&args)? {
        (0, _) | (ERR_SESSION_EXISTS, _) => Ok(()),
        (ERR_LOGIN_AUTH_FAILED, _) => Err(IscsiError::LoginAuth { node: node.spec() }),
        (_, err) => Err(IscsiError::Login {
            node: node.spec(),
            reason: err,
        }),
    }
}

/// Logs out; not logged in is fine.
pub fn logout(node: &Node) -> Result<(), IscsiError> {
    let mut args = node.args();
    args.push("--logout".into());
    match iscsiadm(&args)? {
        (0, _) | (ERR_NO_OBJECTS, _) => Ok(()),
        (_, err) => Err(IscsiError::Logout {
            node: node.spec(),
            reason: err,
        }),
    }
}

/// Rescans every session for new or grown LUNs (`iscsiadm -m session
/// -R`); no session, or no iscsiadm at all, is nothing to rescan.
pub fn rescan_sessions() -> Result<(), IscsiError> {
    let args: Vec<String> = ["-m", "session", "-R"].map(String::from).into();
    match iscsiadm(&args) {
        Ok((0, _)) | Ok((ERR_NO_OBJECTS, _)) => Ok(()),
        Ok((_, err)) => Err(IscsiError::Setup(err)),
        Err(_) if which_iscsiadm().is_none() => Ok(()),
        Err(e) => Err(e),
    }
}

fn which_iscsiadm() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("iscsiadm"))
            .find(|p| p.is_file())
    })
}

/// Removes the node record; none is fine.
pub fn delete_node(node: &Node) -> Result<(), IscsiError> {
    let mut args = node.args();
    args.extend(["-o", "delete"].map(String::from));
    match iscsiadm(&args)? {
        (0, _) | (ERR_NO_OBJECTS, _) => Ok(()),
        (_, err) => Err(IscsiError::AddNode {
            node: node.spec(),
            reason: err,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        Node {
            iqn: "iqn.2026-12.org.example:lun1".into(),
            host: "10.0.0.1".into(),
            port: 3260,
            tpgt: 1,
            iface: "default".into(),
        }
    }

    #[test]
    fn a_node_round_trips_through_its_spec() {
        let n = node();
        assert_eq!(
            n.spec(),
            "iqn.2026-12.org.example:lun1 10.0.0.1:3260,1 default"
        );
        assert_eq!(Node::from_spec(&n.spec()).unwrap(), n);
        let v6 = Node {
            host: "[fe80::1]".into(),
            ..node()
        };
        assert_eq!(Node::from_spec(&v6.spec()).unwrap(), v6);
    }

    #[test]
    fn fields_that_would_be_arguments_are_checked() {
        for bad in [
            Node {
                iqn: "target1".into(),
                ..node()
            },
            Node {
                iqn: "iqn.x y".into(),
                ..node()
            },
            Node {
                host: "-o delete".into(),
                ..node()
            },
            Node {
                host: "".into(),
                ..node()
            },
            Node {
                iface: "a/b".into(),
                ..node()
            },
            Node { port: 0, ..node() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(Node::from_spec("iqn.a 1.2.3.4:3260 default").is_err());
        assert!(Node::from_spec("iqn.a 1.2.3.4:3260,1 default extra").is_err());
    }
}
