//! Making a block domain: the VG on LUNs (`LVMVolumeGroup.create`), then
//! the domain in it (`StorageDomain.create`), in VDSM's order
//! (`vdsm-block.md` 1.2 and 1.3).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{BlockDomain, BlockEnv, MASTER};
use crate::error::{Error, IoContext, LvmAction, Result};
use crate::format::block_layout::{self as layout, DOMAIN_TAG, EXTENT_SIZE, UNREADY_TAG};
use crate::format::manifest::NewDomain;
use crate::format::vg_tags;
use crate::primitives::luns::Lun;
use crate::primitives::lvm::NewLv;
use crate::types::Uuid;

/// VDSM's smallest VG for a domain.
pub const MIN_VG_SIZE: u64 = 10 << 30;
/// Each PV's two metadata areas (start and end of the LUN).
pub(super) const PV_METADATA_SIZE: u64 = 128 << 20;
/// Zeroed at creation: v4 slots (0-1 MiB) and v5 slots (1-17 MiB).
const METADATA_RESERVE: u64 = 17 << 20;
/// Zeroed at creation: 250 hosts' 4 KiB mailbox blocks.
const MAILBOX_USED: u64 = 250 * 4096;

/// Why `lun` cannot become a PV of a new VG, if it cannot.
pub fn lun_problem(env: &BlockEnv, lun: &Lun) -> Option<String> {
    match check_lun(env, lun) {
        Ok(()) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// Refuses a LUN that cannot become a PV of a new VG: wrong block size,
/// partitioned, held by another device, or a PV already.
pub(super) fn check_lun(env: &BlockEnv, lun: &Lun) -> Result<()> {
    if lun.logical_block != 512 {
        return Err(Error::LunBlockSize {
            guid: lun.guid.clone(),
            size: lun.logical_block,
            need: 512,
        });
    }
    let real = lun.path.canonicalize().ctx("cannot resolve", &lun.path)?;
    let name = real
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let sys = Path::new("/sys/block").join(&name);
    let partitioned = std::fs::read_dir(&sys)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(&name))
        })
        .unwrap_or(false);
    if partitioned {
        return Err(Error::LunUnusable {
            guid: lun.guid.clone(),
            reason: "it has partitions".into(),
        });
    }
    if std::fs::read_dir(sys.join("holders")).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::LunUnusable {
            guid: lun.guid.clone(),
            reason: "another device (a device-mapper map) holds it".into(),
        });
    }
    let pvs = match env.lvm.pvs(std::slice::from_ref(&lun.path)) {
        Ok(pvs) => pvs,
        // Not a PV: what a new domain needs.
        Err(e) if e.is_not_found() => Vec::new(),
        Err(source) => {
            return Err(Error::Lvm {
                action: LvmAction::ReadVg,
                source,
            })
        }
    };
    if let Some(pv) = pvs.first() {
        return Err(Error::LunUnusable {
            guid: lun.guid.clone(),
            reason: if pv.vg_name.is_empty() {
                "it is an LVM physical volume already".into()
            } else {
                format!("it belongs to volume group {}", pv.vg_name)
            },
        });
    }
    Ok(())
}

/// `LVMVolumeGroup.create`: the LUNs become PVs (two metadata areas each,
/// live only on the first PV, as VDSM keeps them) of a VG named `name`
/// with 128 MiB extents, tagged as a domain not ready yet. Returns the VG
/// UUID.
pub fn create_vg(env: &BlockEnv, name: Uuid, luns: &[Lun]) -> Result<String> {
    let vg = name.to_string();
    if luns.is_empty() {
        return Err(Error::invalid("devlist", "no LUN given"));
    }
    if env
        .lvm
        .vgs(&env.devices)
        .is_ok_and(|vgs| vgs.iter().any(|v| v.name == vg))
    {
        return Err(Error::Lvm {
            action: LvmAction::CreateVg,
            source: crate::primitives::lvm::LvmError::Failed {
                command: "vgcreate".into(),
                reason: format!("a volume group named {vg} exists"),
            },
        });
    }
    let total: u64 = luns.iter().map(|l| l.size).sum();
    if total < MIN_VG_SIZE {
        return Err(Error::invalid(
            "devlist",
            format!("{total} bytes of LUNs; a block domain needs at least {MIN_VG_SIZE}"),
        ));
    }
    let physical = luns[0].physical_block;
    for lun in luns {
        check_lun(env, lun)?;
        if lun.physical_block != physical {
            return Err(Error::LunUnusable {
                guid: lun.guid.clone(),
                reason: format!(
                    "its physical block size {} differs from {physical} of the other LUNs",
                    lun.physical_block
                ),
            });
        }
    }
    let devices: Vec<PathBuf> = luns.iter().map(|l| l.path.clone()).collect();
    env.lvm
        .pvcreate_for_domain(&devices, PV_METADATA_SIZE)
        .map_err(|source| Error::Lvm {
            action: LvmAction::CreatePv,
            source,
        })?;
    env.lvm
        .vgcreate(&vg, &devices, EXTENT_SIZE, &[UNREADY_TAG.to_string()])
        .map_err(|source| Error::Lvm {
            action: LvmAction::CreateVg,
            source,
        })?;
    let info = env.lvm.vg(&env.devices, &vg).map_err(|source| Error::Lvm {
        action: LvmAction::ReadVg,
        source,
    })?;
    tracing::info!(vg = %vg, uuid = %info.uuid, luns = ?luns.iter().map(|l| &l.guid).collect::<Vec<_>>(), "created volume group");
    Ok(info.uuid)
}

