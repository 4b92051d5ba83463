//! `freeze` / `thaw`: stop every process of the runtime in place (cgroup freezer) and resume it.
//! Used to take a consistent snapshot and as the first step of a migration.

use super::Container;
use crate::Result;

impl Container<'_> {
    pub async fn freeze(&self) -> Result<()> {
        self.host.runc.pause(self.id()).await
    }

    /// Resumes the runtime, and points the root namespace's route back at this host (a failed
    /// migration may have pointed it at the target).
    pub async fn thaw(&self) -> Result<()> {
        crate::sys::netns::claim_route(&self.net()).await?;
        self.host.runc.resume(self.id()).await
    }
}
