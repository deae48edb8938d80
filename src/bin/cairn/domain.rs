//! `cairn domain`: storage domains.

use super::*;

#[derive(Subcommand, Debug)]
pub(crate) enum DomainCmd {
    /// Domains visible on the connected storage.
    List,
    /// Domain metadata.
    Info { domain: Option<String> },
    /// Create a data domain on connected storage.
    Create {
        /// The connection's path or mount source.
        remote_path: String,
        #[arg(long, default_value = "data")]
        name: String,
        #[arg(long = "type", default_value = "LOCALFS")]
        kind: String,
        #[arg(long, default_value_t = 5)]
        version: u32,
        /// 512, 4096 or 0 to detect.
        #[arg(long, default_value_t = 0)]
        block_size: u32,
        /// Domain UUID [default: a new one].
        #[arg(long)]
        id: Option<String>,
    },
    /// LUNs this host sees (for block domains), free or used.
    Luns,
    /// Create a block data domain (ISCSI or FCP) on LUNs: their volume
    /// group, then the domain in it.
    CreateBlock {
        /// GUIDs of the LUNs (see `cairn domain luns`).
        #[arg(required = true)]
        luns: Vec<String>,
        #[arg(long, default_value = "data")]
        name: String,
        #[arg(long = "type", default_value = "ISCSI")]
        kind: String,
        #[arg(long, default_value_t = 5)]
        version: u32,
        /// Domain UUID [default: a new one].
        #[arg(long)]
        id: Option<String>,
    },
    /// Grow a block domain onto more LUNs (SPM).
    Extend {
        domain: String,
        /// GUIDs of free LUNs (see `cairn domain luns`).
        #[arg(required = true)]
        luns: Vec<String>,
    },
    /// Give a block domain what its LUN gained on the storage (SPM).
    ResizeLun { domain: String, lun: String },
    /// A block domain's volume group and the LUNs under it.
    Vg { domain: String },
    /// Attach a domain to the connected pool (SPM).
    Attach { domain: String },
    /// Make an attached domain active (SPM).
    Activate { domain: String },
    /// Make an active domain attached only (SPM).
    Deactivate { domain: String },
    /// Detach an inactive domain from the pool (SPM).
    Detach {
        domain: String,
        #[arg(long)]
        force: bool,
    },
    /// Start monitoring a domain (on shared storage: join its lockspace).
    Monitor {
        domain: String,
        /// This host's id in the domain's lockspace.
        #[arg(long, default_value_t = 1)]
        host_id: u32,
    },
    /// Stop monitoring a domain.
    Unmonitor { domain: String },
    /// Health of the monitored domains.
    Health,
    /// Sanlock leases of a shared domain as stored: host ids and the
    /// reserved leases (whose owner is the SPM).
    Leases { domain: Option<String> },
    /// Erase a domain and all its data.
    Format {
        domain: String,
        #[arg(long)]
        auto_detach: bool,
    },
}

pub(crate) fn domain_id(ctx: &Ctx, given: Option<String>) -> Res<String> {
    match given {
        Some(d) => Ok(d),
        None => pool_and_domain(ctx, None).map(|(_, sd)| sd),
    }
}

