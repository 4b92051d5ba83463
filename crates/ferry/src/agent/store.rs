//! The agent's snapshot store: one verified snapshot directory per id under `snapshots/`.

use crate::api::{SnapshotInfo, Timings};
use crate::container::Host;
use ferry_snapshot::{EntryKind, Manifest};

pub fn info(host: &str, id: &str, m: &Manifest, timings: Timings) -> SnapshotInfo {
    let files = m.entries.iter().filter(|e| e.kind == EntryKind::File);
    let image_bytes = files
        .clone()
        .filter(|e| e.path.starts_with("criu/"))
        .map(|e| e.size)
        .sum();
    SnapshotInfo {
        id: id.into(),
        runtime_id: m.runtime_id.clone(),
        runtime_name: m.runtime_name.clone(),
        host: host.into(),
        leave_running: m.leave_running,
        created_at: m.created_at,
        size_bytes: files.map(|e| e.size).sum(),
        image_bytes,
        criu_version: m.criu_version.clone(),
        format_version: m.format_version,
        plan: crate::plan::Plan {
            name: m.plan.clone(),
            memory_mb: m.memory_mb,
            cpus: m.cpus,
        },
        timings,
        runtime_image: m.meta["spec"]["image"]
            .as_str()
            .map(str::to_string)
            .or_else(|| m.image_id.split_once('@').map(|(n, _)| n.to_string())),
    }
}

pub fn list(host: &Host) -> Vec<SnapshotInfo> {
    let mut v: Vec<SnapshotInfo> = std::fs::read_dir(host.snapshots_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            Some((
                e.file_name().to_string_lossy().into_owned(),
                Manifest::read_from_dir(&e.path()).ok()?,
            ))
        })
        .map(|(id, m)| info(&host.name, &id, &m, Timings::new()))
        .collect();
    v.sort_by_key(|s| s.created_at);
    v
}
