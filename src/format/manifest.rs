//! Typed view of domain metadata, including the pool keys of a master domain.

use crate::error::{Error, Result};
use crate::format::domain_md::DomainMetadata;
use crate::types::{
    parse_uuid, DomainClass, DomainRole, DomainType, Uuid, READABLE_DOMAIN_VERSIONS,
};

/// What a new domain is made of.
#[derive(Debug, Clone)]
pub struct NewDomain {
    pub sd: Uuid,
    pub name: String,
    pub class: DomainClass,
    pub domain_type: DomainType,
    pub version: u32,
    pub block_size: u32,
    pub alignment: u64,
    pub remote_path: String,
}

pub const K_VERSION: &str = "VERSION";
pub const K_SDUUID: &str = "SDUUID";
pub const K_TYPE: &str = "TYPE";
pub const K_ROLE: &str = "ROLE";
pub const K_DESCRIPTION: &str = "DESCRIPTION";
pub const K_CLASS: &str = "CLASS";
pub const K_POOL_UUID: &str = "POOL_UUID";
pub const K_BLOCK_SIZE: &str = "BLOCK_SIZE";
pub const K_ALIGNMENT: &str = "ALIGNMENT";
pub const K_REMOTE_PATH: &str = "REMOTE_PATH";
pub const K_POOL_DOMAINS: &str = "POOL_DOMAINS";
pub const K_POOL_DESCRIPTION: &str = "POOL_DESCRIPTION";
pub const K_POOL_SPM_ID: &str = "POOL_SPM_ID";
pub const K_POOL_SPM_LVER: &str = "POOL_SPM_LVER";
pub const K_MASTER_VERSION: &str = "MASTER_VERSION";

pub const POOL_KEYS: &[&str] = &[
    K_POOL_DOMAINS,
    K_POOL_DESCRIPTION,
    K_POOL_SPM_ID,
    K_POOL_SPM_LVER,
    K_MASTER_VERSION,
];

/// VDSM's lease defaults, written into every new domain.
pub const LOCK_RENEWAL_INTERVAL_SEC: u32 = 5;
pub const LEASE_TIME_SEC: u32 = 60;
pub const IO_OP_TIMEOUT_SEC: u32 = 10;
pub const LEASE_RETRIES: u32 = 3;

pub const MAX_DESCRIPTION: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainManifest {
    pub sd: Uuid,
    pub version: u32,
    pub domain_type: DomainType,
    pub class: DomainClass,
    pub role: DomainRole,
    pub description: String,
    pub pools: Vec<Uuid>,
    pub block_size: u32,
    pub alignment: u64,
    pub remote_path: String,
    /// Present on a master domain.
    pub pool: Option<PoolMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMetadata {
    /// Member domains and their status (Active, Attached).
    pub domains: Vec<(Uuid, String)>,
    pub description: String,
    pub spm_id: i64,
    pub lver: i64,
    pub master_version: i64,
}

impl DomainManifest {
    pub fn from_metadata(sd: Uuid, md: &DomainMetadata) -> Result<Self> {
        let bad = |reason: String| Error::DomainMetadata { sd, reason };
        let get = |k: &str| md.get(k).ok_or_else(|| bad(format!("key {k} is missing")));
        let version: u32 = get(K_VERSION)?
            .parse()
            .map_err(|_| bad("VERSION is not a number".into()))?;
        if !READABLE_DOMAIN_VERSIONS.contains(&version) {
            return Err(Error::UnsupportedDomainVersion(version, "3, 4, 5"));
        }
        let md_sd = parse_uuid(get(K_SDUUID)?).ok_or_else(|| bad("SDUUID is not a UUID".into()))?;
        let type_text = get(K_TYPE)?;
        let domain_type = DomainType::from_name(type_text)
            .or_else(|| type_text.parse().ok().and_then(DomainType::from_id))
            .ok_or_else(|| bad(format!("unknown TYPE {type_text}")))?;
        let class_text = get(K_CLASS)?;
        let class = DomainClass::from_name(class_text)
            .ok_or_else(|| bad(format!("unknown CLASS {class_text}")))?;
        let role_text = get(K_ROLE)?;
        let role = DomainRole::from_name(role_text)
            .ok_or_else(|| bad(format!("unknown ROLE {role_text}")))?;
        let pools = md
            .get(K_POOL_UUID)
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| parse_uuid(s).ok_or_else(|| bad(format!("POOL_UUID {s} is not a UUID"))))
            .collect::<Result<Vec<_>>>()?;
        let (block_size, alignment) = if version >= 5 {
            let bs = get(K_BLOCK_SIZE)?
                .parse()
                .map_err(|_| bad("BLOCK_SIZE is not a number".into()))?;
            let al = get(K_ALIGNMENT)?
                .parse()
                .map_err(|_| bad("ALIGNMENT is not a number".into()))?;
            (bs, al)
        } else {
            (512, 1 << 20)
        };
        let pool = if md.get(K_POOL_DOMAINS).is_some() || role == DomainRole::Master {
            Some(PoolMetadata::from_metadata(sd, md)?)
        } else {
            None
        };
        Ok(DomainManifest {
            sd: md_sd,
            version,
            domain_type,
            class,
            role,
            description: md.get(K_DESCRIPTION).unwrap_or("").to_string(),
            pools,
            block_size,
            alignment,
            remote_path: md.get(K_REMOTE_PATH).unwrap_or("").to_string(),
            pool,
        })
    }
}