/// The connected pool and a domain (the given one, or the pool's master).
pub(crate) fn pool_and_domain(ctx: &Ctx, given: Option<String>) -> Res<(String, String)> {
    let sp = pool_id(ctx)?;
    let sd = match given {
        Some(d) => d,
        None => {
            let info = ctx
                .client
                .call("StoragePool.getInfo", json!({"storagepoolID": sp}))?;
            info["info"]["master_uuid"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
    };
    Ok((sp, sd))
}

pub(crate) fn domain(ctx: &Ctx, cmd: DomainCmd) -> Res<()> {
    let membership = |verb: &str, sd: &str, extra: Value| -> Res<()> {
        let mut params = json!({"storagedomainID": sd, "storagepoolID": pool_id(ctx)?});
        for (k, v) in extra.as_object().expect("an object") {
            params[k] = v.clone();
        }
        ctx.client.call(verb, params)?;
        done(
            ctx,
            json!({"storagedomainID": sd}),
            &format!("{verb}: {sd}"),
        );
        Ok(())
    };
    match cmd {
        DomainCmd::Attach { domain } => membership("StorageDomain.attach", &domain, json!({}))?,
        DomainCmd::Activate { domain } => membership("StorageDomain.activate", &domain, json!({}))?,
        DomainCmd::Deactivate { domain } => {
            membership("StorageDomain.deactivate", &domain, json!({}))?
        }
        DomainCmd::Detach { domain, force } => {
            membership("StorageDomain.detach", &domain, json!({"force": force}))?
        }
        DomainCmd::Monitor { domain, host_id } => {
            ctx.client.call(
                "Host.startMonitoringDomain",
                json!({"sdUUID": domain, "hostID": host_id}),
            )?;
            done(
                ctx,
                json!({"sdUUID": domain}),
                &format!("monitoring {domain}"),
            );
        }
        DomainCmd::Unmonitor { domain } => {
            ctx.client
                .call("Host.stopMonitoringDomain", json!({"sdUUID": domain}))?;
            done(
                ctx,
                json!({"sdUUID": domain}),
                &format!("no longer monitoring {domain}"),
            );
        }
        DomainCmd::Leases { domain } => {
            let sd = domain_id(ctx, domain)?;
            let dump = ctx
                .client
                .call("StorageDomain.dump", json!({"sd_id": sd, "full": true}))?;
            let out = json!({"lockspace": dump["lockspace"], "leases": dump["leases"], "xleases": dump["xleases"]});
            print_value(ctx, &out, |v| {
                if v["lockspace"].is_null() {
                    println!("domain {sd} has no sanlock leases (LOCALFS keeps a host-local lock)");
                    return;
                }
                let rows = |key: &str| {
                    v[key]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|r| {
                            vec![
                                s(&r["offset"]),
                                s(&r["resource"]),
                                s(&r["own"]),
                                s(&r["gen"]),
                                s(&r["timestamp"]),
                                if r["lver"].is_null() {
                                    "-".into()
                                } else {
                                    s(&r["lver"])
                                },
                            ]
                        })
                        .collect()
                };
                let headers = ["OFFSET", "NAME", "OWNER", "GEN", "TIMESTAMP", "LVER"];
                println!("host ids (dom_md/ids):");
                table(&headers, rows("lockspace"));
                println!("\nreserved leases (dom_md/leases):");
                table(&headers, rows("leases"));
            });
        }
        DomainCmd::Health => {
            let stats = ctx.client.call("Host.getStorageRepoStats", json!({}))?;
            print_value(ctx, &stats, |v| {
                let rows = v
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(id, st)| {
                                vec![
                                    id.clone(),
                                    if st["valid"] == true {
                                        "valid"
                                    } else {
                                        "INVALID"
                                    }
                                    .into(),
                                    s(&st["code"]),
                                    format!("{} s", s(&st["delay"])),
                                    format!("{} s ago", s(&st["lastCheck"])),
                                    s(&st["acquired"]),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                table(
                    &["DOMAIN", "STATE", "CODE", "DELAY", "CHECKED", "HOST ID"],
                    rows,
                );
            });
        }
        DomainCmd::List => {
            let ids = ctx.client.call("Host.getStorageDomains", json!({}))?;
            let mut infos = Vec::new();
            for id in ids.as_array().cloned().unwrap_or_default() {
                let info = ctx
                    .client
                    .call("StorageDomain.getInfo", json!({"storagedomainID": id}))?;
                let stats = ctx
                    .client
                    .call("StorageDomain.getStats", json!({"storagedomainID": id}))?;
                infos.push(json!({"info": info, "stats": stats}));
            }
            let out = Value::Array(infos);
            print_value(ctx, &out, |v| {
                let rows = v
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|d| {
                                let i = &d["info"];
                                vec![
                                    s(&i["uuid"]),
                                    s(&i["name"]),
                                    s(&i["type"]),
                                    s(&i["role"]),
                                    s(&i["version"]),
                                    human_size(num(&d["stats"]["diskfree"])),
                                    s(&i["remotePath"]),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                table(
                    &["DOMAIN", "NAME", "TYPE", "ROLE", "V", "FREE", "PATH"],
                    rows,
                );
            });
        }
        DomainCmd::Info { domain } => {
            let sd = domain_id(ctx, domain)?;
            let info = ctx
                .client
                .call("StorageDomain.getInfo", json!({"storagedomainID": sd}))?;
            print_fields(ctx, &info);
        }
        DomainCmd::Create {
            remote_path,
            name,
            kind,
            version,
            block_size,
            id,
        } => {
            let sd = id.unwrap_or_else(new_uuid);
            ctx.client.call(
                "StorageDomain.create",
                json!({
                    "storagedomainID": sd, "domainType": kind.to_ascii_uppercase(), "typeArgs": remote_path,
                    "name": name, "domainClass": "Data", "version": version, "blockSize": block_size,
                }),
            )?;
            print_value(ctx, &json!({"storagedomainID": sd}), |_| println!("{sd}"));
        }
        DomainCmd::Extend { domain, luns } => membership(
            "StorageDomain.extend",
            &domain,
            json!({"devlist": luns, "force": false}),
        )?,
        DomainCmd::ResizeLun { domain, lun } => {
            let size = ctx.client.call(
                "StorageDomain.resizePV",
                json!({"storagedomainID": domain, "storagepoolID": pool_id(ctx)?, "guid": lun}),
            )?;
            done(
                ctx,
                json!({"storagedomainID": domain, "guid": lun, "size": size}),
                &format!(
                    "{lun} of {domain} now holds {}",
                    human_size(size.as_u64().unwrap_or(0))
                ),
            );
        }
        DomainCmd::Vg { domain } => {
            let info = ctx
                .client
                .call("StorageDomain.getInfo", json!({"storagedomainID": domain}))?;
            let Some(vg) = info["vguuid"].as_str() else {
                return Err(cairn::client::ClientError::Rpc {
                    code: 372,
                    message: format!("{domain} is not a block domain: it has no volume group"),
                });
            };
            let vg = ctx
                .client
                .call("LVMVolumeGroup.getInfo", json!({"lvmvolumegroupID": vg}))?;
            print_value(ctx, &vg, |v| {
                println!(
                    "volume group {} ({}): {}, {} free, {}",
                    s(&v["name"]),
                    s(&v["vgUUID"]),
                    human_size(s(&v["vgsize"]).parse().unwrap_or(0)),
                    human_size(s(&v["vgfree"]).parse().unwrap_or(0)),
                    s(&v["state"])
                );
                let rows = v["pvlist"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|p| {
                                vec![
                                    s(&p["GUID"]),
                                    s(&p["devtype"]),
                                    human_size(s(&p["capacity"]).parse().unwrap_or(0)),
                                    human_size(s(&p["devcapacity"]).parse().unwrap_or(0)),
                                    format!("{}/{}", s(&p["pe_alloc_count"]), s(&p["pe_count"])),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                table(
                    &["LUN", "TYPE", "PV SIZE", "LUN SIZE", "EXTENTS USED"],
                    rows,
                );
            });
        }
        DomainCmd::Luns => {
            let luns = ctx.client.call("Host.getDeviceList", json!({}))?;
            print_value(ctx, &luns, |v| {
                let rows = v
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|l| {
                                vec![
                                    s(&l["GUID"]),
                                    s(&l["devtype"]),
                                    human_size(s(&l["capacity"]).parse().unwrap_or(0)),
                                    s(&l["status"]),
                                    s(&l["vgUUID"]),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                table(&["GUID", "TYPE", "SIZE", "STATUS", "VG"], rows);
            });
        }
        DomainCmd::CreateBlock {
            luns,
            name,
            kind,
            version,
            id,
        } => {
            let sd = id.unwrap_or_else(new_uuid);
            let vg = ctx.client.call(
                "LVMVolumeGroup.create",
                json!({"name": sd, "devlist": luns, "force": false}),
            )?;
            ctx.client.call(
                "StorageDomain.create",
                json!({
                    "storagedomainID": sd, "domainType": kind.to_ascii_uppercase(), "typeArgs": vg,
                    "name": name, "domainClass": "Data", "version": version, "blockSize": 512,
                }),
            )?;
            print_value(ctx, &json!({"storagedomainID": sd, "vgUUID": vg}), |_| {
                println!("{sd}")
            });
        }
        DomainCmd::Format {
            domain,
            auto_detach,
        } => {
            ctx.client.call(
                "StorageDomain.format",
                json!({"storagedomainID": domain, "autoDetach": auto_detach}),
            )?;
        }
    }
    Ok(())
}
