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
