//! `freeze` / `thaw`: stop every process of the runtime in place (cgroup freezer) and resume it.
//! Used to take a consistent snapshot and as the first step of a migration.

use super::Container;
use crate::Result;

impl Container<'_> {
    pub async fn freeze(&self) -> Result<()> {
        // The cgroup v1 freezer gives up when a task does not stop in time (one deep in memory
        // reclaim near its limit, say) and leaves the cgroup thawed; a moment later it succeeds.
        let mut attempt = 0;
        loop {
            match self.host.runc.pause(self.id()).await {
                Err(e) if attempt < 5 && e.to_string().contains("unable to freeze") => {
                    attempt += 1;
                    tracing::warn!(runtime = %self.spec.name, attempt, "the freezer gave up; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Resumes the runtime, and points the root namespace's route back at this host (a failed
    /// migration may have pointed it at the target). Lifts a move's network lock.
    pub async fn thaw(&self) -> Result<()> {
        crate::sys::netns::claim_route(&self.net()).await?;
        self.unlock_network().await?;
        self.host.runc.resume(self.id()).await
    }

    /// Freezes the runtime for a move's dump, with CRIU's network lock left to ferry's (see
    /// `config::NETWORK_LOCK_SKIP`; CRIU sets ferry's lock through the runtime's action script once
    /// the processes are frozen). On failure the runtime is as it was.
    pub async fn freeze_for_move(&self) -> Result<()> {
        self.freeze_for_checkpoint().await?;
        if let Err(e) = super::config::skip_network_lock(self, true) {
            let _ = self.host.runc.resume(self.id()).await;
            return Err(e);
        }
        Ok(())
    }

    /// Lifts ferry's network lock, if a move set it.
    pub async fn unlock_network(&self) -> Result<()> {
        if super::config::network_lock_skipped(self) {
            self.net().unlock_traffic().await;
            super::config::skip_network_lock(self, false)?;
        }
        Ok(())
    }
}
