//! `status`: what runc and the cgroup say about the runtime right now.

use super::Container;
use crate::api::AgentRuntime;
use crate::sys::cgroup;

impl Container<'_> {
    pub async fn status(&self) -> AgentRuntime {
        let state = self.host.runc.state(self.id()).await.ok().flatten();
        let stats = cgroup::stats(&self.cgroup_path());
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
            spec: self.spec.clone(),
            status,
            pid: state.map(|s| s.pid).filter(|p| *p > 0),
            oom_killed,
            stats,
            timings: Default::default(),
        }
    }
}
