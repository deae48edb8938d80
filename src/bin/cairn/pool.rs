//! `cairn pool` and `cairn status`: the storage pool and the SPM role.

use super::*;

#[derive(Subcommand, Debug)]
pub(crate) enum PoolCmd {
    /// Pool metadata and member domains.
    Info,
    /// Create a pool with MASTER as its master domain.
    Create {
        master: String,
        #[arg(long, default_value = "cairn")]
        name: String,
        /// Other member domains (attached).
        #[arg(long = "domain")]
        domains: Vec<String>,
        /// Pool UUID [default: a new one].
        #[arg(long)]
        id: Option<String>,
    },
    /// Connect this host to a pool (another host may have created it).
    Connect {
        pool: String,
        master: String,
        /// This host's id in the pool (1-2000), unique per host.
        #[arg(long)]
        host_id: u32,
        #[arg(long, default_value_t = 1)]
        master_version: i64,
    },
    /// Disconnect this host from its pool (not while SPM).
    Disconnect {
        #[arg(long)]
        host_id: u32,
    },
    /// Rebuild a pool whose master is lost on a surviving domain (from a
    /// host not connected to it).
    ReconstructMaster {
        pool: String,
        master: String,
        #[arg(long)]
        host_id: u32,
        /// Must be newer than the master version the domain knows.
        #[arg(long)]
        master_version: i64,
        /// Other members: UUID or UUID:attached (default active).
        #[arg(long = "domain")]
        domains: Vec<String>,
    },
    /// Move the master role to another active domain (SPM only; waits for
    /// the task). Other hosts then follow with `pool refresh`.
    SwitchMaster {
        new_master: String,
        /// [default: the pool's master version + 1]
        #[arg(long)]
        master_version: Option<i64>,
    },
    /// Re-read the pool; with MASTER, follow a master that moved.
    Refresh {
        master: Option<String>,
        /// [default: what MASTER's metadata says]
        #[arg(long)]
        master_version: Option<i64>,
    },
    /// SPM role of this host.
    SpmStatus,
    /// Become SPM (waits for the task).
    SpmStart,
    /// Give up the SPM role.
    SpmStop,
}

pub(crate) fn pool_id(ctx: &Ctx) -> Res<String> {
    let pools = ctx
        .client
        .call("Host.getConnectedStoragePools", json!({}))?;
    pools
        .get(0)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| usage("this host is not connected to a storage pool"))
}

