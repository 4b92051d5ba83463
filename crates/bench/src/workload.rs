//! What a benchmarked runtime holds in memory.

use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    /// Allocated like the seed: untouched (zero) pages, tiny snapshots.
    Zeros,
    /// Every page touched with random bytes: the honest worst case.
    Random,
    /// A pandas DataFrame of that size.
    Pandas,
}

impl FromStr for Workload {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Workload> {
        match s {
            "zeros" => Ok(Workload::Zeros),
            "random" => Ok(Workload::Random),
            "pandas" => Ok(Workload::Pandas),
            o => anyhow::bail!("unknown workload {o:?}: use zeros, random or pandas"),
        }
    }
}

impl Workload {
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Zeros => "zeros",
            Workload::Random => "random",
            Workload::Pandas => "pandas",
        }
    }

    /// Python that makes the runtime hold `mb` MB.
    pub fn code(&self, mb: u64) -> String {
        let n = mb * 1024 * 1024;
        match self {
            // numpy, not bytearray: the MRP server summarizes variables, and a bytearray's repr is 4x its size.
            Workload::Zeros => format!("import numpy as np\nblob = np.zeros({n}, dtype=np.uint8)"),
            Workload::Random => format!("import numpy as np\nblob = np.random.randint(0, 256, size={n}, dtype=np.uint8)"),
            Workload::Pandas => format!("import numpy as np, pandas as pd\nblob = pd.DataFrame(np.random.rand({}, 4), columns=list('abcd'))", n / 32),
        }
    }

    /// Memory limit for a runtime holding `mb` MB (room for Python and a workload's peak).
    pub fn memory_mb(&self, mb: u64) -> u64 {
        match self {
            Workload::Pandas => mb * 3 + 256,
            _ => mb * 2 + 256,
        }
    }
}

/// A thread in the runtime that increments `counter` every 10 ms: its values show lost updates.
pub const COUNTER: &str = "import threading, time\ncounter = 0\ndef _tick():\n    global counter\n    while True:\n        counter += 1\n        time.sleep(0.01)\nthreading.Thread(target=_tick, daemon=True).start()";
