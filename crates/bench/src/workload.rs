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

/// Python that starts a thread rewriting `blob` (the workload's array) at `mb_s` MB/s, 1 MiB at a
/// time in order, wrapping around.
pub fn writer(mb_s: f64) -> String {
    format!(
        "import threading, time, numpy as np\n_w = np.asarray(blob).reshape(-1).view(np.uint8)\ndef _rewrite():\n    i, n = 0, 0\n    step = 1 << 20\n    while True:\n        t = time.monotonic()\n        if i + step > _w.size:\n            i = 0\n        _w[i:i + step] = n & 255\n        i += step\n        n += 1\n        time.sleep(max(0.0, step / ({mb_s} * 1e6) - (time.monotonic() - t)))\nthreading.Thread(target=_rewrite, daemon=True).start()"
    )
}

/// `50MB/s`, `50` (MB/s) or `0`.
pub fn parse_rate(s: &str) -> anyhow::Result<f64> {
    let v = s.trim().trim_end_matches("/s").trim_end_matches("MB");
    match v.trim().parse::<f64>() {
        Ok(r) if r >= 0.0 && r.is_finite() => Ok(r),
        _ => anyhow::bail!("bad --write-rate {s:?}: give MB/s, e.g. 50MB/s"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_parse() {
        assert_eq!(super::parse_rate("50MB/s").unwrap(), 50.0);
        assert_eq!(super::parse_rate("12.5").unwrap(), 12.5);
        assert_eq!(super::parse_rate("0").unwrap(), 0.0);
        assert!(super::parse_rate("fast").is_err());
        assert!(super::parse_rate("-3MB/s").is_err());
    }
}
