//! `cairn volume`: volumes.

use super::*;

#[derive(Subcommand, Debug)]
pub(crate) enum VolumeCmd {
    /// Create a volume (a new image, or a snapshot with --parent).
    Create {
        /// Virtual size: bytes or with a suffix (K, M, G, T; powers of 1024).
        #[arg(long)]
        size: String,
        /// cow or raw.
        #[arg(long, default_value = "cow")]
        format: String,
        /// sparse or preallocated.
        #[arg(long, default_value = "sparse")]
        allocation: String,
        /// Image UUID [default: a new image].
        #[arg(long)]
        image: Option<String>,
        /// Volume UUID [default: a new one].
        #[arg(long)]
        volume: Option<String>,
        /// Parent volume in the same image: creates a snapshot.
        #[arg(long)]
        parent: Option<String>,
        /// A template to clone thin into a new image: IMAGE/VOLUME.
        #[arg(long, conflicts_with = "parent")]
        template: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        domain: Option<String>,
        /// Wait for the task, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// Volumes of a domain with their metadata.
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    /// Volume metadata and sizes.
    Info {
        image: String,
        volume: String,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Delete a volume (a leaf, or a base with no children).
    Delete {
        image: String,
        volume: String,
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        wait: bool,
        /// Overwrite the data with zeros before it goes.
        #[arg(long)]
        post_zero: bool,
    },
    /// Grow a volume's virtual size.
    Extend {
        image: String,
        volume: String,
        /// New virtual size (K, M, G, T suffixes).
        #[arg(long)]
        size: String,
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    /// Give a thin volume on a block domain more room (its LV) on this
    /// host, as a guest's writes need; up to 1.1 times its virtual size.
    Grow {
        image: String,
        volume: String,
        /// Room wanted (K, M, G, T suffixes).
        #[arg(long)]
        size: String,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Merge a volume into its parent and remove it (cold: the image must
    /// not be prepared). Runs prepareMerge, SDM.merge and finalizeMerge.
    Merge {
        image: String,
        /// The volume merged away.
        volume: String,
        /// Carry its bitmaps into the parent (qcow2 parents only).
        #[arg(long)]
        bitmaps: bool,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Make a base volume a template (SHARED) that new images can clone.
    MakeTemplate {
        image: String,
        volume: String,
        #[arg(long)]
        domain: Option<String>,
    },
}

/// A query about one volume (`Volume.getInfo`, `Volume.getSize`).
pub(crate) fn volume_query(
    ctx: &Ctx,
    method: &str,
    (sp, sd, image, volume): (&str, &str, &str, &str),
) -> Res<Value> {
    ctx.client.call(
        method,
        json!({"volumeID": volume, "storagepoolID": sp, "storagedomainID": sd, "imageID": image}),
    )
}

pub(crate) fn depth(all: &[Value], v: &Value) -> usize {
    let mut d = 0;
    let mut parent = s(&v["parent"]);
    while let Some(p) = all.iter().find(|x| s(&x["uuid"]) == parent) {
        d += 1;
        parent = s(&p["parent"]);
        if d > all.len() {
            break;
        }
    }
    d
}

pub(crate) fn volume_table(v: &Value) {
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    vec![
                        s(&i["image"]),
                        s(&i["uuid"]),
                        s(&i["format"]),
                        s(&i["type"]),
                        s(&i["voltype"]),
                        s(&i["legality"]),
                        human_size(num(&i["capacity"])),
                        human_size(num(&i["truesize"])),
                        s(&i["description"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "IMAGE",
            "VOLUME",
            "FORMAT",
            "ALLOC",
            "ROLE",
            "LEGALITY",
            "SIZE",
            "USED",
            "DESCRIPTION",
        ],
        rows,
    );
}

pub(crate) fn volume(ctx: &Ctx, cmd: VolumeCmd) -> Res<()> {
    match cmd {
        VolumeCmd::Create {
            size,
            format,
            allocation,
            image,
            volume,
            parent,
            template,
            description,
            domain,
            wait,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let size = parse_size(&size)?;
            let img = match (&image, &parent) {
                (Some(i), _) => i.clone(),
                (None, Some(_)) => return Err(usage("--parent needs --image")),
                (None, None) => new_uuid(),
            };
            let vol = volume.unwrap_or_else(new_uuid);
            let blank = "00000000-0000-0000-0000-000000000000".to_string();
            let (src_img, src_vol) = match (&parent, &template) {
                (Some(p), _) => (img.clone(), p.clone()),
                (None, Some(t)) => {
                    let (ti, tv) = t
                        .split_once('/')
                        .ok_or_else(|| usage("--template takes IMAGE/VOLUME"))?;
                    (ti.to_string(), tv.to_string())
                }
                (None, None) => (blank.clone(), blank),
            };
            let t = ctx.client.call(
                "Volume.create",
                json!({
                    "volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img,
                    "size": size.to_string(), "volFormat": format.to_ascii_uppercase(),
                    "preallocate": allocation.to_ascii_uppercase(), "diskType": "DATA", "desc": description,
                    "srcImgUUID": src_img, "srcVolUUID": src_vol,
                }),
            )?;
            let id = s(&t);
            if wait {
                wait_task(ctx, &id, "creating volume")?;
            }
            let out = json!({"imageID": img, "volumeID": vol, "taskID": id});
            print_value(ctx, &out, |_| {
                println!("image   {img}\nvolume  {vol}");
                if !wait {
                    println!("task    {id}");
                }
            });
        }
        VolumeCmd::List { domain } => {
            let sd = domain_id(ctx, domain)?;
            let dump = ctx
                .client
                .call("StorageDomain.dump", json!({"sd_id": sd}))?;
            let vols: Vec<Value> = dump["volumes"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(id, v)| {
                            let mut v = v.clone();
                            v["uuid"] = json!(id);
                            v
                        })
                        .collect()
                })
                .unwrap_or_default();
            let out = Value::Array(vols);
            print_value(ctx, &out, volume_table);
        }
        VolumeCmd::Info {
            image,
            volume,
            domain,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let info = volume_query(ctx, "Volume.getInfo", (&sp, &sd, &image, &volume))?;
            print_fields(ctx, &info);
        }
        VolumeCmd::Delete {
            image,
            volume,
            domain,
            wait,
            post_zero,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let t = ctx.client.call(
                "Volume.delete",
                json!({"volumeID": volume, "storagepoolID": sp, "storagedomainID": sd, "imageID": image, "postZero": post_zero, "force": false}),
            )?;
            finish_task(ctx, &t, wait, "deleting volume")?;
        }
        VolumeCmd::Extend {
            image,
            volume,
            size,
            domain,
            wait,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let size = parse_size(&size)?;
            let t = ctx.client.call(
                "Volume.extendSize",
                json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": image, "volumeID": volume, "newSize": size.to_string()}),
            )?;
            finish_task(ctx, &t, wait, "extending volume")?;
        }
        VolumeCmd::Grow {
            image,
            volume,
            size,
            domain,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let size = parse_size(&size)?;
            let out = ctx.client.call(
                "Volume.requestExtend",
                json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": image, "volumeID": volume, "newSize": size.to_string()}),
            )?;
            print_value(ctx, &out, |o| match o["note"].as_str() {
                Some(note) => println!("{}: {note}", human_size(num(&o["size"]))),
                None => println!(
                    "grown to {} in {:.0} ms",
                    human_size(num(&o["size"])),
                    o["elapsed_ms"].as_f64().unwrap_or(0.0)
                ),
            });
        }
        VolumeCmd::Merge {
            image,
            volume,
            bitmaps,
            domain,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let info = volume_query(ctx, "Volume.getInfo", (&sp, &sd, &image, &volume))?;
            let base = s(&info["parent"]);
            let sc = json!({"sd_id": sd, "img_id": image, "top_id": volume, "base_id": base});
            let t = ctx.client.call(
                "StoragePool.prepareMerge",
                json!({"storagepoolID": sp, "subchainInfo": sc}),
            )?;
            wait_task(ctx, &s(&t), "preparing the merge")?;
            run_job(
                ctx,
                "SDM.merge",
                json!({"subchain_info": sc, "merge_bitmaps": bitmaps}),
                "merging",
            )?;
            let t = ctx.client.call(
                "StoragePool.finalizeMerge",
                json!({"storagepoolID": sp, "subchainInfo": sc}),
            )?;
            wait_task(ctx, &s(&t), "finalizing the merge")?;
            let out = json!({"imageID": image, "merged": volume, "into": base});
            print_value(ctx, &out, |_| println!("merged {volume} into {base}"));
        }
        VolumeCmd::MakeTemplate {
            image,
            volume,
            domain,
        } => {
            let sd = domain_id(ctx, domain)?;
            let status = run_job(
                ctx,
                "SDM.update_volume",
                json!({"vol_info": {"sd_id": sd, "img_id": image, "vol_id": volume}, "vol_attr": {"type": "SHARED"}}),
                "making a template",
            )?;
            print_value(ctx, &status, |_| {
                println!("{image}/{volume} is now a template")
            });
        }
    }
    Ok(())
}
