//! The OCI runtime config (config.json) of a runtime container, built with oci-spec.

use super::Container;
use crate::{internal, Result};
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, ProcessBuilder, RootBuilder, Spec,
    UserBuilder,
};

/// The command that runs the MRP server as PID 1, its output appended to a log inside the
/// writable layer (append-only files are the one kind CRIU does not size-check at restore).
fn command(id: &str, server: &str, home: &str, workdir: &str) -> Vec<String> {
    let script = format!(
        "mkdir -p {home}/.ferry {workdir} && exec {server} --foreground --managed --id {id} --host 0.0.0.0 --port {} --cwd {workdir} >>{home}/.ferry/runtime.log 2>&1",
        crate::mrp::PORT
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

/// The environment: ferry's defaults, the image's `Env` over them, then ferry's own variables.
fn environment(c: &Container, image_env: &[String], home: &str) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |kv: &str| {
        if let Some((k, v)) = kv.split_once('=') {
            env.retain(|(ek, _)| ek != k);
            env.push((k.to_string(), v.to_string()));
        }
    };
    for kv in [
        "PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        &format!("HOME={home}"),
        &format!("IPYTHONDIR={home}/.ipython"),
        "VIRTUAL_ENV=/opt/venv",
        "PYTHONUNBUFFERED=1",
        "MPLBACKEND=Agg",
    ] {
        set(kv);
    }
    for kv in image_env {
        set(kv);
    }
    set(&format!("HOME={home}"));
    set("FERRY_IPYTHON_HISTORY=memory");
    set(&format!("FERRY_RUNTIME={}", c.spec.name));
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

pub fn build(c: &Container) -> Result<Spec> {
    let mut spec = Spec::default();
    let run = c.run_config()?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(command(
            &c.spec.id,
            &run.server,
            &run.user.home,
            &run.workdir,
        ))
        .env(environment(c, &run.env, &run.user.home))
        .cwd(run.cwd.clone())
        .user(
            UserBuilder::default()
                .uid(run.user.uid)
                .gid(run.user.gid)
                .build()
                .map_err(|e| internal!("user spec: {e}"))?,
        )
        .no_new_privileges(true)
        .build()
        .map_err(|e| internal!("process spec: {e}"))?;
    let mut defaults = Spec::default();
    let base_process = defaults.process_mut().take().expect("default process");
    let mut process = process;
    process.set_capabilities(base_process.capabilities().clone());
    process.set_rlimits(base_process.rlimits().clone());
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(false)
            .build()
            .map_err(|e| internal!("root spec: {e}"))?,
    ));
    spec.set_hostname(Some(c.spec.name.chars().take(63).collect()));

    let limit = (c.spec.plan.memory_mb * 1024 * 1024) as i64;
    let mut memory = LinuxMemoryBuilder::default().limit(limit);
    if crate::sys::cgroup::has_swap_accounting() {
        memory = memory.swap(limit); // no swap beyond the limit: an over-allocating runtime is OOM-killed
    }
    let period: u64 = 100_000;
    let quota = (c.spec.plan.cpus * period as f64).round() as i64;
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .map_err(|e| internal!("{e}"))?])
        .memory(memory.build().map_err(|e| internal!("{e}"))?)
        .cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(period)
                .build()
                .map_err(|e| internal!("{e}"))?,
        )
        // A fork bomb stops at the plan's task limit, far below the host's pid_max.
        .pids(
            LinuxPidsBuilder::default()
                .limit(c.spec.plan.pids_max() as i64)
                .build()
                .map_err(|e| internal!("{e}"))?,
        )
        .build()
        .map_err(|e| internal!("{e}"))?;

    // runc hands this file to CRIU as its configuration: connections still in the listen backlog
    // (accepted by the kernel, never by the runtime) cannot be dumped and are dropped instead of
    // failing the checkpoint; the proxy retries such requests at the new location.
    let mut annotations = std::collections::HashMap::new();
    annotations.insert(
        "org.criu.config".to_string(),
        c.criu_conf().display().to_string(),
    );
    spec.set_annotations(Some(annotations));
    let linux = spec.linux_mut().as_mut().expect("default linux");
    linux.set_resources(Some(resources));
    linux.set_seccomp(Some(super::seccomp::profile()?));
    linux.set_cgroups_path(Some(c.cgroup_path().into()));
    let mut namespaces: Vec<LinuxNamespace> = linux.namespaces().clone().unwrap_or_default();
    for ns in namespaces.iter_mut() {
        if ns.typ() == LinuxNamespaceType::Network {
            ns.set_path(Some(crate::sys::netns::path(&c.net().netns)));
        }
    }
    linux.set_namespaces(Some(namespaces));
    Ok(spec)
}

