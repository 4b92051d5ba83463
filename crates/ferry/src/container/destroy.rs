//! `destroy`: kill the container and release everything it holds on the host (runc state, overlay
//! mount, the writable layer's mount and loop device, netns + veth, cgroup). Idempotent and best effort: it never fails, so it is safe in
//! every cleanup path.
//!
//! Does not remove the runtime's files (its writable layer); [`Container::remove_files`] does.

use super::Container;
use crate::sys::{cgroup, layer, mount, netns};

impl Container<'_> {
    pub async fn destroy(&self) {
        let runc = &self.host.runc;
        // Network first: after a migration the runtime's TCP connections live at the target, and
        // the kernel here must not reset them when these processes die.
        netns::cut(&self.net()).await;
        if let Ok(Some(st)) = runc.state(self.id()).await {
            if st.status == "paused" {
                let _ = runc.resume(self.id()).await;
            }
            let _ = runc.kill(self.id(), "KILL").await;
            for _ in 0..50 {
                match runc.state(self.id()).await {
                    Ok(Some(s)) if s.status == "running" || s.status == "paused" => {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await
                    }
                    _ => break,
                }
            }
            let _ = runc.delete_force(self.id()).await;
        }
        let _ = mount::unmount(&self.rootfs());
        layer::release(&self.layer());
        netns::teardown(&self.net()).await;
        cgroup::remove(&self.cgroup_path());
    }

    pub fn remove_files(&self) {
        let _ = mount::unmount(&self.rootfs());
        layer::release(&self.layer());
        let _ = std::fs::remove_dir_all(self.dir());
    }
}
