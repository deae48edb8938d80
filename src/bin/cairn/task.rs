//! `cairn task`, and waiting for tasks and host jobs with a progress bar.

use super::*;

#[derive(Subcommand, Debug)]
pub(crate) enum TaskCmd {
    /// All tasks with their state.
    List,
    Status {
        task: String,
    },
    /// Wait for a task (progress bar), then clear it.
    Wait {
        task: String,
    },
    Clear {
        task: String,
    },
    Stop {
        task: String,
    },
}

/// Polls a task with a progress bar until it finishes, then clears it: what
/// the CLI waited for, nobody else will clear.
pub(crate) fn wait_task(ctx: &Ctx, id: &str, what: &str) -> Res<Value> {
    let bar = if ctx.json {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .expect("progress template"),
        );
        b.set_message(what.to_string());
        b.enable_steady_tick(Duration::from_millis(100));
        b
    };
    let start = Instant::now();
    loop {
        let st = ctx.client.call("Task.getStatus", json!({"taskID": id}))?;
        if st["taskState"] == "finished" {
            bar.finish_and_clear();
            if st["taskResult"] == "success" {
                ctx.client.call("Task.clear", json!({"taskID": id}))?;
                return Ok(st);
            }
            // The failure is reported below; a task already rolled back
            // has nothing more to give.
            let _ = ctx.client.call("Task.clear", json!({"taskID": id}));
            return Err(ClientError::Rpc {
                code: st["code"].as_i64().unwrap_or(0),
                message: format!(
                    "{} (task {id} ended {})",
                    s(&st["message"]),
                    s(&st["taskResult"])
                ),
            });
        }
        bar.set_message(format!("{what}: {}", s(&st["taskState"])));
        let pause = if start.elapsed() < Duration::from_secs(1) {
            20
        } else {
            200
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
}

/// Starts host job `method` (a new `job_id` is added to `params`), shows
/// its progress, and returns its final `HostJobInfo` if it is done.
pub(crate) fn run_job(ctx: &Ctx, method: &str, mut params: Value, what: &str) -> Res<Value> {
    let job = new_uuid();
    params["job_id"] = json!(job);
    ctx.client.call(method, params)?;
    let bar = if ctx.json {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(100);
        b.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}% [{elapsed}]")
                .expect("progress template"),
        );
        b.set_message(what.to_string());
        b
    };
    let status = loop {
        let jobs = ctx.client.call("Host.getJobs", json!({"job_ids": [job]}))?;
        let j = jobs[&job].clone();
        bar.set_position(j["progress"].as_u64().unwrap_or(0));
        if j["status"] != "pending" && j["status"] != "running" {
            break j;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    bar.finish_and_clear();
    if status["status"] != "done" {
        return Err(ClientError::Rpc {
            code: status["error"]["code"].as_i64().unwrap_or(0),
            message: format!(
                "{} (job {job} {})",
                s(&status["error"]["message"]),
                s(&status["status"])
            ),
        });
    }
    Ok(status)
}

pub(crate) fn task(ctx: &Ctx, cmd: TaskCmd) -> Res<()> {
    match cmd {
        TaskCmd::List => {
            let all = ctx.client.call("Host.getAllTasksStatuses", json!({}))?;
            print_value(ctx, &all, |v| {
                let rows = v
                    .as_object()
                    .map(|m| {
                        m.values()
                            .map(|t| {
                                vec![
                                    s(&t["taskID"]),
                                    s(&t["taskState"]),
                                    s(&t["taskResult"]),
                                    s(&t["code"]),
                                    s(&t["message"]),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                table(&["TASK", "STATE", "RESULT", "CODE", "MESSAGE"], rows);
            });
        }
        TaskCmd::Status { task } => {
            let st = ctx.client.call("Task.getStatus", json!({"taskID": task}))?;
            print_value(ctx, &st, |t| {
                println!(
                    "{} {} {} (code {}) {}",
                    s(&t["taskID"]),
                    s(&t["taskState"]),
                    s(&t["taskResult"]),
                    s(&t["code"]),
                    s(&t["message"])
                )
            });
        }
        TaskCmd::Wait { task } => {
            let st = wait_task(ctx, &task, "waiting")?;
            print_value(ctx, &st, |_| println!("task {task} succeeded"));
        }
        TaskCmd::Clear { task } => {
            ctx.client.call("Task.clear", json!({"taskID": task}))?;
        }
        TaskCmd::Stop { task } => {
            ctx.client.call("Task.stop", json!({"taskID": task}))?;
        }
    }
    Ok(())
}

// ---- commands ----

pub(crate) fn finish_task(ctx: &Ctx, task: &Value, wait: bool, what: &str) -> Res<()> {
    let id = s(task);
    if wait {
        wait_task(ctx, &id, what)?;
        print_value(ctx, &json!({"taskID": id, "taskResult": "success"}), |_| {
            println!("done")
        });
    } else {
        print_value(ctx, &json!({"taskID": id}), |_| {
            println!("task {id} (follow it with `cairn task wait {id}`)")
        });
    }
    Ok(())
}
