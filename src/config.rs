//! cairnd configuration: a TOML file, overridden by command-line flags.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    /// TCP address for HTTP and WebSocket JSON-RPC, e.g. "127.0.0.1:4044".
    pub listen: Option<String>,
    pub log_level: Option<String>,
    /// "text" or "json".
    pub log_format: Option<String>,
    /// Create the local domain and pool on first start (default true).
    pub embedded_default: Option<bool>,
    pub task_workers: Option<usize>,
    /// Seconds between checks of a monitored domain (default 10).
    pub monitor_interval: Option<f64>,
    /// Seconds a domain check may take before the domain is invalid
    /// (default 10).
    pub monitor_timeout: Option<f64>,
    /// Leases of shared domains: "sanlock" (default) or "flock".
    pub shared_leases: Option<String>,
    /// sanlock io_timeout in seconds (default 10).
    pub sanlock_io_timeout: Option<u32>,
    /// Directories LOCALFS storage may lie under, besides the data dir.
    pub local_roots: Option<Vec<PathBuf>>,
    /// Block devices block domains may use besides the LUNs found.
    pub block_devices: Option<Vec<PathBuf>>,
    /// The TCP listener's certificate, key and the CA that signs clients
    /// (default: `<data-dir>/pki/host.pem`, `host-key.pem`, `ca.pem`).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    /// Serve TCP without TLS or authentication; loopback addresses only.
    pub insecure_plain_tcp: Option<bool>,
    /// Browser origins allowed to call cairnd (default none).
    pub allowed_origins: Option<Vec<String>>,
    /// The unprivileged user the network front runs as (default nobody).
    pub front_user: Option<String>,
    /// Connections the TCP listener takes at once (default 256).
    pub max_connections: Option<usize>,
    /// Seconds a connection may move no byte before it is closed (300).
    pub idle_timeout: Option<f64>,
    /// Thin volumes on block domains: the room a new one starts with
    /// (MiB, default 1024).
    pub thin_start_mib: Option<u64>,
    /// The least an extend adds (MiB, default 1024).
    pub thin_step_mib: Option<u64>,
    /// Ask for more room when less than this is free (MiB, default 512).
    pub thin_free_threshold_mib: Option<u64>,
    /// Size step and threshold from the observed write rate (default true).
    pub thin_adaptive: Option<bool>,
    /// Serve the Cinder API v3 on this TCP address (default: not served).
    pub cinder_listen: Option<String>,
    /// "tokens" (default), "keystone" or "noauth" (loopback only).
    pub cinder_auth: Option<String>,
    /// The Cinder tokens file (default <data-dir>/cinder-tokens.toml).
    pub cinder_tokens: Option<PathBuf>,
    /// Keystone's URL, for cinder_auth "keystone".
    pub cinder_keystone_url: Option<String>,
    /// The CAs an https Keystone is checked against.
    pub cinder_keystone_ca: Option<PathBuf>,
    /// The URL Cinder clients reach cairnd at.
    pub cinder_public_url: Option<String>,
    /// How many times its size a domain's thin Cinder volumes may promise
    /// (Cinder's max_over_subscription_ratio, default 20).
    pub cinder_over_subscription: Option<f64>,
    /// Where Cinder backups go: an absolute directory, or `domain:<uuid>`
    /// for a file domain of the pool (default <data-dir>/backup).
    pub cinder_backup_target: Option<String>,
    /// "zlib" (default, as Cinder) or "none".
    pub cinder_backup_compression: Option<String>,
    /// This host's tgtd portal (`address:port`): other hosts get block
    /// domains' RAW volumes over iSCSI through it (default: no iSCSI).
    pub cinder_iscsi_portal: Option<String>,
}

/// Where `cairn pki` keeps a data dir's certificates by default.
pub fn pki_in(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))
    }
}

/// `$CAIRN_DATA_DIR`, else `$XDG_DATA_HOME/cairn`, else `~/.local/share/cairn`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CAIRN_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("cairn");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    home.join(".local").join("share").join("cairn")
}

/// The daemon's socket inside a data directory.
pub fn socket_in(data_dir: &Path) -> PathBuf {
    data_dir.join("cairnd.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let c: FileConfig =
            toml::from_str("data_dir = \"/srv/cairn\"\nlisten = \"127.0.0.1:4044\"\n").unwrap();
        assert_eq!(c.data_dir.as_deref(), Some(Path::new("/srv/cairn")));
        assert!(toml::from_str::<FileConfig>("datadir = \"/x\"").is_err());
    }
}
