//! `cairn image`: images, and upload/download through transfer tickets.

use super::*;

#[derive(Subcommand, Debug)]
pub(crate) enum ImageCmd {
    /// Images of a domain.
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    /// Volumes of an image, base first.
    Show {
        image: String,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Delete an image and all its volumes.
    Delete {
        image: String,
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    /// Make an image usable by a VM; prints the path to open.
    Prepare {
        image: String,
        volume: String,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Upload a local file into a volume through an image transfer ticket
    /// (sparsely: holes are sent as zero requests). A RAW volume takes raw
    /// data; a COW volume takes a qcow2 file, checked when the upload ends.
    Upload {
        file: PathBuf,
        image: String,
        volume: String,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Download a volume's bytes into a local file (sparse; a COW volume
    /// comes as its qcow2 file).
    Download {
        image: String,
        volume: String,
        file: PathBuf,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Release a prepared image.
    Teardown {
        image: String,
        #[arg(long)]
        domain: Option<String>,
    },
}

pub(crate) fn image(ctx: &Ctx, cmd: ImageCmd) -> Res<()> {
    match cmd {
        ImageCmd::List { domain } => {
            let sd = domain_id(ctx, domain)?;
            let imgs = ctx
                .client
                .call("StorageDomain.getImages", json!({"storagedomainID": sd}))?;
            print_value(ctx, &imgs, |v| {
                for i in v.as_array().cloned().unwrap_or_default() {
                    println!("{}", s(&i));
                }
            });
        }
        ImageCmd::Show { image, domain } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let vols = ctx.client.call(
                "Image.getVolumes",
                json!({"imageID": image, "storagepoolID": sp, "storagedomainID": sd}),
            )?;
            let mut infos = Vec::new();
            for v in vols.as_array().cloned().unwrap_or_default() {
                infos.push(volume_query(
                    ctx,
                    "Volume.getInfo",
                    (&sp, &sd, &image, &s(&v)),
                )?);
            }
            // Base first: order by the parent links.
            let depths: Vec<usize> = infos.iter().map(|i| depth(&infos, i)).collect();
            let mut ordered: Vec<(usize, Value)> = depths.into_iter().zip(infos).collect();
            ordered.sort_by_key(|(d, _)| *d);
            let out = Value::Array(ordered.into_iter().map(|(_, v)| v).collect());
            print_value(ctx, &out, volume_table);
        }
        ImageCmd::Delete {
            image,
            domain,
            wait,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let t = ctx.client.call(
                "Image.delete",
                json!({"imageID": image, "storagepoolID": sp, "storagedomainID": sd, "postZero": false, "force": false}),
            )?;
            finish_task(ctx, &t, wait, "deleting image")?;
        }
        ImageCmd::Prepare {
            image,
            volume,
            domain,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let r = ctx.client.call(
                "Image.prepare",
                json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": image, "volumeID": volume}),
            )?;
            print_value(ctx, &r, |v| println!("{}", s(&v["path"])));
        }
        ImageCmd::Upload {
            file,
            image,
            volume,
            domain,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let f = std::fs::File::open(&file)
                .map_err(|e| usage(format!("cannot open {}: {e}", file.display())))?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let info = volume_query(ctx, "Volume.getInfo", (&sp, &sd, &image, &volume))?;
            let capacity = num(&info["capacity"]);
            let size = if s(&info["format"]) == "RAW" {
                if len > capacity {
                    return Err(usage(format!(
                        "{} is {len} bytes; the volume holds {capacity}",
                        file.display()
                    )));
                }
                capacity
            } else {
                len
            };
            transfer(
                ctx,
                (&sp, &sd, &image, &volume),
                size,
                Direction::Upload,
                &f,
            )?;
        }
        ImageCmd::Download {
            image,
            volume,
            file,
            domain,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            // A RAW volume holds its capacity (its LV may be larger); a
            // qcow2 image, what its file or LV holds.
            let info = volume_query(ctx, "Volume.getInfo", (&sp, &sd, &image, &volume))?;
            let size = if s(&info["format"]) == "RAW" {
                num(&info["capacity"])
            } else {
                let sizes = volume_query(ctx, "Volume.getSize", (&sp, &sd, &image, &volume))?;
                num(&sizes["apparentsize"])
            };
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&file)
                .map_err(|e| usage(format!("cannot create {}: {e}", file.display())))?;
            transfer(
                ctx,
                (&sp, &sd, &image, &volume),
                size,
                Direction::Download,
                &f,
            )?;
        }
        ImageCmd::Teardown { image, domain } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            ctx.client.call(
                "Image.teardown",
                json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": image}),
            )?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
pub(crate) enum Direction {
    Upload,
    Download,
}

/// Prepares the image, adds a ticket for the volume, moves the bytes
/// between it and `file` with a progress bar, then removes the ticket and
/// tears the image down, whatever happened; prints what moved.
pub(crate) fn transfer(
    ctx: &Ctx,
    (sp, sd, image, volume): (&str, &str, &str, &str),
    size: u64,
    direction: Direction,
    file: &std::fs::File,
) -> Res<()> {
    let ids = json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": image});
    let mut prepare = ids.clone();
    prepare["volumeID"] = json!(volume);
    let path = s(&ctx.client.call("Image.prepare", prepare)?["path"]);
    let ticket = new_uuid();
    let op = match direction {
        Direction::Upload => "write",
        Direction::Download => "read",
    };
    let added = ctx.client.call(
        "Host.add_image_ticket",
        json!({"ticket": {"uuid": ticket, "size": size, "url": format!("file://{path}"),
                          "timeout": 3600, "ops": [op]}}),
    );
    let result = added.and_then(|_| {
        let bar = if ctx.json {
            indicatif::ProgressBar::hidden()
        } else {
            let b = indicatif::ProgressBar::new(size);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} [{elapsed}]",
                )
                .expect("progress template"),
            );
            b
        };
        let progress = |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        };
        let r = match direction {
            Direction::Upload => cairn::transfer::upload(&ctx.client, &ticket, file, progress),
            Direction::Download => cairn::transfer::download(&ctx.client, &ticket, file, progress),
        };
        bar.finish_and_clear();
        r
    });
    let removed = ctx
        .client
        .call("Host.remove_image_ticket", json!({"uuid": ticket}));
    let torn_down = ctx.client.call("Image.teardown", ids);
    let stats = result?;
    removed?;
    torn_down?;
    let out = json!({"data": stats.data, "zeros": stats.zeros});
    print_value(ctx, &out, |_| {
        let (done, zeros) = match direction {
            Direction::Upload => ("uploaded", "sent as zeros"),
            Direction::Download => ("downloaded", "left as holes"),
        };
        println!(
            "{done} {} of data, {} {zeros}",
            human_size(stats.data),
            human_size(stats.zeros)
        )
    });
    Ok(())
}
