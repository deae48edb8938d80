//! The LUNs this host sees, read from sysfs: multipath maps, SCSI disks
//! not claimed by multipath (iSCSI sessions, FC HBAs), and block devices
//! the configuration names (VDSM's `lvm_dev_whitelist`: local disks, or
//! loop devices on a test machine).
//!
//! A LUN is known by its GUID, the WWID multipath names its map by
//! (`3` + the NAA identifier for most SAN LUNs). Block domains live on
//! LUNs only: LVM commands see these devices and no others.

use std::fs;
use std::path::{Path, PathBuf};

/// How a LUN reaches the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Iscsi,
    Fcp,
    /// A device named in the configuration.
    Configured,
}

impl Transport {
    /// VDSM's `devtype`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Iscsi => "iSCSI",
            Transport::Fcp => "FCP",
            Transport::Configured => "configured",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lun {
    pub guid: String,
    /// The device node LVM and qemu open.
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
    pub logical_block: u32,
    pub physical_block: u32,
    pub transport: Transport,
    pub vendor: String,
    pub product: String,
    pub fwrev: String,
    pub serial: String,
    /// 0 when the LUN cannot discard.
    pub discard_max_bytes: u64,
    /// Its SCSI paths (one for a disk not under multipath).
    pub paths: Vec<LunPath>,
}

/// One SCSI path to a LUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunPath {
    /// The kernel's name (`sdb`).
    pub device: String,
    /// `running` in sysfs: active; anything else: failed.
    pub active: bool,
    /// The LUN number, from the H:C:T:L address.
    pub lun: u32,
    /// The iSCSI session's target and portal, for an iSCSI path.
    pub iscsi: Option<IscsiPath>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IscsiPath {
    pub iqn: String,
    pub address: String,
    pub port: String,
    pub tpgt: String,
    pub iface: String,
}

const SYS_BLOCK: &str = "/sys/block";

/// Every LUN visible now; `configured` devices are added by path.
pub fn discover(configured: &[PathBuf]) -> Vec<Lun> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(SYS_BLOCK) else {
        return out;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        let sys = Path::new(SYS_BLOCK).join(name);
        if name.starts_with("dm-") {
            if let Some(lun) = multipath_map(&sys) {
                out.push(lun);
            }
        } else if name.starts_with("sd") && is_empty_dir(&sys.join("holders")) {
            if let Some(lun) = scsi_disk(name, &sys) {
                out.push(lun);
            }
        }
    }
    for dev in configured {
        if let Some(lun) = configured_device(dev) {
            if !out.iter().any(|l| l.guid == lun.guid) {
                out.push(lun);
            }
        }
    }
    out
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn is_empty_dir(path: &Path) -> bool {
    fs::read_dir(path).map_or(true, |mut d| d.next().is_none())
}

/// Size and block sizes of the device whose sysfs directory is `sys`.
fn geometry(sys: &Path) -> Option<(u64, u32, u32)> {
    let sectors: u64 = read(&sys.join("size"))?.parse().ok()?;
    let logical: u32 = read(&sys.join("queue/logical_block_size"))?.parse().ok()?;
    let physical: u32 = read(&sys.join("queue/physical_block_size"))?
        .parse()
        .unwrap_or(logical);
    // sysfs counts 512-byte sectors whatever the block size.
    Some((sectors * 512, logical, physical))
}

fn multipath_map(sys: &Path) -> Option<Lun> {
    if !read(&sys.join("dm/uuid"))?.starts_with("mpath-") {
        return None;
    }
    let guid = read(&sys.join("dm/name"))?;
    let (size, logical_block, physical_block) = geometry(sys)?;
    // The first path tells the transport and the vendor.
    let slave = fs::read_dir(sys.join("slaves"))
        .ok()?
        .flatten()
        .next()
        .map(|e| e.file_name().to_string_lossy().into_owned())?;
    let slave_sys = Path::new(SYS_BLOCK).join(&slave);
    let mut slaves: Vec<String> = fs::read_dir(sys.join("slaves"))
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    slaves.sort();
    Some(Lun {
        path: Path::new("/dev/mapper").join(&guid),
        guid,
        size,
        logical_block,
        physical_block,
        transport: transport_of(&slave_sys),
        vendor: read(&slave_sys.join("device/vendor")).unwrap_or_default(),
        product: read(&slave_sys.join("device/model")).unwrap_or_default(),
        fwrev: read(&slave_sys.join("device/rev")).unwrap_or_default(),
        serial: serial_of(&slave_sys),
        discard_max_bytes: discard_max(sys),
        paths: slaves.iter().filter_map(|s| scsi_path(s)).collect(),
    })
}

fn discard_max(sys: &Path) -> u64 {
    read(&sys.join("queue/discard_max_bytes"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The unit serial number (SCSI VPD page 0x80), as `scsi_id` reads it.
fn serial_of(sys: &Path) -> String {
    match fs::read(sys.join("device/vpd_pg80")) {
        Ok(b) if b.len() > 4 => String::from_utf8_lossy(&b[4..]).trim().to_string(),
        _ => String::new(),
    }
}

/// The path through SCSI disk `name`: its state, LUN number and session.
fn scsi_path(name: &str) -> Option<LunPath> {
    let dev = Path::new(SYS_BLOCK).join(name).join("device");
    let hctl = dev.canonicalize().ok()?;
    let lun = hctl
        .file_name()?
        .to_str()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()?;
    Some(LunPath {
        device: name.to_string(),
        active: read(&dev.join("state")).as_deref() == Some("running"),
        lun,
        iscsi: iscsi_path(&hctl),
    })
}

/// The iSCSI session above a SCSI device in sysfs, if any.
fn iscsi_path(hctl: &Path) -> Option<IscsiPath> {
    let session = hctl.ancestors().find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("session"))
    })?;
    let name = session.file_name()?.to_str()?;
    let class = session.join("iscsi_session").join(name);
    let connection = fs::read_dir(session)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("connection"))?;
    let conn_dir = session
        .join(&connection)
        .join("iscsi_connection")
        .join(&connection);
    Some(IscsiPath {
        iqn: read(&class.join("targetname")).unwrap_or_default(),
        address: read(&conn_dir.join("persistent_address")).unwrap_or_default(),
        port: read(&conn_dir.join("persistent_port")).unwrap_or_default(),
        tpgt: read(&class.join("tpgt")).unwrap_or_default(),
        iface: read(&class.join("ifacename")).unwrap_or_default(),
    })
}

