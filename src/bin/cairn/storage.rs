//! `cairn storage`: storage connections.

use super::*;

#[derive(Subcommand, Debug)]
pub(crate) enum StorageCmd {
    /// Connect storage: a local directory, or a mountable file system.
    Connect(ConnArgs),
    /// Disconnect storage (unmounts).
    Disconnect(ConnArgs),
}

#[derive(Args, Debug)]
pub(crate) struct ConnArgs {
    /// LOCALFS, POSIXFS, NFS or GLUSTERFS.
    #[arg(long = "type", default_value = "LOCALFS")]
    kind: String,
    /// Path (LOCALFS) or mount source (device, server:/export).
    spec: String,
    /// File system type for POSIXFS (xfs, ext4, ...).
    #[arg(long)]
    vfs_type: Option<String>,
    /// Mount options.
    #[arg(long)]
    options: Option<String>,
}

pub(crate) fn storage(ctx: &Ctx, cmd: StorageCmd) -> Res<()> {
    let (verb, a) = match cmd {
        StorageCmd::Connect(a) => ("StoragePool.connectStorageServer", a),
        StorageCmd::Disconnect(a) => ("StoragePool.disconnectStorageServer", a),
    };
    let mut conn = json!({"id": new_uuid(), "connection": a.spec});
    if let Some(t) = a.vfs_type {
        conn["vfs_type"] = json!(t);
    }
    if let Some(o) = a.options {
        conn["mnt_options"] = json!(o);
    }
    let params = json!({
        "storagepoolID": "00000000-0000-0000-0000-000000000000",
        "domainType": a.kind.to_ascii_uppercase(),
        "connectionParams": [conn],
    });
    let res = ctx.client.call(verb, params)?;
    let code = res[0]["status"].as_i64().unwrap_or(-1);
    print_value(ctx, &res, |_| {
        if code == 0 {
            println!("ok");
        }
    });
    if code != 0 {
        return Err(ClientError::Rpc {
            code,
            message: format!("{verb} failed (see cairnd's log for details)"),
        });
    }
    Ok(())
}
