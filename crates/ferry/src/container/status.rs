//! `status`: what runc and the cgroup say about the runtime right now.

use super::Container;
use crate::api::AgentRuntime;
use crate::sys::cgroup;

impl Container<'_> {
    pub async fn status(&self) -> AgentRuntime {
        let state = self.host.runc.state(self.id()).await.ok().flatten();
        let mut stats = cgroup::stats(&self.cgroup_path());
        if let (Some(st), true) = (stats.as_mut(), crate::sys::mount::is_mounted(&self.layer())) {
            if let Ok(fs) = nix::sys::statvfs::statvfs(&self.layer()) {
                let block = fs.fragment_size();
                st.disk_limit_bytes = fs.blocks() * block;
                st.disk_used_bytes = (fs.blocks() - fs.blocks_free()) * block;
            }
        }
        let oom_killed = stats.as_ref().map(|s| s.oom_kills > 0).unwrap_or(false);
        let lost = std::fs::read_to_string(self.dir().join("lost")).ok();
        let status = match (&lost, &state) {
            (Some(_), _) => "lost".to_string(),
            (None, Some(s)) => s.status.clone(),
            (None, None) => "absent".into(),
        };
        AgentRuntime {
            reason: lost,
            lazy_pending: self.dir().join("lazy-pending").exists(),
            pages: std::fs::read(self.dir().join(super::lazy::PAGE_STATS))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default(),
            spec: self.spec.clone(),
            status,
            pid: state.map(|s| s.pid).filter(|p| *p > 0),
            oom_killed,
            stats,
            timings: Default::default(),
        }
    }
}