/// `StorageDomain.create` on the VG whose UUID is `vg_uuid`. A failure
/// before the domain tag is set removes what was made, leaving the VG as
/// `create_vg` left it (VDSM leaves it unusable).
pub fn create_domain(env: &BlockEnv, vg_uuid: &str, new: &NewDomain) -> Result<BlockDomain> {
    let vgs = env.lvm.vgs(&env.devices).map_err(|source| Error::Lvm {
        action: LvmAction::ReadVg,
        source,
    })?;
    let vg = vgs
        .into_iter()
        .find(|v| v.uuid == vg_uuid)
        .ok_or_else(|| Error::VolumeGroupNotFound(vg_uuid.to_string()))?;
    if vg.tags.iter().any(|t| t == DOMAIN_TAG) {
        return Err(Error::VolumeGroupHasDomain { vg: vg.name });
    }
    let unusable = |reason: String| Error::VolumeGroupUnusable {
        vg: vg.name.clone(),
        reason,
    };
    if vg.name != new.sd.to_string() {
        return Err(unusable(format!(
            "it is named {}, not after the domain {}",
            vg.name, new.sd
        )));
    }
    if vg.tags != [UNREADY_TAG] {
        return Err(unusable(format!(
            "its tags are {:?}; a new domain needs a VG made by LVMVolumeGroup.create",
            vg.tags
        )));
    }
    let lvs = env
        .lvm
        .lvs(&env.devices, &vg.name)
        .map_err(|source| Error::Lvm {
            action: LvmAction::ReadLvs,
            source,
        })?;
    if !lvs.is_empty() {
        return Err(unusable(format!("it holds {} logical volumes", lvs.len())));
    }
    let made = build(env, &vg.name, vg_uuid, new);
    if let Err(e) = made {
        tracing::warn!(vg = %vg.name, error = %e, "domain creation failed; removing what it made");
        undo_build(env, &vg.name);
        return Err(match e {
            e @ (Error::NoSpace { .. } | Error::Lvm { .. }) => e,
            e => Error::DomainCreation {
                sd: new.sd,
                reason: e.to_string(),
            },
        });
    }
    crate::failpoint::hit("domain.create.done")?;
    tracing::info!(sd = %new.sd, vg = %vg.name, version = new.version, "created block storage domain");
    BlockDomain::open(env, new.sd)
}

fn build(env: &BlockEnv, vg: &str, vg_uuid: &str, new: &NewDomain) -> Result<()> {
    let lvm_err = |action| move |source| Error::Lvm { action, source };
    for lv in layout::special_lvs(new.version) {
        env.lvm
            .lvcreate(
                &env.devices,
                vg,
                &NewLv {
                    name: lv.name,
                    size: lv.size,
                    tags: &[],
                    contiguous: false,
                    activate: false,
                },
            )
            .map_err(|e| {
                if e.is_no_space() {
                    Error::NoSpace { sd: new.sd }
                } else {
                    Error::Lvm {
                        action: LvmAction::CreateLv,
                        source: e,
                    }
                }
            })?;
    }
    let names: Vec<&str> = layout::special_lvs(new.version).map(|l| l.name).collect();
    env.lvm
        .set_active(&env.devices, vg, &names, true)
        .map_err(lvm_err(LvmAction::ActivateLv))?;
    let dev = |lv: &str| Path::new("/dev").join(vg).join(lv);
    zero(&dev("metadata"), METADATA_RESERVE)?;
    zero(&dev("inbox"), MAILBOX_USED)?;
    zero(&dev("outbox"), MAILBOX_USED)?;
    if new.version >= 4 {
        format_xleases(&dev("xleases"), new.sd, new.alignment)?;
    }
    make_master_fs(&dev(MASTER))?;
    env.lvm
        .set_active(&env.devices, vg, &[MASTER], false)
        .map_err(lvm_err(LvmAction::DeactivateLv))?;
    crate::failpoint::hit("domain.create.staged")?;

    let md = initial_metadata(env, vg, vg_uuid, new)?;
    env.lvm
        .change_vg_tags(&env.devices, vg, &vg_tags::to_tags(&md), &[])
        .map_err(lvm_err(LvmAction::ReplaceVgTags))?;
    // The commit point: from here the VG is a domain.
    env.lvm
        .change_vg_tags(
            &env.devices,
            vg,
            &[DOMAIN_TAG.to_string()],
            &[UNREADY_TAG.to_string()],
        )
        .map_err(lvm_err(LvmAction::ReplaceVgTags))
}

