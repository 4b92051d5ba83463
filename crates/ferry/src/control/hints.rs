//! Code hints: the proxy shows the control plane the code each execution runs; code that needs a
//! GPU (torch, tensorflow, jax, CUDA) or a lot of memory (whole-file dataframe reads, arrays sized
//! in the hundreds of millions) yields a `hint.gpu` / `hint.big_ram` event once per runtime, and the
//! policy then prefers hosts labelled `gpu` / `big-ram` for that runtime's next move.

use super::Control;
use std::collections::BTreeSet;

/// The host labels `code` asks for.
pub fn hints(code: &str) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    let gpu = [
        "import torch",
        "from torch",
        "import tensorflow",
        "from tensorflow",
        "import jax",
        "from jax",
        "cuda",
        "import cupy",
    ];
    if gpu.iter().any(|g| code.contains(g)) {
        out.insert("gpu");
    }
    let whole_file = ["read_csv(", "read_parquet(", "read_json(", "read_feather("]
        .iter()
        .any(|r| code.contains(r))
        && !code.contains("chunksize");
    if whole_file || has_big_number(code) {
        out.insert("big-ram");
    }
    out
}

/// A literal of at least 10^8 (`100_000_000`, `2**30`, `1e9`), as array sizes are written.
fn has_big_number(code: &str) -> bool {
    let cleaned: String = code.chars().filter(|c| *c != '_').collect();
    cleaned.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '*')).any(|tok| {
        if let Some((b, e)) = tok.split_once("**") {
            return matches!((b.parse::<f64>(), e.parse::<f64>()), (Ok(b), Ok(e)) if b.powf(e) >= 1e8);
        }
        tok.parse::<f64>().is_ok_and(|v| v >= 1e8)
    })
}

impl Control {
    /// Called by the proxy for every execution's code.
    pub async fn observe_code(&self, runtime: &str, code: &str) {
        let found = hints(code);
        if found.is_empty() {
            return;
        }
        let Ok(Some(row)) = self.db.runtime_by_name(runtime).await else {
            return;
        };
        let new: Vec<&str> = {
            let mut known = self.hints.lock().unwrap();
            let entry = known.entry(row.id.clone()).or_default();
            found
                .into_iter()
                .filter(|label| entry.insert(label.to_string()))
                .collect()
        };
        for label in new {
            let kind = if label == "gpu" {
                "hint.gpu"
            } else {
                "hint.big_ram"
            };
            self.event(Some(runtime), kind, &format!("its code asks for a {label} host; its next move prefers hosts labelled {label}"), serde_json::json!({"label": label})).await;
        }
    }

    /// Labels the runtime's code asked for.
    pub fn hinted_labels(&self, runtime_id: &str) -> BTreeSet<String> {
        self.hints
            .lock()
            .unwrap()
            .get(runtime_id)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::hints;

    #[test]
    fn recognizes_gpu_and_big_ram_code() {
        assert!(hints("import torch\nx = torch.zeros(3)").contains("gpu"));
        assert!(hints("from jax import numpy as jnp").contains("gpu"));
        assert!(hints("df = pd.read_csv('big.csv')").contains("big-ram"));
        assert!(
            !hints("for c in pd.read_csv('big.csv', chunksize=1000): pass").contains("big-ram")
        );
        assert!(hints("a = np.zeros(2**30)").contains("big-ram"));
        assert!(hints("a = np.zeros(500_000_000)").contains("big-ram"));
        assert!(hints("a = np.zeros(1e9)").contains("big-ram"));
        assert!(hints("x = 41\nprint(x + 1)").is_empty());
        assert!(hints("a = np.zeros(10_000)").is_empty());
    }
}
