//! CRIU's own account of a dump or a restore: the `stats-dump` / `stats-restore` image it leaves in
//! its work dir (a service image: two magics, a length, one protobuf `stats_entry`; times in µs).
//! ferry adds these figures to the operation's timings as `criu_*`, so a slow phase can be split
//! into what CRIU did (froze, dumped memory, wrote it; forked, restored) and what ferry did.

use crate::api::Timings;
use prost::Message;
use std::path::Path;

const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;
const STATS_MAGIC: u32 = 0x5709_3306;

#[derive(Clone, PartialEq, Message)]
struct DumpStats {
    #[prost(uint32, required, tag = "1")]
    freezing_time: u32,
    #[prost(uint32, required, tag = "2")]
    frozen_time: u32,
    #[prost(uint32, required, tag = "3")]
    memdump_time: u32,
    #[prost(uint32, required, tag = "4")]
    memwrite_time: u32,
    #[prost(uint64, required, tag = "5")]
    pages_scanned: u64,
    #[prost(uint64, required, tag = "7")]
    pages_written: u64,
    #[prost(uint64, required, tag = "9")]
    pages_lazy: u64,
}

#[derive(Clone, PartialEq, Message)]
struct RestoreStats {
    #[prost(uint32, required, tag = "3")]
    forking_time: u32,
    #[prost(uint32, required, tag = "4")]
    restore_time: u32,
    #[prost(uint64, optional, tag = "5")]
    pages_restored: Option<u64>,
}

#[derive(Clone, PartialEq, Message)]
struct StatsEntry {
    #[prost(message, optional, tag = "1")]
    dump: Option<DumpStats>,
    #[prost(message, optional, tag = "2")]
    restore: Option<RestoreStats>,
}

/// The figures of `stats-dump` or `stats-restore` in `work`, as timings (ms and page counts);
/// empty if CRIU left none or the file is not a stats image.
pub fn read(work: &Path) -> Timings {
    let mut t = Timings::new();
    for name in ["stats-dump", "stats-restore"] {
        let Ok(bytes) = std::fs::read(work.join(name)) else {
            continue;
        };
        let Some(e) = decode(&bytes) else { continue };
        let ms = |us: u32| us as f64 / 1000.0;
        if let Some(d) = e.dump {
            t.insert("criu_freezing_ms".into(), ms(d.freezing_time));
            t.insert("criu_frozen_ms".into(), ms(d.frozen_time));
            t.insert("criu_memdump_ms".into(), ms(d.memdump_time));
            t.insert("criu_memwrite_ms".into(), ms(d.memwrite_time));
            t.insert("criu_pages_scanned".into(), d.pages_scanned as f64);
            t.insert("criu_pages_written".into(), d.pages_written as f64);
            t.insert("criu_pages_lazy".into(), d.pages_lazy as f64);
        }
        if let Some(r) = e.restore {
            t.insert("criu_forking_ms".into(), ms(r.forking_time));
            t.insert("criu_restore_ms".into(), ms(r.restore_time));
            if let Some(p) = r.pages_restored {
                t.insert("criu_pages_restored".into(), p as f64);
            }
        }
    }
    t
}

fn decode(bytes: &[u8]) -> Option<StatsEntry> {
    let word = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    if word(0)? != IMG_SERVICE_MAGIC || word(4)? != STATS_MAGIC {
        return None;
    }
    let len = word(8)? as usize;
    StatsEntry::decode(bytes.get(12..12 + len)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(e: &StatsEntry) -> Vec<u8> {
        let body = e.encode_to_vec();
        let mut b = Vec::new();
        for w in [IMG_SERVICE_MAGIC, STATS_MAGIC, body.len() as u32] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&body);
        b
    }

    #[test]
    fn dump_and_restore_figures_become_timings() {
        let t = tempfile::tempdir().unwrap();
        let dump = StatsEntry {
            dump: Some(DumpStats {
                freezing_time: 1500,
                frozen_time: 410_000,
                memdump_time: 120_000,
                memwrite_time: 250_500,
                pages_scanned: 140_000,
                pages_written: 134_000,
                pages_lazy: 0,
            }),
            restore: None,
        };
        std::fs::write(t.path().join("stats-dump"), image(&dump)).unwrap();
        let got = read(t.path());
        assert_eq!(got["criu_frozen_ms"], 410.0);
        assert_eq!(got["criu_memwrite_ms"], 250.5);
        assert_eq!(got["criu_pages_written"], 134_000.0);
        let restore = StatsEntry {
            dump: None,
            restore: Some(RestoreStats {
                forking_time: 2000,
                restore_time: 600_000,
                pages_restored: Some(134_000),
            }),
        };
        std::fs::write(t.path().join("stats-restore"), image(&restore)).unwrap();
        assert_eq!(read(t.path())["criu_restore_ms"], 600.0);
    }

    #[test]
    fn anything_else_is_ignored() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("stats-dump"), b"not an image").unwrap();
        let mut wrong_magic = image(&StatsEntry {
            dump: None,
            restore: None,
        });
        wrong_magic[0] ^= 1;
        std::fs::write(t.path().join("stats-restore"), wrong_magic).unwrap();
        assert!(read(t.path()).is_empty());
    }
}
