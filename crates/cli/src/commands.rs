//! The verbs: each parses its flags, calls the control API (or runs a daemon), and prints a table
//! or, with `--json`, the API's JSON.

use crate::archive_io::{export, import};
use crate::args::*;
use crate::client::Client;
use crate::output::{mb, print_json, table, timings};
use crate::progress::{phased, step};
use crate::{Cli, Cmd};
use anyhow::{bail, Context, Result};
use clap::CommandFactory;
use ferry_core::api::{
    CheckpointOptions, CreateRequest, Event, ExecRequest, Host, Operation, RestoreOptions, Runtime,
    Snapshot,
};
use serde_json::Value;
use std::path::PathBuf;

/// Four increasing percentages → shares.
fn thresholds(p: &[f64]) -> Result<[f64; 4]> {
    let ok = p.len() == 4
        && p.windows(2).all(|w| w[0] < w[1])
        && p.iter().all(|v| *v > 0.0 && *v <= 100.0);
    if !ok {
        bail!("--thresholds takes four increasing percentages, e.g. 50,75,90,95");
    }
    Ok([p[0] / 100.0, p[1] / 100.0, p[2] / 100.0, p[3] / 100.0])
}

pub async fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    let client = || {
        Client::new(
            cli.url.clone(),
            cli.token.clone(),
            &cli.state_dir,
            cli.ca.as_deref(),
        )
    };
    match cli.cmd {
        Cmd::Serve(a) => {
            let o = ferry_core::server::ServeOptions {
                state_dir: cli.state_dir.clone(),
                images_dir: a.images,
                listen: a.listen,
                proxy_listen: a.proxy_listen,
                subnet: a.subnet,
                local_agent: (!a.no_local_agent).then_some(a.agent_listen),
                prefix: a.prefix,
                default_image: a.image,
                database: a.database,
                lease_ttl: a.lease_ttl,
                host_dead_after: a.host_dead_after,
                plan_egress: plan_egress(&a.plan_egress)?,
                proxy_auth: a.proxy_auth,
                monitor: ferry_core::control::monitor::MonitorConfig {
                    interval: a.monitor_interval,
                    idle_after: a.idle_after,
                    debounce: a.debounce,
                    auto: !a.no_auto,
                    mode: a.auto_mode,
                    thresholds: thresholds(&a.thresholds)?,
                },
                agent_ca: a.agent_ca,
                tls: match (a.tls_cert, a.tls_key) {
                    (Some(cert), Some(key)) => Some(ferry_core::tls::ServerFiles { cert, key }),
                    _ => None,
                },
                editor_dir: a.editor_dir.unwrap_or_else(|| cli.state_dir.join("editor")),
                public_proxy_url: a.public_proxy_url,
                bench_dir: a.bench_dir.unwrap_or_else(|| cli.state_dir.join("bench")),
            };
            ferry_core::server::serve(o).await?;
        }
        Cmd::Agent(a) => {
            let token = std::fs::read_to_string(&a.token_file).with_context(|| {
                format!("reading the agent token from {}", a.token_file.display())
            })?;
            let o = ferry_core::server::AgentOptions {
                state_dir: a
                    .agent_state_dir
                    .unwrap_or_else(|| PathBuf::from("/var/lib/ferry/agents").join(&a.name)),
                images_dir: a.images,
                listen: a.listen,
                token: token.trim().into(),
                prefix: a.prefix.unwrap_or_else(|| format!("ferry-{}-", a.name)),
                outer_netns: a.netns,
                route_via: a.route_via,
                fabric_netns: a.fabric_netns,
                tls: match (a.tls_cert, a.tls_key) {
                    (Some(cert), Some(key)) => Some(ferry_core::tls::ServerFiles { cert, key }),
                    _ => None,
                },
                peer_ca: a.peer_ca,
                name: a.name,
            };
            ferry_core::server::start_agent(o).await?;
            tokio::signal::ctrl_c().await?;
        }
        Cmd::Create(a) => {
            let c = client()?;
            let l = a.limits;
            let req = CreateRequest {
                name: a.name,
                plan: l.plan,
                memory: l.memory,
                cpus: l.cpus,
                host: a.host,
                no_auto: a.no_auto,
                image: a.image,
                egress: a.egress.as_deref().map(str::parse).transpose()?,
                allow_cidrs: a.allow_cidr,
            };
            let rt: Runtime = step(json, "creating runtime", c.post("/runtimes", &req)).await?;
            if json {
                print_json(&rt);
            } else {
                println!(
                    "{} created on {} (plan {}: {} MB, {} CPU), MRP at {}",
                    rt.name, rt.host, rt.plan.name, rt.plan.memory_mb, rt.plan.cpus, rt.mrp_url
                );
                if let Some(t) = &rt.access_token {
                    println!("access token: {t}");
                    println!(
                        "  send it to the proxy as `Authorization: Bearer {t}`, or open /r/{}/?ferry-token={t} once in a browser; `ferry token {}` shows it again",
                        rt.name, rt.name
                    );
                }
            }
        }
        Cmd::Token {
            name,
            rotate,
            ttl,
            signing_key,
        } => {
            let c = client()?;
            let v: serde_json::Value = match (&name, signing_key) {
                (None, true) => c.get("/access/signing-key").await?,
                (Some(_), true) => {
                    return Err(anyhow::anyhow!(ferry_core::Error::Invalid(
                        "--signing-key takes no runtime name: `ferry token --signing-key`".into(),
                    )))
                }
                (None, false) => {
                    return Err(anyhow::anyhow!(ferry_core::Error::Invalid(
                        "name a runtime (`ferry token NAME`), or ask for the signing key with `ferry token --signing-key`".into(),
                    )))
                }
                (Some(n), false) => match (rotate, ttl) {
                    (true, Some(_)) => {
                        return Err(anyhow::anyhow!(ferry_core::Error::Invalid(
                            "--rotate and --ttl do not go together: rotate first, then sign".into(),
                        )))
                    }
                    (true, None) => {
                        c.post(&format!("/runtimes/{n}/token/rotate"), &serde_json::json!({}))
                            .await?
                    }
                    (false, Some(d)) => {
                        c.post(
                            &format!("/runtimes/{n}/token/signed"),
                            &serde_json::json!({"ttl_s": d.as_secs()}),
                        )
                        .await?
                    }
                    (false, None) => c.get(&format!("/runtimes/{n}/token")).await?,
                },
            };
            if json {
                print_json(&v);
            } else if signing_key {
                println!("{}", v["key"].as_str().unwrap_or(""));
            } else {
                println!("{}", v["token"].as_str().unwrap_or(""));
            }
        }
        Cmd::Image { cmd } => crate::images::run(cmd, json, client).await?,
        Cmd::Ls => {
            let v: Vec<Runtime> = client()?.get("/runtimes").await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let mut rows = vec![vec![
                "NAME".into(),
                "STATE".into(),
                "HOST".into(),
                "PLAN".into(),
                "MEMORY".into(),
                "IMAGE".into(),
                "ADDRESS".into(),
                "CREATED".into(),
            ]];
            for r in v {
                rows.push(vec![
                    r.name,
                    r.state,
                    r.host,
                    r.plan.name,
                    format!("{} MB", r.plan.memory_mb),
                    r.image,
                    format!("{}:8888", r.ip),
                    r.created_at,
                ]);
            }
            table(rows);
        }
        Cmd::Inspect { name } => {
            let v: Value = client()?.get(&format!("/runtimes/{name}")).await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let rt: Runtime = serde_json::from_value(v.clone())?;
            println!(
                "name:      {}\nid:        {}\nstate:     {}{}",
                rt.name,
                rt.id,
                rt.state,
                rt.state_reason
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            println!(
                "host:      {}\nplan:      {} ({} MB, {} CPU)\nimage:     {}\naddress:   {}",
                rt.host, rt.plan.name, rt.plan.memory_mb, rt.plan.cpus, rt.image, rt.mrp_url
            );
            println!(
                "egress:    {}{}{}",
                rt.egress.egress,
                if rt.egress.allow.is_empty() {
                    String::new()
                } else {
                    format!(", also open: {}", rt.egress.allow.join(", "))
                },
                if rt.egress_from_plan {
                    " (the plan's)"
                } else {
                    ""
                }
            );
            if let Some(s) = rt.stats {
                println!(
                    "memory:    {} of {} (peak {})",
                    mb(s.memory_bytes),
                    mb(s.memory_limit_bytes),
                    mb(s.memory_peak_bytes)
                );
                println!(
                    "tasks:     {} of {}{}",
                    s.pids_current,
                    rt.plan.pids_max(),
                    if s.pids_max_events > 0 {
                        format!(" ({} refused at the limit)", s.pids_max_events)
                    } else {
                        String::new()
                    }
                );
                if s.disk_limit_bytes > 0 {
                    println!(
                        "disk:      {} of {}",
                        mb(s.disk_used_bytes),
                        mb(s.disk_limit_bytes)
                    );
                }
            }
            if let Some(u) = rt.uptime_s {
                println!("uptime:    {u:.0} s");
            }
            println!(
                "snapshot:  {}",
                rt.last_snapshot.unwrap_or_else(|| "-".into())
            );
            let ops: Vec<Operation> =
                serde_json::from_value(v["operations"].clone()).unwrap_or_default();
            for o in ops.iter().take(5) {
                println!(
                    "op:        {} {} {} {}",
                    o.started_at,
                    o.kind,
                    o.result,
                    timings(&o.timings)
                );
            }
            let events: Vec<ferry_core::api::Event> =
                serde_json::from_value(v["events"].clone()).unwrap_or_default();
            for e in events.iter().take(5) {
                println!("event:     {} {} {}", e.at, e.kind, e.reason);
            }
        }
        Cmd::Exec { name, code } => {
            let code = if code == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                code
            };
            let v: Value = client()?
                .post(&format!("/runtimes/{name}/exec"), &ExecRequest { code })
                .await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            print!("{}", v["stdout"].as_str().unwrap_or(""));
            eprint!("{}", v["stderr"].as_str().unwrap_or(""));
            if !v["error"].is_null() {
                let e = &v["error"];
                eprintln!(
                    "{}: {}",
                    e["type"].as_str().unwrap_or("Error"),
                    e["message"].as_str().unwrap_or("")
                );
                std::process::exit(1);
            }
        }
        Cmd::Stop { name } => {
            let rt: Runtime = step(
                json,
                "stopping",
                client()?.post(&format!("/runtimes/{name}/stop"), &()),
            )
            .await?;
            if json {
                print_json(&rt)
            } else {
                println!("{} stopped", rt.name)
            }
        }
        Cmd::Rm { name, force } => {
            let v: Value = client()?
                .delete(&format!("/runtimes/{name}?force={force}"))
                .await?;
            if json {
                print_json(&v)
            } else {
                println!("{name} removed")
            }
        }
        Cmd::Checkpoint(a) => {
            let c = client()?;
            let s: Snapshot = step(
                json,
                "checkpointing",
                c.post(
                    &format!("/runtimes/{}/checkpoint", a.name),
                    &CheckpointOptions {
                        leave_running: a.leave_running,
                    },
                ),
            )
            .await?;
            if let Some(f) = &a.export {
                step(json, "exporting", export(&c, &s.id, f)).await?;
            }
            if json {
                print_json(&s);
            } else {
                println!(
                    "snapshot {} of {} ({}, images {}) {}",
                    s.id,
                    s.runtime_name,
                    mb(s.size_bytes),
                    mb(s.image_bytes),
                    timings(&s.timings)
                );
                if let Some(f) = a.export {
                    println!("exported to {}", f.display());
                }
            }
        }
        Cmd::Restore(a) => {
            let c = client()?;
            let snapshot = match (a.snapshot, a.import) {
                (Some(s), None) => s,
                (None, Some(f)) => step(json, "importing", import(&c, &f, None)).await?.id,
                _ => bail!("give a snapshot id (see `ferry snapshots`) or --import FILE"),
            };
            let l = a.limits;
            let opts = RestoreOptions {
                snapshot: snapshot.clone(),
                name: a.name,
                plan: l.plan,
                memory: l.memory,
                cpus: l.cpus,
            };
            let rt: Runtime = step(json, "restoring", c.post("/restore", &opts)).await?;
            if json {
                print_json(&rt)
            } else {
                println!(
                    "{} restored from {} on {}, MRP at {}",
                    rt.name, snapshot, rt.host, rt.mrp_url
                )
            }
        }
        Cmd::Snapshots { cmd } => {
            let c = client()?;
            match cmd.unwrap_or(SnapshotCmd::Ls) {
                SnapshotCmd::Ls => {
                    let v: Vec<Snapshot> = c.get("/snapshots").await?;
                    if json {
                        print_json(&v);
                        return Ok(());
                    }
                    let mut rows = vec![vec![
                        "ID".into(),
                        "RUNTIME".into(),
                        "HOST".into(),
                        "SIZE".into(),
                        "LEAVE-RUNNING".into(),
                        "CREATED".into(),
                    ]];
                    for s in v {
                        rows.push(vec![
                            s.id,
                            s.runtime_name,
                            s.host,
                            mb(s.size_bytes),
                            s.leave_running.to_string(),
                            s.created_at,
                        ]);
                    }
                    table(rows);
                }
                SnapshotCmd::Inspect { id } => {
                    print_json(&c.get::<Snapshot>(&format!("/snapshots/{id}")).await?)
                }
                SnapshotCmd::Rm { id } => {
                    let v: Value = c.delete(&format!("/snapshots/{id}")).await?;
                    if json {
                        print_json(&v)
                    } else {
                        println!("{id} removed")
                    }
                }
                SnapshotCmd::Export { id, file } => {
                    let n = step(json, "exporting", export(&c, &id, &file)).await?;
                    if json {
                        print_json(&serde_json::json!({"id": id, "file": file, "archive_bytes": n}))
                    } else {
                        println!("{id} exported to {} ({})", file.display(), mb(n))
                    }
                }
                SnapshotCmd::Import { file, host } => {
                    let s = step(json, "importing", import(&c, &file, host)).await?;
                    if json {
                        print_json(&s)
                    } else {
                        println!("imported {} (runtime {})", s.id, s.runtime_name)
                    }
                }
            }
        }
        Cmd::Operations { runtime } => {
            let q = runtime.map(|r| format!("?runtime={r}")).unwrap_or_default();
            let v: Vec<Operation> = client()?.get(&format!("/operations{q}")).await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let mut rows = vec![vec![
                "ID".into(),
                "KIND".into(),
                "RUNTIME".into(),
                "RESULT".into(),
                "STARTED".into(),
                "TIMINGS".into(),
            ]];
            for o in v {
                rows.push(vec![
                    o.id.to_string(),
                    o.kind,
                    o.runtime.unwrap_or_default(),
                    o.result,
                    o.started_at,
                    timings(&o.timings),
                ]);
            }
            table(rows);
        }
        Cmd::Events {
            runtime,
            follow: true,
            kind,
        } => {
            let c = client()?;
            let mut q = vec![];
            if let Some(r) = runtime {
                q.push(format!("runtime={r}"));
            }
            if let Some(k) = kind {
                q.push(format!("kind={k}"));
            }
            let r = c
                .send_raw(c.request(
                    reqwest::Method::GET,
                    &format!("/events/stream?{}", q.join("&")),
                ))
                .await?;
            let mut stream = r.bytes_stream();
            let mut buf = String::new();
            while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
                buf.push_str(&String::from_utf8_lossy(&chunk?));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                        continue;
                    };
                    let Ok(e) = serde_json::from_str::<Event>(data) else {
                        continue;
                    };
                    if json {
                        println!("{}", serde_json::to_string(&e)?);
                    } else {
                        println!(
                            "{} {} {} {}",
                            e.at,
                            e.runtime.unwrap_or_else(|| "-".into()),
                            e.kind,
                            e.reason
                        );
                    }
                }
            }
        }
        Cmd::Events { runtime, .. } => {
            let q = runtime.map(|r| format!("?runtime={r}")).unwrap_or_default();
            let v: Vec<Event> = client()?.get(&format!("/events{q}")).await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            for e in v {
                println!(
                    "{} {} {} {}",
                    e.at,
                    e.runtime.unwrap_or_else(|| "-".into()),
                    e.kind,
                    e.reason
                );
            }
        }
        Cmd::Host { cmd } => {
            let c = client()?;
            match cmd {
                HostCmd::Add {
                    name,
                    agent_url,
                    labels,
                    capacity_mb,
                } => {
                    let h: Host = c.post("/hosts", &serde_json::json!({"name": name, "url": agent_url, "labels": labels, "capacity_mb": capacity_mb})).await?;
                    if json {
                        print_json(&h)
                    } else {
                        println!("host {} added ({} MB)", h.name, h.capacity_mb)
                    }
                }
                HostCmd::Ls => {
                    let v: Vec<Host> = c.get("/hosts").await?;
                    if json {
                        print_json(&v);
                        return Ok(());
                    }
                    let mut rows = vec![vec![
                        "NAME".into(),
                        "URL".into(),
                        "USED".into(),
                        "CAPACITY".into(),
                        "LABELS".into(),
                        "HEALTHY".into(),
                        "STATE".into(),
                    ]];
                    for h in v {
                        rows.push(vec![
                            h.name,
                            h.url,
                            format!("{} MB", h.used_mb),
                            format!("{} MB", h.capacity_mb),
                            h.labels.join(","),
                            h.healthy.to_string(),
                            h.state,
                        ]);
                    }
                    table(rows);
                }
                HostCmd::Cordon { name } => {
                    let h: Host = c
                        .post(&format!("/hosts/{name}/cordon"), &Value::Null)
                        .await?;
                    if json {
                        print_json(&h)
                    } else {
                        println!("host {} cordoned: nothing new is placed there (its runtimes keep running; `ferry host drain {}` moves them off)", h.name, h.name)
                    }
                }
                HostCmd::Uncordon { name } => {
                    let h: Host = c
                        .post(&format!("/hosts/{name}/uncordon"), &Value::Null)
                        .await?;
                    if json {
                        print_json(&h)
                    } else {
                        println!("host {} is ready: placement may use it again", h.name)
                    }
                }
                HostCmd::Drain {
                    name,
                    mode,
                    parallel,
                    within,
                } => {
                    let body = serde_json::json!({"mode": mode, "parallel": parallel, "within_s": within.map(|d| d.as_secs_f64())});
                    let path = format!("/hosts/{name}/drain");
                    let rep: Value = crate::progress::counted(
                        json,
                        &format!("draining {name}"),
                        c.post(&path, &body),
                        || async {
                            let v: Vec<Runtime> = c.get("/runtimes").await.ok()?;
                            Some(
                                v.iter()
                                    .filter(|r| {
                                        r.host == name
                                            && matches!(
                                                r.state.as_str(),
                                                "running" | "migrating" | "paused"
                                            )
                                    })
                                    .count() as u64,
                            )
                        },
                    )
                    .await?;
                    if json {
                        print_json(&rep);
                        return Ok(());
                    }
                    for o in rep["outcomes"].as_array().into_iter().flatten() {
                        let s = |k: &str| o[k].as_str().unwrap_or("").to_string();
                        match s("action").as_str() {
                            "moved" => println!(
                                "{} moved to {} ({:.1} s)",
                                s("runtime"),
                                s("to"),
                                o["ms"].as_f64().unwrap_or(0.0) / 1000.0
                            ),
                            a => println!("{} {a}: {}", s("runtime"), s("reason")),
                        }
                    }
                    let remaining: Vec<&str> = rep["remaining"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str())
                        .collect();
                    println!(
                        "host {name} is cordoned{} ({:.1} s; move rate {:.0} MB/s, {})",
                        if remaining.is_empty() {
                            " and empty".to_string()
                        } else {
                            format!("; still there: {}", remaining.join(", "))
                        },
                        rep["total_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                        rep["rate_mb_per_s"].as_f64().unwrap_or(0.0),
                        if rep["rate_measured"].as_bool().unwrap_or(false) {
                            "measured"
                        } else {
                            "assumed"
                        }
                    );
                    if !remaining.is_empty() {
                        anyhow::bail!(
                            "the drain of {name} left {} runtime(s) there: see the lines above",
                            remaining.len()
                        );
                    }
                }
                HostCmd::Rm { name, force } => {
                    let v: Value = c
                        .send(c.request(
                            reqwest::Method::DELETE,
                            &format!("/hosts/{name}?force={force}"),
                        ))
                        .await?;
                    if json {
                        print_json(&v)
                    } else {
                        println!("host {name} removed");
                        for k in ["forgot_runtimes", "forgot_snapshots"] {
                            let items: Vec<&str> = v[k]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|x| x.as_str())
                                .collect();
                            if !items.is_empty() {
                                println!("{}: {}", k.replace('_', " "), items.join(", "));
                            }
                        }
                    }
                }
            }
        }
        Cmd::Webhook { cmd } => {
            let c = client()?;
            match cmd {
                WebhookCmd::Add {
                    hook_url,
                    secret,
                    kinds,
                } => {
                    let v: Value = c
                        .post(
                            "/webhooks",
                            &serde_json::json!({"url": hook_url, "secret": secret, "kinds": kinds}),
                        )
                        .await?;
                    if json {
                        print_json(&v)
                    } else {
                        println!(
                            "webhook {} added for {}",
                            v["id"],
                            v["url"].as_str().unwrap_or("")
                        )
                    }
                }
                WebhookCmd::Ls => {
                    let v: Value = c.get("/webhooks").await?;
                    if json {
                        print_json(&v);
                        return Ok(());
                    }
                    let mut rows = vec![vec![
                        "ID".into(),
                        "URL".into(),
                        "KINDS".into(),
                        "CREATED".into(),
                    ]];
                    for w in v.as_array().into_iter().flatten() {
                        let kinds: Vec<&str> = w["kinds"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|k| k.as_str())
                            .collect();
                        rows.push(vec![
                            w["id"].to_string(),
                            w["url"].as_str().unwrap_or("").into(),
                            if kinds.is_empty() {
                                "all".into()
                            } else {
                                kinds.join(",")
                            },
                            w["created_at"].as_str().unwrap_or("").into(),
                        ]);
                    }
                    table(rows);
                }
                WebhookCmd::Rm { id } => {
                    let v: Value = c.delete(&format!("/webhooks/{id}")).await?;
                    if json {
                        print_json(&v)
                    } else {
                        println!("webhook {id} removed")
                    }
                }
                WebhookCmd::Deliveries { id } => {
                    let v: Value = c.get(&format!("/webhooks/{id}/deliveries")).await?;
                    if json {
                        print_json(&v);
                        return Ok(());
                    }
                    let mut rows = vec![vec![
                        "EVENT".into(),
                        "ATTEMPT".into(),
                        "STATUS".into(),
                        "ERROR".into(),
                        "AT".into(),
                    ]];
                    for d in v.as_array().into_iter().flatten() {
                        rows.push(vec![
                            d["event_id"].to_string(),
                            d["attempt"].to_string(),
                            d["status"].to_string(),
                            d["error"].as_str().unwrap_or("").into(),
                            d["at"].as_str().unwrap_or("").into(),
                        ]);
                    }
                    table(rows);
                }
            }
        }
        Cmd::Policy { name, auto } => {
            let rt: Runtime = client()?
                .post(
                    &format!("/runtimes/{name}/policy"),
                    &serde_json::json!({"auto": auto}),
                )
                .await?;
            if json {
                print_json(&rt)
            } else {
                println!(
                    "{}: automatic moves and hibernation {}",
                    rt.name,
                    if rt.auto { "on" } else { "off" }
                )
            }
        }
        Cmd::Hibernate { name } => {
            let rt: Runtime = step(
                json,
                "hibernating",
                client()?.post(&format!("/runtimes/{name}/hibernate"), &()),
            )
            .await?;
            if json {
                print_json(&rt)
            } else {
                println!(
                    "{} hibernated ({} MB freed); the next request wakes it",
                    rt.name, rt.plan.memory_mb
                )
            }
        }
        Cmd::Wake { name } => {
            let rt: Runtime = step(
                json,
                "waking",
                client()?.post(&format!("/runtimes/{name}/wake"), &()),
            )
            .await?;
            if json {
                print_json(&rt)
            } else {
                println!("{} is running on {}", rt.name, rt.host)
            }
        }
        Cmd::Migrate(a) => {
            let c = client()?;
            let plan = a
                .plan
                .as_deref()
                .map(ferry_core::plan::Plan::named)
                .transpose()?;
            let req = ferry_core::api::MigrateRequest {
                to: a.to.clone(),
                mode: a.mode.clone(),
                name: a.new_name,
                plan,
            };
            let msg = format!("migrating {} to {} ({})", a.name, a.to, a.mode);
            let phase = || async {
                c.get::<Runtime>(&format!("/runtimes/{}", a.name))
                    .await
                    .ok()
                    .and_then(|r| r.phase)
            };
            let m: ferry_core::api::Migration = phased(
                json,
                &msg,
                c.post(&format!("/runtimes/{}/migrate", a.name), &req),
                phase,
            )
            .await?;
            if json {
                print_json(&m);
            } else {
                println!(
                    "{} {} {} -> {} ({}, archive {})",
                    m.runtime,
                    if m.mode == "fork" { "forked" } else { "moved" },
                    m.from,
                    m.to,
                    m.mode,
                    mb(m.archive_bytes)
                );
                // The phases in order; sha256 work runs alongside (during the dump, during the
                // restore), so it is shown beside the phase it overlaps. `--json` has every figure.
                let t = &m.timings;
                let beside = |key: &str, what: &str| {
                    t.get(key)
                        .map(|v| format!("  ({what} {v:.0} ms alongside)"))
                        .unwrap_or_default()
                };
                for (phase, note) in [
                    ("freeze_ms", String::new()),
                    ("dump_ms", String::new()),
                    ("transfer_ms", String::new()),
                    ("restore_ms", beside("target_verify_ms", "sha256 check")),
                    ("downtime_ms", String::new()),
                    ("total_ms", String::new()),
                    ("cleanup_ms", String::new()),
                ] {
                    if let Some(v) = t.get(phase) {
                        println!("  {:<10} {v:>8.0} ms{note}", phase.trim_end_matches("_ms"));
                    }
                }
            }
        }
        Cmd::Instances => {
            let v: Vec<ferry_core::control::db::Instance> = client()?.get("/instances").await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let mut rows = vec![vec![
                "ID".into(),
                "ALIVE".into(),
                "MONITOR".into(),
                "API".into(),
                "PROXY".into(),
                "STARTED".into(),
            ]];
            for i in v {
                rows.push(vec![
                    i.id,
                    if i.alive { "yes".into() } else { "no".into() },
                    if i.decider {
                        "decider".into()
                    } else {
                        "-".into()
                    },
                    i.api_url,
                    i.proxy_url,
                    i.started_at,
                ]);
            }
            table(rows);
        }
        Cmd::Migrations { runtime } => {
            let q = runtime.map(|r| format!("?runtime={r}")).unwrap_or_default();
            let v: Vec<Operation> = client()?.get(&format!("/migrations{q}")).await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let mut rows = vec![vec![
                "ID".into(),
                "RUNTIME".into(),
                "MODE".into(),
                "FROM".into(),
                "TO".into(),
                "RESULT".into(),
                "BYTES".into(),
                "DOWNTIME".into(),
                "TOTAL".into(),
                "STARTED".into(),
            ]];
            for o in v {
                let f = |k: &str| {
                    o.timings
                        .get(k)
                        .map(|v| format!("{v:.0} ms"))
                        .unwrap_or_else(|| "-".into())
                };
                let d = |k: &str| o.detail[k].as_str().unwrap_or("-").to_string();
                let bytes = o.detail["archive_bytes"]
                    .as_u64()
                    .map(mb)
                    .unwrap_or_else(|| "-".into());
                rows.push(vec![
                    o.id.to_string(),
                    o.runtime.clone().unwrap_or_default(),
                    d("mode"),
                    d("from"),
                    d("to"),
                    o.result.clone(),
                    bytes,
                    f("downtime_ms"),
                    f("total_ms"),
                    o.started_at.clone(),
                ]);
            }
            table(rows);
        }
        Cmd::Dev {
            cmd:
                DevCmd::Up {
                    hosts,
                    prefix,
                    net,
                    subnet,
                    listen,
                    proxy_listen,
                    images,
                    images_per_host,
                    serve_args,
                    tls,
                },
        } => {
            let o = ferry_core::dev::DevOptions {
                state_dir: cli.state_dir.clone(),
                hosts,
                prefix,
                net,
                subnet,
                images_dir: images,
                images_per_host,
                listen,
                proxy_listen,
                bin: std::env::current_exe()?,
                serve_args,
                tls,
            };
            let st = step(json, "starting hosts", ferry_core::dev::up(&o)).await?;
            if json {
                print_json(&st);
            } else {
                for h in &st.hosts {
                    println!(
                        "host {} in netns {} at {} (agent pid {})",
                        h.name, h.netns, h.agent_url, h.pid
                    );
                }
                println!(
                    "ferry serve at {} (pid {}), proxy at {}/r/NAME/",
                    st.serve_url, st.serve_pid, st.proxy_url
                );
                println!(
                    "stop it all with: ferry --state-dir {} dev down",
                    cli.state_dir.display()
                );
            }
        }
        Cmd::Dev {
            cmd: DevCmd::RestartServe,
        } => {
            let st = ferry_core::dev::restart_serve(&cli.state_dir).await?;
            if json {
                print_json(&st)
            } else {
                println!(
                    "ferry serve restarted at {} (pid {})",
                    st.serve_url, st.serve_pid
                )
            }
        }
        Cmd::Dev {
            cmd: DevCmd::RestartAgent { host, agent_args },
        } => {
            let st = ferry_core::dev::restart_agent(&cli.state_dir, &host, &agent_args).await?;
            let h = st
                .hosts
                .iter()
                .find(|h| h.name == host)
                .expect("restarted host");
            if json {
                print_json(&st)
            } else {
                println!("agent {host} restarted at {} (pid {})", h.agent_url, h.pid)
            }
        }
        Cmd::Dev {
            cmd: DevCmd::Attach { name, addr },
        } => {
            let ns = ferry_core::dev::attach(&cli.state_dir, &name, addr).await?;
            if json {
                print_json(&serde_json::json!({"netns": ns, "addr": addr}))
            } else {
                println!("{ns}")
            }
        }
        Cmd::Dev {
            cmd: DevCmd::Down { prefix },
        } => {
            let prefix = prefix
                .or_else(|| ferry_core::dev::load(&cli.state_dir).map(|s| s.prefix))
                .unwrap_or_else(|| "ferry-".into());
            ferry_core::dev::down(&cli.state_dir, &prefix).await;
            if !json {
                println!("dev topology in {} removed", cli.state_dir.display());
            }
        }
        Cmd::Bench(a) => {
            let o = ferry_bench::BenchOptions {
                suite: a.suite,
                sizes: a.sizes,
                runs: a.runs,
                workload: a.workload.parse()?,
                modes: a.modes,
                baseline: a.baseline,
                write_rate_mb_s: ferry_bench::workload::parse_rate(&a.write_rate)?,
                out: a.out.clone(),
                migrations: a.migrations,
                bin: std::env::current_exe()?,
                images_dir: a.images,
                quiet: json,
                observe_after: a.observe_after,
            };
            let r = ferry_bench::run(&o).await?;
            if json {
                print_json(&r);
            } else {
                print!(
                    "{}",
                    std::fs::read_to_string(a.out.join(format!("{}.md", r.suite)))?
                );
                println!("\nwrote {}/{}.{{json,md,svg}}", a.out.display(), r.suite);
            }
        }
        Cmd::Dev {
            cmd: DevCmd::Purge { prefix },
        } => {
            ferry_core::server::purge(&cli.state_dir, &prefix).await;
        }
        Cmd::Doctor { images } => {
            let mut checks = ferry_core::doctor::checks(&images).await;
            checks.push(ferry_core::doctor::proxy_auth(&cli.state_dir));
            let required_failed = checks.iter().any(|c| !c.ok && c.required);
            if json {
                print_json(&checks);
            } else {
                for c in &checks {
                    let mark = match (c.ok, c.required) {
                        (true, _) => "ok  ",
                        (false, true) => "FAIL",
                        (false, false) => "warn",
                    };
                    println!("{mark} {:<26} {}", c.name, c.found);
                    if let Some(f) = &c.fix {
                        println!("     {:<26} → {f}", "");
                    }
                }
            }
            if required_failed {
                std::process::exit(1);
            }
        }
        Cmd::Editor { cmd } => match cmd {
            EditorCmd::Install {
                version,
                dir,
                registry,
                force,
            } => {
                let dir = dir.unwrap_or_else(|| cli.state_dir.join("editor"));
                let inst = step(
                    json,
                    &format!("installing {}@{version}", ferry_core::editor::PACKAGE),
                    ferry_core::editor::install(&dir, &version, &registry, force),
                )
                .await?;
                if json {
                    print_json(&inst);
                } else {
                    println!(
                        "{}@{} ({} bytes, {}) in {}",
                        inst.package,
                        inst.version,
                        inst.bytes,
                        inst.integrity,
                        inst.path.display()
                    );
                    println!(
                        "ferry serve --editor-dir {} serves it at /notebook/NAME",
                        dir.display()
                    );
                }
            }
            EditorCmd::Status { dir } => {
                let dir = dir.unwrap_or_else(|| cli.state_dir.join("editor"));
                match ferry_core::editor::installed(&dir) {
                    Some(inst) if json => print_json(&inst),
                    Some(inst) => println!(
                        "{}@{} ({} bytes, {}) in {}",
                        inst.package,
                        inst.version,
                        inst.bytes,
                        inst.integrity,
                        inst.path.display()
                    ),
                    None => anyhow::bail!(
                        "no editor bundle in {}: run `ferry editor install`",
                        dir.display()
                    ),
                }
            }
        },
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ferry", &mut std::io::stdout());
        }
    }
    Ok(())
}

/// `--plan-egress PLAN=allow|deny` flags as a map, refusing unknown plans and policies.
fn plan_egress(
    flags: &[String],
) -> Result<std::collections::BTreeMap<String, ferry_core::egress::Egress>> {
    let mut m = std::collections::BTreeMap::new();
    for f in flags {
        let (plan, policy) = f.split_once('=').ok_or_else(|| {
            anyhow::anyhow!(
                "--plan-egress {f:?}: give PLAN=allow or PLAN=deny, e.g. --plan-egress free=deny"
            )
        })?;
        if plan != "custom" {
            ferry_core::plan::Plan::named(plan)?;
        }
        m.insert(plan.to_string(), policy.parse()?);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    #[test]
    fn plan_egress_flags_name_known_plans_and_policies() {
        let m = super::plan_egress(&["free=deny".into(), "custom=allow".into()]).unwrap();
        assert_eq!(m["free"], ferry_core::egress::Egress::Deny);
        assert_eq!(m["custom"], ferry_core::egress::Egress::Allow);
        for bad in ["free", "gold=deny", "free=maybe"] {
            assert!(super::plan_egress(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
