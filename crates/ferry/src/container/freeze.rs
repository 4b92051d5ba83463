//! `freeze` / `thaw`: stop every process of the runtime in place (cgroup freezer) and resume it.
//! Used to take a consistent snapshot and as the first step of a migration.

use super::Container;
use crate::Result;

impl Container<'_> {
    pub async fn freeze(&self) -> Result<()> {
        self.host.runc.pause(self.id()).await
    }

    pub async fn thaw(&self) -> Result<()> {
        self.host.runc.resume(self.id()).await
    }
}
