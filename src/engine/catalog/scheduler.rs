//! Where a new volume goes: Cinder's default filters (availability zone,
//! capacity with over-subscription for thin domains, capabilities against
//! the type's extra specs) and its capacity weigher, over the pool's
//! active data domains.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::records::TypeRecord;
use crate::types::Uuid;

/// Cinder's default for thin back ends (`max_over_subscription_ratio`).
pub const MAX_OVER_SUBSCRIPTION: f64 = 20.0;
/// The one availability zone (Cinder's default name).
pub const AVAILABILITY_ZONE: &str = "nova";

/// A domain as Cinder's scheduler sees a back-end pool.
#[derive(Debug, Clone)]
pub struct BackendPool {
    pub domain: Uuid,
    /// The domain's name (its description).
    pub name: String,
    /// "file" or "block": also the pool's `volume_backend_name`.
    pub kind: &'static str,
    pub storage_protocol: &'static str,
    pub total_gib: f64,
    pub free_gib: f64,
    /// What the catalog's volumes on it may grow to.
    pub provisioned_gib: f64,
    pub volumes: u64,
    /// How many times its size thin volumes may promise.
    pub over_subscription: f64,
}

impl BackendPool {
    /// What extra specs are matched against, and what
    /// `scheduler-stats/get_pools` reports.
    pub fn capabilities(&self) -> Value {
        json!({
            "pool_name": self.domain.to_string(),
            "domain_name": self.name,
            "domain_kind": self.kind,
            "volume_backend_name": self.kind,
            "vendor_name": "Cairn",
            "driver_version": env!("CARGO_PKG_VERSION"),
            "storage_protocol": self.storage_protocol,
            "total_capacity_gb": round2(self.total_gib),
            "free_capacity_gb": round2(self.free_gib),
            "allocated_capacity_gb": round2(self.provisioned_gib),
            "provisioned_capacity_gb": round2(self.provisioned_gib),
            "reserved_percentage": 0,
            "max_over_subscription_ratio": self.over_subscription,
            "thin_provisioning_support": true,
            "thick_provisioning_support": true,
            "QoS_support": false,
            "multiattach": false,
            "online_extend_support": false,
            "sparse_copy_volume": true,
            "total_volumes": self.volumes,
            "backend_state": "up",
        })
    }

    fn thin_free(&self) -> f64 {
        self.total_gib * self.over_subscription - self.provisioned_gib
    }