/// Writes config.json and the CRIU options; `tcp_close` restores connected sockets closed (for a
/// runtime restored under other addresses than it was checkpointed with).
pub fn write(c: &Container, tcp_close: bool) -> Result<()> {
    std::fs::create_dir_all(c.bundle())?;
    let script = c.dir().join("criu-net.sh");
    write_net_script(c, &script)?;
    let mut opts = String::from("skip-in-flight\n");
    if tcp_close {
        opts += "tcp-close\n";
    }
    opts += &format!("action-script {}\n", script.display());
    std::fs::write(c.criu_conf(), opts)?;
    let spec = build(c)?;
    spec.save(c.bundle().join("config.json"))
        .map_err(|e| internal!("writing config.json: {e}"))
}

/// Whether a restore that holds its processes stopped was under way (see [`restore_stopped`]).
pub fn restore_held(c: &Container) -> bool {
    has_option(c, "leave-stopped")
}

/// With `stopped`, the next restore leaves the processes stopped (CRIU's `leave-stopped`: each
/// gets SIGSTOP before it runs an instruction) until [`Container::resume_stopped`]; without, the
/// option is taken out again (a dump must never see it).
pub fn restore_stopped(c: &Container, stopped: bool) -> Result<()> {
    set_option(c, "leave-stopped", stopped)
}

/// Whether the runtime's CRIU options hold the line `option`.
fn has_option(c: &Container, option: &str) -> bool {
    std::fs::read_to_string(c.criu_conf()).is_ok_and(|conf| conf.lines().any(|l| l == option))
}

/// Puts the line `option` into the runtime's CRIU options (`on`) or takes it out.
fn set_option(c: &Container, option: &str, on: bool) -> Result<()> {
    let conf = std::fs::read_to_string(c.criu_conf())?;
    let mut lines: Vec<&str> = conf.lines().filter(|l| *l != option).collect();
    if on {
        lines.push(option);
    }
    std::fs::write(
        c.criu_conf(),
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )?;
    Ok(())
}

/// CRIU's own network lock (iptables rules in the runtime's namespace, locked in the dump and
/// unlocked inside the restore) left to ferry's (the action script of [`write`]): the next dump
/// runs with `network-lock skip`, which its images carry to the restore. The line stays only
/// until the runtime is thawed (see `Container::thaw`).
pub const NETWORK_LOCK_SKIP: &str = "network-lock skip";

/// Whether the next dump leaves the network lock to ferry.
pub fn network_lock_skipped(c: &Container) -> bool {
    has_option(c, NETWORK_LOCK_SKIP)
}

/// Sets or clears [`NETWORK_LOCK_SKIP`] in the runtime's CRIU options.
pub fn skip_network_lock(c: &Container, skip: bool) -> Result<()> {
    set_option(c, NETWORK_LOCK_SKIP, skip)
}

/// The CRIU action script of a runtime (`action-script` in its CRIU options): ferry's network lock
/// (`firewall::lock_script`, a table in the runtime's namespace) set when CRIU locks the network
/// and lifted when CRIU unlocks it. CRIU runs it at exactly those points whatever lock method it
/// uses itself: in a dump once the processes are frozen and before their sockets are read; in a
/// restore before the first socket is restored, and after the last one, before the processes
/// run. With `network-lock skip` it is the only lock, and a move's dump (which leaves the frozen
/// runtime "running" for CRIU) keeps it until the runtime is thawed or removed.
fn write_net_script(c: &Container, path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let rules = c.dir().join("criu-net-lock.nft");
    std::fs::write(&rules, crate::sys::firewall::lock_script())?;
    let ns = crate::sys::netns::path(&c.net().netns);
    let script = format!(
        "#!/bin/sh\n# ferry: this runtime's network lock, run by CRIU (see container/config.rs).\ncase \"$CRTOOLS_SCRIPT_ACTION\" in\nnetwork-lock) exec nsenter --net='{ns}' -- nft -f '{rules}' ;;\nnetwork-unlock)\n  # A move's dump (leave-running, the runtime stays frozen): locked until ferry thaws or removes it.\n  grep -qx '{skip}' '{conf}' && exit 0\n  nsenter --net='{ns}' -- nft delete table inet {table} 2>/dev/null; exit 0 ;;\nesac\nexit 0\n",
        ns = ns.display(),
        rules = rules.display(),
        table = crate::sys::firewall::LOCK_TABLE,
        skip = NETWORK_LOCK_SKIP,
        conf = c.criu_conf().display(),
    );
    std::fs::write(path, script)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}