/// Back to an empty VG tagged not ready: LVs and metadata tags removed.
fn undo_build(env: &BlockEnv, vg: &str) {
    env.lvm.invalidate(vg);
    if let Ok(lvs) = env.lvm.lvs(&env.devices, vg) {
        let names: Vec<&str> = lvs.iter().map(|l| l.name.as_str()).collect();
        if !names.is_empty() {
            let _ = env.lvm.set_active(&env.devices, vg, &names, false);
            if let Err(e) = env.lvm.lvremove(&env.devices, vg, &names) {
                tracing::warn!(vg, error = %e, "cannot remove the LVs of a failed domain creation");
            }
        }
    }
    if let Ok(info) = env.lvm.vg(&env.devices, vg) {
        let md: Vec<String> = info
            .tags
            .iter()
            .filter(|t| t.starts_with(vg_tags::PREFIX))
            .cloned()
            .collect();
        if !md.is_empty() {
            let _ = env.lvm.change_vg_tags(&env.devices, vg, &[], &md);
        }
    }
}

/// VDSM's block domain metadata: the file keys without REMOTE_PATH, plus
/// the VG UUID and the PVs in the legacy extent mapping.
fn initial_metadata(
    env: &BlockEnv,
    vg: &str,
    vg_uuid: &str,
    new: &NewDomain,
) -> Result<crate::format::domain_md::DomainMetadata> {
    let mut md = crate::format::manifest::initial_metadata(new);
    md.remove(crate::format::manifest::K_REMOTE_PATH);
    md.set("VGUUID", vg_uuid);
    if new.version < 5 {
        md.set("LOGBLKSIZE", "512");
        md.set("PHYBLKSIZE", new.block_size.to_string());
    }
    let pvs = env.lvm.pvs(&env.devices).map_err(|source| Error::Lvm {
        action: LvmAction::ReadVg,
        source,
    })?;
    let luns = crate::primitives::luns::discover(&env.devices);
    let named: Vec<(String, &crate::primitives::lvm::PvInfo)> = pvs
        .iter()
        .filter(|p| p.vg_name == vg)
        .map(|pv| {
            let guid = luns
                .iter()
                .find(|l| l.path == pv.name)
                .map_or_else(|| pv.name.display().to_string(), |l| l.guid.clone());
            (guid, pv)
        })
        .collect();
    for (key, value) in super::vg::pv_mapping(&md, &named) {
        md.set(&key, value);
    }
    Ok(md)
}

/// Writes the external leases index (VDSM's xleases) on its LV.
pub(super) fn format_xleases(path: &Path, sd: Uuid, alignment: u64) -> Result<()> {
    let (offset, index) =
        crate::format::xleases::format_index(&sd.to_string(), crate::now_secs(), alignment);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .ctx("cannot open", path)?;
    std::os::unix::fs::FileExt::write_all_at(&f, &index, offset)
        .and_then(|()| f.sync_all())
        .ctx("cannot write the xleases index to", path)
}

fn zero(dev: &Path, len: u64) -> Result<()> {
    run(
        Command::new("blkdiscard")
            .args(["--zeroout", "--step", "32MiB", "--length"])
            .arg(len.to_string())
            .arg(dev),
        "zero",
        dev,
    )
}

fn make_master_fs(dev: &Path) -> Result<()> {
    run(
        Command::new("mkfs.ext3")
            .args(["-q", "-F", "-j", "-E", "nodiscard"])
            .arg(dev),
        "make the master file system on",
        dev,
    )
}

/// `e2fsck -p` before mounting the master: 1 and 2 mean repaired.
pub(super) fn check_master_fs(dev: &Path) -> Result<()> {
    let mut cmd = Command::new("e2fsck");
    cmd.arg("-p").arg(dev);
    crate::primitives::child::die_with_parent(&mut cmd);
    let out = cmd.output().ctx("cannot run e2fsck on", dev)?;
    match out.status.code() {
        Some(0..=2) => Ok(()),
        _ => Err(Error::io_path(
            "the master file system needs repair",
            dev,
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        )),
    }
}

fn run(cmd: &mut Command, what: &str, dev: &Path) -> Result<()> {
    crate::primitives::child::die_with_parent(cmd);
    let out = cmd.output().ctx(&format!("cannot {what}"), dev)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::io_path(
            &format!("cannot {what}"),
            dev,
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        ))
    }
}