    fn thick_free(&self) -> f64 {
        self.free_gib.min(self.total_gib - self.provisioned_gib)
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The chosen domain.
#[derive(Debug, Clone)]
pub struct Placement {
    pub domain: Uuid,
    pub thick: bool,
}

/// Picks the domain for `size` GiB of type `vtype` in zone `zone`, or says
/// why none fits (Cinder's "No valid backend was found").
pub fn place(
    pools: &[BackendPool],
    vtype: &TypeRecord,
    size: u64,
    zone: Option<&str>,
) -> Result<Placement, String> {
    let thick = is_thick(&vtype.extra_specs);
    if let Some(zones) = vtype.extra_specs.get("RESKEY:availability_zones") {
        if !zones.split(',').any(|z| z.trim() == AVAILABILITY_ZONE) {
            return Err(format!(
                "No valid backend was found: the type's availability zones ({zones}) do not include {AVAILABILITY_ZONE:?}"
            ));
        }
    }
    if let Some(z) = zone.filter(|z| *z != AVAILABILITY_ZONE) {
        return Err(format!(
            "No valid backend was found: availability zone {z:?} does not exist (this pool's is {AVAILABILITY_ZONE:?})"
        ));
    }
    let mut reasons = Vec::new();
    let mut best: Option<(&BackendPool, f64)> = None;
    for pool in pools {
        if let Err(why) = capabilities_match(&pool.capabilities(), &vtype.extra_specs) {
            reasons.push(format!("{}: {why}", pool.domain));
            continue;
        }
        let free = if thick {
            pool.thick_free()
        } else {
            pool.thin_free()
        };
        if free < size as f64 || pool.total_gib <= 0.0 {
            reasons.push(format!(
                "{}: {:.1} GiB free for {} volumes, {size} GiB asked",
                pool.domain,
                free.max(0.0),
                if thick { "thick" } else { "thin" }
            ));
            continue;
        }
        if best.is_none_or(|(_, w)| free > w) {
            best = Some((pool, free));
        }
    }
    match best {
        Some((pool, _)) => Ok(Placement {
            domain: pool.domain,
            thick,
        }),
        None if pools.is_empty() => {
            Err("No valid backend was found: the pool has no active data domain".into())
        }
        None => Err(format!(
            "No valid backend was found: {}",
            reasons.join("; ")
        )),
    }
}

pub(super) fn is_thick(specs: &BTreeMap<String, String>) -> bool {
    specs
        .get("provisioning:type")
        .is_some_and(|v| v.trim() == "thick")
}

/// Cinder's CapabilitiesFilter: every extra spec without a scope, or
/// scoped `capabilities:`, must match the capability of that name.
fn capabilities_match(caps: &Value, specs: &BTreeMap<String, String>) -> Result<(), String> {
    for (key, want) in specs {
        let name = match key.split_once(':') {
            None => key.as_str(),
            Some(("capabilities", rest)) => rest,
            Some(_) => continue,
        };
        let Some(have) = caps.get(name) else {
            return Err(format!("no capability {name:?} (extra spec {key})"));
        };
        let have = match have {
            Value::String(s) => s.clone(),
            Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
            other => other.to_string(),
        };
        if !spec_matches(&have, want) {
            return Err(format!("{name} is {have:?}, the type wants {want:?}"));
        }
    }
    Ok(())
}

/// Cinder's extra-spec operators (`extra_specs_ops.py`).
pub fn spec_matches(have: &str, want: &str) -> bool {
    let words: Vec<&str> = want.split_whitespace().collect();
    let num = |s: &str| s.parse::<f64>().ok();
    match words.as_slice() {
        ["<is>", v] => have.eq_ignore_ascii_case(v),
        ["<in>", v] => have.contains(v),
        ["<all-in>", rest @ ..] => rest.iter().all(|v| have.contains(v)),
        [first, ..] if *first == "<or>" || words.contains(&"<or>") => want
            .split("<or>")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .any(|v| v == have),
        [op, v] if ["==", "!=", ">=", "<=", "="].contains(op) => match (num(have), num(v)) {
            (Some(h), Some(w)) => match *op {
                "==" => h == w,
                "!=" => h != w,
                "<=" => h <= w,
                // Cinder's "=" means at least.
                _ => h >= w,
            },
            _ => false,
        },
        [op, v] if op.starts_with("s") && op.len() >= 2 => match &op[1..] {
            "==" => have == *v,
            "!=" => have != *v,
            "<" => have < *v,
            "<=" => have <= *v,
            ">" => have > *v,
            ">=" => have >= *v,
            _ => have == want,
        },
        _ => have == want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(kind: &'static str, total: f64, free: f64, provisioned: f64) -> BackendPool {
        BackendPool {
            domain: Uuid::new_v4(),
            name: format!("{kind} domain"),
            kind,
            storage_protocol: "nfs",
            total_gib: total,
            free_gib: free,
            provisioned_gib: provisioned,
            volumes: 0,
            over_subscription: MAX_OVER_SUBSCRIPTION,
        }
    }

    fn vtype(specs: &[(&str, &str)]) -> TypeRecord {
        TypeRecord {
            id: Uuid::new_v4(),
            name: "t".into(),
            description: None,
            is_public: true,
            extra_specs: specs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            projects: Vec::new(),
            qos_specs_id: None,
            created_at: String::new(),
        }
    }

    #[test]
    fn extra_spec_operators_follow_cinder() {
        assert!(spec_matches("True", "<is> True"));
        assert!(spec_matches("block", "block"));
        assert!(!spec_matches("file", "block"));
        assert!(spec_matches("iSCSI", "<in> SCSI"));
        assert!(spec_matches("file", "<or> block <or> file"));
        assert!(spec_matches("100", ">= 50"));
        assert!(spec_matches("100", "= 50"));
        assert!(!spec_matches("10", "= 50"));
        assert!(spec_matches("abc", "s< abd"));
    }

    #[test]
    fn the_weigher_takes_the_most_virtual_free_space_and_types_pin_a_kind() {
        let small = pool("file", 10.0, 10.0, 0.0);
        let big = pool("block", 100.0, 100.0, 0.0);
        let pools = [small.clone(), big.clone()];
        assert_eq!(
            place(&pools, &vtype(&[]), 1, None).unwrap().domain,
            big.domain
        );
        let file = vtype(&[("volume_backend_name", "file")]);
        assert_eq!(place(&pools, &file, 1, None).unwrap().domain, small.domain);
        let named = vtype(&[("capabilities:pool_name", &small.domain.to_string())]);
        assert_eq!(place(&pools, &named, 1, None).unwrap().domain, small.domain);
        let none = vtype(&[("volume_backend_name", "rbd")]);
        assert!(place(&pools, &none, 1, None)
            .unwrap_err()
            .contains("No valid backend"));
        // Vendor scopes are not the scheduler's.
        let vendor = vtype(&[("cairn:anything", "x")]);
        assert!(place(&pools, &vendor, 1, None).is_ok());
    }

    #[test]
    fn thin_domains_are_over_subscribed_and_thick_ones_are_not() {
        let p = pool("file", 10.0, 4.0, 8.0);
        let pools = [p];
        assert!(place(&pools, &vtype(&[]), 150, None).is_ok());
        assert!(place(&pools, &vtype(&[]), 193, None).is_err());
        let thick = vtype(&[("provisioning:type", "thick")]);
        assert!(place(&pools, &thick, 2, None).unwrap().thick);
        assert!(place(&pools, &thick, 3, None).is_err());
        assert!(place(&pools, &vtype(&[]), 1, Some("elsewhere")).is_err());
    }
}