pub(crate) fn status(ctx: &Ctx) -> Res<()> {
    let pools = ctx
        .client
        .call("Host.getConnectedStoragePools", json!({}))?;
    let Some(pool) = pools.get(0).and_then(Value::as_str) else {
        let out = json!({"pool": null});
        print_value(ctx, &out, |_| println!("not connected to a storage pool"));
        return Ok(());
    };
    let info = ctx
        .client
        .call("StoragePool.getInfo", json!({"storagepoolID": pool}))?;
    let spm = ctx
        .client
        .call("StoragePool.getSpmStatus", json!({"storagepoolID": pool}))?;
    let out = json!({"pool": pool, "info": info["info"], "spm": spm, "domains": info["dominfo"]});
    print_value(ctx, &out, |o| {
        println!("pool    {} ({})", pool, s(&o["info"]["name"]));
        println!(
            "master  {} (version {})",
            s(&o["info"]["master_uuid"]),
            s(&o["info"]["version"])
        );
        println!(
            "spm     {} (host {}, lver {})",
            s(&o["spm"]["spmStatus"]),
            s(&o["spm"]["spmId"]),
            s(&o["spm"]["spmLver"])
        );
        let rows = o["domains"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(sd, d)| {
                        vec![
                            sd.clone(),
                            s(&d["status"]),
                            human_size(num(&d["disktotal"])),
                            human_size(num(&d["diskfree"])),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!();
        table(&["DOMAIN", "STATUS", "SIZE", "FREE"], rows);
    });
    Ok(())
}

pub(crate) fn pool(ctx: &Ctx, cmd: PoolCmd) -> Res<()> {
    match cmd {
        PoolCmd::Create {
            master,
            name,
            domains,
            id,
        } => {
            let sp = id.unwrap_or_else(new_uuid);
            let mut all = domains;
            all.push(master.clone());
            ctx.client.call(
                "StoragePool.create",
                json!({"storagepoolID": sp, "name": name, "masterSdUUID": master, "masterVersion": 1, "domainList": all}),
            )?;
            print_value(ctx, &json!({"storagepoolID": sp}), |_| {
                println!("pool {sp}")
            });
            return Ok(());
        }
        PoolCmd::Connect {
            pool,
            master,
            host_id,
            master_version,
        } => {
            ctx.client.call(
                "StoragePool.connect",
                json!({"storagepoolID": pool, "hostID": host_id, "scsiKey": "", "masterSdUUID": master, "masterVersion": master_version}),
            )?;
            done(
                ctx,
                json!({"storagepoolID": pool}),
                &format!("connected to pool {pool} as host {host_id}"),
            );
            return Ok(());
        }
        PoolCmd::ReconstructMaster {
            pool,
            master,
            host_id,
            master_version,
            domains,
        } => {
            let mut dict = serde_json::Map::new();
            for d in domains {
                let (id, status) = d.split_once(':').unwrap_or((&d, "active"));
                dict.insert(id.to_string(), json!(status));
            }
            dict.insert(master.clone(), json!("active"));
            ctx.client.call(
                "StoragePool.reconstructMaster",
                json!({"storagepoolID": pool, "hostId": host_id, "name": "cairn", "masterSdUUID": master,
                       "masterVersion": master_version, "domainDict": dict}),
            )?;
            done(
                ctx,
                json!({"storagepoolID": pool, "masterSdUUID": master}),
                &format!("pool {pool} rebuilt on master {master}"),
            );
            return Ok(());
        }
        _ => {}
    }
    let sp = pool_id(ctx)?;
    match cmd {
        PoolCmd::Create { .. } | PoolCmd::Connect { .. } | PoolCmd::ReconstructMaster { .. } => {
            unreachable!("handled above")
        }
        PoolCmd::Disconnect { host_id } => {
            ctx.client.call(
                "StoragePool.disconnect",
                json!({"storagepoolID": sp, "hostID": host_id, "scsiKey": ""}),
            )?;
            done(
                ctx,
                json!({"storagepoolID": sp}),
                &format!("disconnected from pool {sp}"),
            );
        }
        PoolCmd::Info => {
            let info = ctx
                .client
                .call("StoragePool.getInfo", json!({"storagepoolID": sp}))?;
            print_value(ctx, &info, |v| print_pairs(&v["info"]));
        }
        PoolCmd::SpmStatus => {
            let st = ctx
                .client
                .call("StoragePool.getSpmStatus", json!({"storagepoolID": sp}))?;
            print_value(ctx, &st, |v| {
                println!(
                    "{} (host {}, lver {})",
                    s(&v["spmStatus"]),
                    s(&v["spmId"]),
                    s(&v["spmLver"])
                )
            });
        }
        PoolCmd::SpmStart => {
            let t = ctx.client.call(
                "StoragePool.spmStart",
                json!({"storagepoolID": sp, "prevID": -1, "prevLver": "-1"}),
            )?;
            wait_task(ctx, &s(&t), "becoming SPM")?;
            print_value(ctx, &json!({"spm": true}), |_| println!("this host is SPM"));
        }
        PoolCmd::SpmStop => {
            ctx.client
                .call("StoragePool.spmStop", json!({"storagepoolID": sp}))?;
            done(ctx, json!({"spm": false}), "this host is no longer SPM");
        }
        PoolCmd::SwitchMaster {
            new_master,
            master_version,
        } => {
            let info = ctx
                .client
                .call("StoragePool.getInfo", json!({"storagepoolID": sp}))?;
            let old = s(&info["info"]["master_uuid"]);
            let version = match master_version {
                Some(v) => v,
                None => info["info"]["master_ver"].as_i64().unwrap_or(0) + 1,
            };
            let t = ctx.client.call(
                "StoragePool.switchMaster",
                json!({"storagepoolID": sp, "oldMasterUUID": old, "newMasterUUID": new_master, "masterVersion": version}),
            )?;
            wait_task(ctx, &s(&t), "switching the master")?;
            done(
                ctx,
                json!({"storagepoolID": sp, "masterSdUUID": new_master, "masterVersion": version}),
                &format!("master of pool {sp} is now {new_master} (version {version})"),
            );
        }
        PoolCmd::Refresh {
            master,
            master_version,
        } => {
            let (master, version) = match master {
                None => {
                    let info = ctx
                        .client
                        .call("StoragePool.getInfo", json!({"storagepoolID": sp}))?;
                    (
                        s(&info["info"]["master_uuid"]),
                        info["info"]["master_ver"].as_i64().unwrap_or(0),
                    )
                }
                Some(m) => {
                    let version = match master_version {
                        Some(v) => v,
                        None => ctx
                            .client
                            .call("StorageDomain.getInfo", json!({"storagedomainID": m}))?
                            ["master_ver"]
                            .as_i64()
                            .unwrap_or(0),
                    };
                    (m, version)
                }
            };
            ctx.client.call(
                "StoragePool.refresh",
                json!({"storagepoolID": sp, "masterSdUUID": master, "masterVersion": version}),
            )?;
            done(
                ctx,
                json!({"storagepoolID": sp, "masterSdUUID": master, "masterVersion": version}),
                &format!("pool {sp} refreshed from master {master} (version {version})"),
            );
        }
    }
    Ok(())
}
