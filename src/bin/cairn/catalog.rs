//! `cairn type` and `cairn qos`: the pool catalog's volume types and QoS
//! specs, which the Cinder face serves to OpenStack clients.

use super::*;

#[derive(Subcommand, Debug)]
pub(crate) enum TypeCmd {
    /// Volume types and their extra specs.
    List,
    /// A new volume type: cairn type create gold --spec volume_backend_name=block
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Only for the projects it is shared with.
        #[arg(long)]
        private: bool,
        /// An extra spec KEY=VALUE (repeatable).
        #[arg(long = "spec", value_name = "KEY=VALUE")]
        specs: Vec<String>,
    },
    /// Set extra specs of a type (name or id).
    Set {
        r#type: String,
        #[arg(value_name = "KEY=VALUE", required = true)]
        specs: Vec<String>,
    },
    /// Remove extra specs of a type.
    Unset {
        r#type: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    Delete {
        r#type: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum QosCmd {
    /// QoS specs and the types they are associated with.
    List,
    /// New QoS specs: cairn qos create fast --consumer front-end total_iops_sec=500
    Create {
        name: String,
        /// front-end, back-end (default) or both.
        #[arg(long)]
        consumer: Option<String>,
        #[arg(value_name = "KEY=VALUE")]
        specs: Vec<String>,
    },
    /// Set keys of QoS specs (by id or name).
    Set {
        qos: String,
        #[arg(value_name = "KEY=VALUE", required = true)]
        specs: Vec<String>,
    },
    /// Remove keys of QoS specs.
    Unset {
        qos: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Associate QoS specs with a volume type (a type has at most one).
    Associate {
        qos: String,
        r#type: String,
    },
    Disassociate {
        qos: String,
        r#type: String,
    },
    /// Delete QoS specs; --force also when types use them.
    Delete {
        qos: String,
        #[arg(long)]
        force: bool,
    },
}

fn pairs(items: &[String]) -> Res<Value> {
    let mut m = serde_json::Map::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| usage(format!("{item:?} is not KEY=VALUE")))?;
        m.insert(k.to_string(), json!(v));
    }
    Ok(Value::Object(m))
}

