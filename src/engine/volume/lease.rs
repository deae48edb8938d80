//! Volume leases on shared domains: each volume's `<vol>.lease` file holds
//! a sanlock resource (named by the volume, in the domain's lockspace), and
//! every host job that changes a volume holds it exclusively, so two hosts
//! can never change one volume (or its metadata) at once. A host takes
//! volume leases once it has joined the domain's lockspace, which
//! `Host.startMonitoringDomain` does with its host id (as in VDSM).

use std::path::PathBuf;

use crate::backend::Domain;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::primitives::sanlock::{self, Disk, Registration, Resource};
use crate::types::Uuid;

fn resource(dom: &dyn Domain, img: Uuid, vol: Uuid) -> Result<Resource> {
    let (path, offset) = dom.volume_lease(img, vol);
    resource_at(dom, vol, Disk { path, offset })
}

fn resource_at(dom: &dyn Domain, vol: Uuid, disk: Disk) -> Result<Resource> {
    Ok(Resource {
        lockspace: dom.id().to_string(),
        name: vol.to_string(),
        disk,
        shared: false,
        geometry: crate::engine::domains::lease_geometry(&dom.manifest()?)?,
    })
}

/// Writes a new volume's lease (its area exists, zeroed).
pub(crate) fn format(dom: &dyn Domain, img: Uuid, vol: Uuid) -> Result<()> {
    write(resource(dom, img, vol)?, vol)
}

/// Writes the lease of a volume being imported, where the backend put it.
pub(crate) fn format_at(dom: &dyn Domain, vol: Uuid, (path, offset): (PathBuf, u64)) -> Result<()> {
    write(resource_at(dom, vol, Disk { path, offset })?, vol)
}

fn write(res: Resource, vol: Uuid) -> Result<()> {
    sanlock::share_with_daemon(&res.disk.path)
        .map_err(|e| Error::io_path("cannot share", &res.disk.path, e))?;
    sanlock::write_resource(&res).map_err(|e| Error::VolumeCreation {
        vol,
        reason: format!("cannot write its sanlock lease: {e}"),
    })
}

/// A volume lease held by this host; released when dropped.
#[derive(Debug)]
pub(crate) struct VolumeLease {
    registration: Registration,
    resource: Resource,
}

impl Drop for VolumeLease {
    fn drop(&mut self) {
        if let Err(e) = self.registration.release(&self.resource) {
            // Closing the registration releases it anyway.
            tracing::warn!(lease = %self.resource.name, error = %e, "cannot release a volume lease cleanly");
        }
    }
}

impl Engine {
    /// Takes the volume's lease if its domain is shared (None on domains
    /// without sanlock leases, where the image lock is enough).
    pub(crate) fn volume_lease(
        &self,
        dom: &dyn Domain,
        img: Uuid,
        vol: Uuid,
    ) -> Result<Option<VolumeLease>> {
        if self.sanlock_for(dom).is_none() {
            return Ok(None);
        }
        let resource = resource(dom, img, vol)?;
        let failed = |e: sanlock::SanlockError| Error::VolumeLease {
            vol,
            reason: if e.is_held_elsewhere() {
                "another host holds it (a job on that host is changing the volume)".into()
            } else {
                format!(
                    "{e}; has this host joined the domain's lockspace (Host.startMonitoringDomain)?"
                )
            },
        };
        let registration = Registration::new().map_err(failed)?;
        registration.acquire(&resource, None).map_err(failed)?;
        Ok(Some(VolumeLease {
            registration,
            resource,
        }))
    }
}