fn scsi_disk(name: &str, sys: &Path) -> Option<Lun> {
    let guid = guid_from_wwid(&read(&sys.join("device/wwid"))?)?;
    let (size, logical_block, physical_block) = geometry(sys)?;
    Some(Lun {
        guid,
        path: Path::new("/dev").join(name),
        size,
        logical_block,
        physical_block,
        transport: transport_of(sys),
        vendor: read(&sys.join("device/vendor")).unwrap_or_default(),
        product: read(&sys.join("device/model")).unwrap_or_default(),
        fwrev: read(&sys.join("device/rev")).unwrap_or_default(),
        serial: serial_of(sys),
        discard_max_bytes: discard_max(sys),
        paths: scsi_path(name).into_iter().collect(),
    })
}

fn configured_device(dev: &Path) -> Option<Lun> {
    use std::os::unix::fs::FileTypeExt;
    if !fs::metadata(dev).ok()?.file_type().is_block_device() {
        tracing::warn!(device = %dev.display(), "a configured block device is not a block device; ignored");
        return None;
    }
    let real = dev.canonicalize().ok()?;
    let name = real.file_name()?.to_str()?.to_string();
    let sys = Path::new(SYS_BLOCK).join(&name);
    let (size, logical_block, physical_block) = geometry(&sys)?;
    Some(Lun {
        guid: name,
        path: dev.to_path_buf(),
        size,
        logical_block,
        physical_block,
        transport: Transport::Configured,
        vendor: String::new(),
        product: String::new(),
        fwrev: String::new(),
        serial: String::new(),
        discard_max_bytes: discard_max(&sys),
        paths: Vec::new(),
    })
}

/// iSCSI disks hang below a session in sysfs, FC disks below a remote port.
fn transport_of(sys: &Path) -> Transport {
    let real = sys
        .canonicalize()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if real.contains("/session") {
        Transport::Iscsi
    } else if real.contains("/rport-") {
        Transport::Fcp
    } else {
        Transport::Configured
    }
}

/// The WWID multipath would name the device by, from the kernel's SCSI
/// VPD identifier: the designator type prefixed as `scsi_id` does.
pub fn guid_from_wwid(wwid: &str) -> Option<String> {
    let (kind, id) = wwid.split_once('.')?;
    let prefix = match kind {
        "naa" => "3",
        "eui" => "2",
        "t10" => "1",
        _ => return None,
    };
    let id = id.trim().replace(' ', "_");
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let id = if kind == "t10" {
        id
    } else {
        id.to_ascii_lowercase()
    };
    Some(format!("{prefix}{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_named_as_multipath_names_them() {
        assert_eq!(
            guid_from_wwid("naa.60014052B0C1C3A1D7F4E35A1B2C3D4E").as_deref(),
            Some("360014052b0c1c3a1d7f4e35a1b2c3d4e")
        );
        assert_eq!(
            guid_from_wwid("eui.0025385b71b0c1a2").as_deref(),
            Some("20025385b71b0c1a2")
        );
        assert_eq!(guid_from_wwid("naa.").as_deref(), None);
        assert_eq!(guid_from_wwid("whatever"), None);
    }
}