fn specs_text(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", s(v)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

pub(crate) fn volume_type(ctx: &Ctx, cmd: TypeCmd) -> Res<()> {
    match cmd {
        TypeCmd::List => {
            let types = ctx.client.call("VolumeType.list", json!({}))?;
            print_value(ctx, &types, |v| {
                let rows = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        vec![
                            s(&t["name"]),
                            s(&t["id"]),
                            if t["is_public"] == true {
                                "public"
                            } else {
                                "private"
                            }
                            .into(),
                            specs_text(&t["extra_specs"]),
                        ]
                    })
                    .collect();
                table(&["NAME", "ID", "ACCESS", "EXTRA SPECS"], rows);
            });
        }
        TypeCmd::Create {
            name,
            description,
            private,
            specs,
        } => {
            let t = ctx.client.call(
                "VolumeType.create",
                json!({"name": name, "description": description, "isPublic": !private, "extraSpecs": pairs(&specs)?}),
            )?;
            done(
                ctx,
                t.clone(),
                &format!("type {} {}", s(&t["name"]), s(&t["id"])),
            );
        }
        TypeCmd::Set { r#type, specs } => {
            let t = ctx.client.call(
                "VolumeType.update",
                json!({"type": r#type, "setSpecs": pairs(&specs)?}),
            )?;
            done(
                ctx,
                t.clone(),
                &format!("{}: {}", s(&t["name"]), specs_text(&t["extra_specs"])),
            );
        }
        TypeCmd::Unset { r#type, keys } => {
            let t = ctx.client.call(
                "VolumeType.update",
                json!({"type": r#type, "unsetSpecs": keys}),
            )?;
            done(
                ctx,
                t.clone(),
                &format!("{}: {}", s(&t["name"]), specs_text(&t["extra_specs"])),
            );
        }
        TypeCmd::Delete { r#type } => {
            ctx.client
                .call("VolumeType.delete", json!({"type": r#type}))?;
            done(
                ctx,
                json!(true),
                &format!("type {type} deleted", type = r#type),
            );
        }
    }
    Ok(())
}

/// QoS specs by id or name.
fn qos_id(ctx: &Ctx, key: &str) -> Res<String> {
    if cairn::types::parse_uuid(key).is_some() {
        return Ok(key.to_string());
    }
    let all = ctx.client.call("QosSpecs.list", json!({}))?;
    all.as_array()
        .into_iter()
        .flatten()
        .find(|q| q["name"] == key)
        .map(|q| s(&q["id"]))
        .ok_or_else(|| usage(format!("no QoS specs named {key:?}")))
}

pub(crate) fn qos(ctx: &Ctx, cmd: QosCmd) -> Res<()> {
    match cmd {
        QosCmd::List => {
            let specs = ctx.client.call("QosSpecs.list", json!({}))?;
            let types = ctx.client.call("VolumeType.list", json!({}))?;
            print_value(ctx, &specs, |v| {
                let rows = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|q| {
                        let users: Vec<String> = types
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|t| t["qos_specs_id"] == q["id"])
                            .map(|t| s(&t["name"]))
                            .collect();
                        vec![
                            s(&q["name"]),
                            s(&q["id"]),
                            s(&q["consumer"]),
                            specs_text(&q["specs"]),
                            users.join(","),
                        ]
                    })
                    .collect();
                table(&["NAME", "ID", "CONSUMER", "SPECS", "TYPES"], rows);
            });
        }
        QosCmd::Create {
            name,
            consumer,
            specs,
        } => {
            let q = ctx.client.call(
                "QosSpecs.create",
                json!({"name": name, "consumer": consumer, "specs": pairs(&specs)?}),
            )?;
            done(
                ctx,
                q.clone(),
                &format!("qos {} {}", s(&q["name"]), s(&q["id"])),
            );
        }
        QosCmd::Set { qos, specs } => {
            let qos = qos_id(ctx, &qos)?;
            let q = ctx.client.call(
                "QosSpecs.update",
                json!({"qosID": qos, "set": pairs(&specs)?}),
            )?;
            done(
                ctx,
                q.clone(),
                &format!("{}: {}", s(&q["name"]), specs_text(&q["specs"])),
            );
        }
        QosCmd::Unset { qos, keys } => {
            let qos = qos_id(ctx, &qos)?;
            let q = ctx
                .client
                .call("QosSpecs.update", json!({"qosID": qos, "unset": keys}))?;
            done(
                ctx,
                q.clone(),
                &format!("{}: {}", s(&q["name"]), specs_text(&q["specs"])),
            );
        }
        QosCmd::Associate { qos, r#type } => {
            let qos = qos_id(ctx, &qos)?;
            ctx.client.call(
                "QosSpecs.associate",
                json!({"qosID": qos, "type": r#type, "associate": true}),
            )?;
            done(
                ctx,
                json!(true),
                &format!("qos {qos} associated with {type}", type = r#type),
            );
        }
        QosCmd::Disassociate { qos, r#type } => {
            let qos = qos_id(ctx, &qos)?;
            ctx.client.call(
                "QosSpecs.associate",
                json!({"qosID": qos, "type": r#type, "associate": false}),
            )?;
            done(
                ctx,
                json!(true),
                &format!("qos {qos} no longer associated with {type}", type = r#type),
            );
        }
        QosCmd::Delete { qos, force } => {
            let qos = qos_id(ctx, &qos)?;
            ctx.client
                .call("QosSpecs.delete", json!({"qosID": qos, "force": force}))?;
            done(ctx, json!(true), &format!("qos {qos} deleted"));
        }
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub(crate) enum BackupCmd {
    /// Backups (of one volume with --volume).
    List {
        #[arg(long)]
        volume: Option<String>,
    },
    Show {
        backup: String,
    },
    /// Back up a catalog volume (or one of its snapshots); waits for it.
    Create {
        volume: String,
        /// Only what changed since the volume's latest backup.
        #[arg(long)]
        incremental: bool,
        #[arg(long)]
        snapshot: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Return at once instead of waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Restore into a new volume, or over an available --volume; waits.
    Restore {
        backup: String,
        #[arg(long)]
        volume: Option<String>,
        /// The new volume's name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete a backup; --force also stops one being made.
    Delete {
        backup: String,
        #[arg(long)]
        force: bool,
    },
    /// Print a backup's record (Cinder's export_record): keep it to
    /// import the backup where its files are reached.
    Export {
        backup: String,
    },
    /// Make the backup a record describes one of --project's again; its
    /// files must be on this pool's backup target.
    Import {
        /// The record, as `export` printed it.
        url: String,
        #[arg(long)]
        project: String,
        #[arg(long, default_value = cairn::engine::catalog::BACKUP_SERVICE)]
        service: String,
    },
}

fn backup_line(b: &Value) -> String {
    let kind = if b["parent_id"].is_null() {
        "full"
    } else {
        "incremental"
    };
    format!(
        "backup {} of volume {}: {} ({kind}, {} objects, {} read, {} stored)",
        s(&b["id"]),
        s(&b["volume_id"]),
        s(&b["status"]),
        s(&b["object_count"]),
        human_size(b["read_bytes"].as_u64().unwrap_or(0)),
        human_size(b["stored_bytes"].as_u64().unwrap_or(0)),
    )
}

/// Polls `get` until `busy` says the work is over; returns the last value.
fn wait_until(
    ctx: &Ctx,
    what: &str,
    get: impl Fn() -> Res<Value>,
    busy: impl Fn(&Value) -> bool,
) -> Res<Value> {
    let bar = (!ctx.json).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(what.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    loop {
        let v = get()?;
        if !busy(&v) {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return Ok(v);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

pub(crate) fn backup(ctx: &Ctx, cmd: BackupCmd) -> Res<()> {
    let get = |id: &str| ctx.client.call("Backup.get", json!({"backupID": id}));
    match cmd {
        BackupCmd::List { volume } => {
            let all = ctx
                .client
                .call("Backup.list", json!({"volumeID": volume}))?;
            print_value(ctx, &all, |v| {
                let rows = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        vec![
                            s(&b["id"]),
                            s(&b["volume_id"]),
                            s(&b["status"]),
                            if b["parent_id"].is_null() {
                                "full"
                            } else {
                                "incremental"
                            }
                            .into(),
                            s(&b["created_at"]),
                            s(&b["name"]),
                        ]
                    })
                    .collect();
                table(&["ID", "VOLUME", "STATUS", "KIND", "CREATED", "NAME"], rows);
            });
        }
        BackupCmd::Show { backup } => {
            let b = get(&backup)?;
            print_value(ctx, &b, |b| println!("{}", backup_line(b)));
        }
        BackupCmd::Create {
            volume,
            incremental,
            snapshot,
            name,
            description,
            no_wait,
        } => {
            let b = ctx.client.call(
                "Backup.create",
                json!({"volumeID": volume, "snapshotID": snapshot, "name": name,
                       "description": description, "incremental": incremental}),
            )?;
            let id = s(&b["id"]);
            let b = if no_wait {
                b
            } else {
                wait_until(
                    ctx,
                    "backing up",
                    || get(&id),
                    |b| b["status"] == "creating",
                )?
            };
            if b["status"] == "error" {
                return Err(usage(format!(
                    "backup {id} failed: {}",
                    s(&b["fail_reason"])
                )));
            }
            done(ctx, b.clone(), &backup_line(&b));
        }
        BackupCmd::Restore {
            backup,
            volume,
            name,
            no_wait,
        } => {
            let v = ctx.client.call(
                "Backup.restore",
                json!({"backupID": backup, "volumeID": volume, "name": name}),
            )?;
            let id = s(&v["id"]);
            if !no_wait {
                let b = wait_until(
                    ctx,
                    "restoring",
                    || get(&backup),
                    |b| b["status"] == "restoring",
                )?;
                if !b["restore_error"].is_null() {
                    return Err(usage(format!("restore failed {}", s(&b["restore_error"]))));
                }
            }
            done(
                ctx,
                v,
                &format!("backup {backup} restored into volume {id}"),
            );
        }
        BackupCmd::Export { backup } => {
            let r = ctx
                .client
                .call("Backup.export", json!({"backupID": backup}))?;
            print_value(ctx, &r, |r| println!("{}", s(&r["backupURL"])));
        }
        BackupCmd::Import {
            url,
            project,
            service,
        } => {
            let b = ctx.client.call(
                "Backup.import",
                json!({"backupURL": url, "project": project, "backupService": service}),
            )?;
            done(ctx, b.clone(), &backup_line(&b));
        }
        BackupCmd::Delete { backup, force } => {
            ctx.client
                .call("Backup.delete", json!({"backupID": backup, "force": force}))?;
            done(
                ctx,
                json!(true),
                &format!("backup {backup} is being deleted"),
            );
        }
    }
    Ok(())
}