impl PoolMetadata {
    fn from_metadata(sd: Uuid, md: &DomainMetadata) -> Result<Self> {
        let bad = |reason: String| Error::DomainMetadata { sd, reason };
        let int = |k: &str| -> Result<i64> {
            md.get(k)
                .ok_or_else(|| bad(format!("key {k} is missing")))?
                .parse()
                .map_err(|_| bad(format!("{k} is not a number")))
        };
        let domains = md
            .get(K_POOL_DOMAINS)
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|entry| {
                let (id, status) = entry
                    .split_once(':')
                    .ok_or_else(|| bad(format!("bad POOL_DOMAINS entry {entry}")))?;
                let id =
                    parse_uuid(id).ok_or_else(|| bad(format!("bad POOL_DOMAINS entry {entry}")))?;
                Ok((id, status.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PoolMetadata {
            domains,
            description: md.get(K_POOL_DESCRIPTION).unwrap_or("").to_string(),
            spm_id: int(K_POOL_SPM_ID)?,
            lver: int(K_POOL_SPM_LVER)?,
            master_version: int(K_MASTER_VERSION)?,
        })
    }

    pub fn write(&self, md: &mut DomainMetadata) {
        let domains = self
            .domains
            .iter()
            .map(|(id, st)| format!("{id}:{st}"))
            .collect::<Vec<_>>()
            .join(",");
        md.set(K_POOL_DOMAINS, domains);
        md.set(K_POOL_DESCRIPTION, self.description.clone());
        md.set(K_POOL_SPM_ID, self.spm_id.to_string());
        md.set(K_POOL_SPM_LVER, self.lver.to_string());
        md.set(K_MASTER_VERSION, self.master_version.to_string());
    }
}

/// Metadata of a new domain, as VDSM writes it for file domains.
pub fn initial_metadata(new: &NewDomain) -> DomainMetadata {
    let mut md = DomainMetadata::new();
    md.set(K_VERSION, new.version.to_string());
    md.set(K_SDUUID, new.sd.to_string());
    md.set(K_TYPE, new.domain_type.metadata_name());
    md.set(K_CLASS, new.class.name());
    md.set(K_DESCRIPTION, new.name.clone());
    md.set(K_ROLE, DomainRole::Regular.name());
    md.set(K_POOL_UUID, "");
    md.set("LOCKPOLICY", "");
    md.set(
        "LOCKRENEWALINTERVALSEC",
        LOCK_RENEWAL_INTERVAL_SEC.to_string(),
    );
    md.set("LEASETIMESEC", LEASE_TIME_SEC.to_string());
    md.set("IOOPTIMEOUTSEC", IO_OP_TIMEOUT_SEC.to_string());
    md.set("LEASERETRIES", LEASE_RETRIES.to_string());
    md.set(K_REMOTE_PATH, new.remote_path.clone());
    if new.version >= 5 {
        md.set(K_ALIGNMENT, new.alignment.to_string());
        md.set(K_BLOCK_SIZE, new.block_size.to_string());
    }
    md
}

/// Sanlock alignment for a block size and host count, as VDSM computes it:
/// 512-byte storage always uses 1 MiB; 4K storage needs 1-8 MiB.
pub fn alignment_for(block_size: u32, max_hosts: u32) -> Option<u64> {
    const MIB: u64 = 1 << 20;
    match block_size {
        512 => Some(MIB),
        4096 => match max_hosts {
            0..=250 => Some(MIB),
            251..=500 => Some(2 * MIB),
            501..=1000 => Some(4 * MIB),
            1001..=2000 => Some(8 * MIB),
            _ => None,
        },
        _ => None,
    }
}
