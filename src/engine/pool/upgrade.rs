//! Domain format upgrades (VDSM's formatConverter): version 3 and 4
//! domains, file or block, are brought to a newer version where VDSM does
//! it: at SPM start when the caller names a version (`domVersion`), and
//! when a domain is attached to or activated in a pool whose master is
//! newer. Each version step has three parts: the backend adds what the new
//! version needs beside the old (a crash leaves a valid old domain), one
//! metadata update names the new version (the commit), and the backend
//! removes what only the old version used (readers ignore it meanwhile).

use crate::backend::Domain;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::format::domain_md::DomainMetadata;
use crate::format::manifest::{K_ALIGNMENT, K_BLOCK_SIZE, K_VERSION};

/// The newest version a domain is upgraded to.
pub const NEWEST: u32 = 5;

impl Engine {
    /// Upgrades `dom` one version at a time up to `target`; a domain at or
    /// past it is left alone.
    pub(crate) fn upgrade_domain(&self, dom: &dyn Domain, target: u32) -> Result<()> {
        let sd = dom.id();
        if target > NEWEST {
            return Err(Error::UnsupportedDomainVersion(target, "3, 4, 5"));
        }
        loop {
            let version = dom.manifest()?.version;
            if version >= target {
                return Ok(());
            }
            let next = version + 1;
            tracing::info!(sd = %sd, from = version, to = next, "upgrading the storage domain format");
            dom.prepare_upgrade(next)?;
            failpoint::hit("domain.upgrade.prepared")?;
            dom.update(|md| {
                name_version(md, next);
                Ok(())
            })?;
            failpoint::hit("domain.upgrade.committed")?;
            if let Err(e) = dom.finish_upgrade(next) {
                tracing::warn!(sd = %sd, version = next, error = %e,
                    "parts only the older format used remain (readers ignore them)");
            }
            tracing::info!(sd = %sd, version = next, "storage domain format upgraded");
        }
    }
}

/// The keys of format `version`: version 5 states the block size and
/// lease alignment (version 4's always 512 B and 1 MiB) and drops the
/// block-size keys of older block domains.
fn name_version(md: &mut DomainMetadata, version: u32) {
    md.set(K_VERSION, version.to_string());
    if version == 5 {
        md.set(K_BLOCK_SIZE, "512");
        md.set(K_ALIGNMENT, "1048576");
        md.remove("LOGBLKSIZE");
        md.remove("PHYBLKSIZE");
    }
}
