//! `cairn pki`: the cluster CA and host and client certificates.

use super::*;

#[derive(Subcommand, Debug)]
pub(crate) enum PkiCmd {
    /// Create the cluster CA (ca.pem, ca-key.pem): once per cluster; copy
    /// ca.pem to every host and client, keep ca-key.pem safe.
    Init {
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The CA's common name.
        #[arg(long, default_value = "Cairn cluster CA")]
        name: String,
    },
    /// Issue <name>.pem and <name>-key.pem signed by the CA: --host for a
    /// cairnd listener (cairnd looks for "host"), --client for a caller
    /// (the CLI looks for "client").
    Issue {
        name: String,
        #[arg(long, conflicts_with = "client", required_unless_present = "client")]
        host: bool,
        #[arg(long)]
        client: bool,
        /// More names or IP addresses the host is reached by (repeatable).
        #[arg(long)]
        san: Vec<String>,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub(crate) fn pki(
    data_dir: &std::path::Path,
    cmd: &PkiCmd,
) -> Result<PathBuf, cairn::pki::PkiError> {
    let dir = |d: &Option<PathBuf>| d.clone().unwrap_or_else(|| cairn::config::pki_in(data_dir));
    match cmd {
        PkiCmd::Init { dir: d, name } => cairn::pki::init_ca(&dir(d), name),
        PkiCmd::Issue {
            name,
            host,
            san,
            dir: d,
            ..
        } => {
            let role = if *host {
                cairn::pki::Role::Host
            } else {
                cairn::pki::Role::Client
            };
            cairn::pki::issue(&dir(d), name, role, san)
        }
    }
}
