//! Reading the CRIU images a lazy restore needs: `pstree.img` (the processes), `pagemap-PID.img`
//! (which memory runs are served lazily) and `mm-PID.img` (the VMAs, because a userfaultfd copy
//! may not cross one). Framing as CRIU writes it: the common magic, the image's magic, then
//! entries, each a little-endian u32 length and a protobuf message.

use crate::ranges::{Run, Runs};
use prost::Message;
use std::path::Path;

const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
const PSTREE_MAGIC: u32 = 0x5027_3030;
const PAGEMAP_MAGIC: u32 = 0x5608_4025;
const MM_MAGIC: u32 = 0x5749_2820;

/// Pagemap flag: the pages of this entry are served lazily (CRIU's `PE_LAZY`).
pub const PE_LAZY: u32 = 1 << 1;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Format { path: String, what: String },
}

#[derive(Clone, PartialEq, Message)]
pub struct PstreeEntry {
    #[prost(uint32, required, tag = "1")]
    pub pid: u32,
    #[prost(uint32, required, tag = "2")]
    pub ppid: u32,
    #[prost(uint32, repeated, packed = "false", tag = "5")]
    pub threads: Vec<u32>,
}

#[derive(Clone, PartialEq, Message)]
struct PagemapHead {
    #[prost(uint32, required, tag = "1")]
    pages_id: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct PagemapEntry {
    #[prost(uint64, required, tag = "1")]
    pub vaddr: u64,
    #[prost(uint32, required, tag = "2")]
    pub compat_nr_pages: u32,
    #[prost(uint32, optional, tag = "4")]
    pub flags: Option<u32>,
    #[prost(uint64, optional, tag = "5")]
    pub nr_pages: Option<u64>,
}

impl PagemapEntry {
    pub fn pages(&self) -> u64 {
        self.nr_pages.unwrap_or(self.compat_nr_pages as u64)
    }
    pub fn lazy(&self) -> bool {
        self.flags.unwrap_or(0) & PE_LAZY != 0
    }
}

#[derive(Clone, PartialEq, Message)]
struct VmaEntry {
    #[prost(uint64, required, tag = "1")]
    start: u64,
    #[prost(uint64, required, tag = "2")]
    end: u64,
}

#[derive(Clone, PartialEq, Message)]
struct MmEntry {
    #[prost(message, repeated, tag = "14")]
    vmas: Vec<VmaEntry>,
}

/// The protobuf entries of an image file whose own magic is `magic`.
pub fn entries(bytes: &[u8], magic: u32) -> Result<Vec<&[u8]>, String> {
    let word = |i: usize| -> Option<u32> {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    if word(0) != Some(IMG_COMMON_MAGIC) || word(4) != Some(magic) {
        return Err(format!("not the expected image (magic {magic:#x})"));
    }
    let mut out = Vec::new();
    let mut off = 8;
    while off < bytes.len() {
        let len = word(off).ok_or("entry length cut short")? as usize;
        let body = bytes.get(off + 4..off + 4 + len).ok_or("entry cut short")?;
        out.push(body);
        off += 4 + len;
    }
    Ok(out)
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, ImageError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|source| ImageError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn decode<M: Message + Default>(dir: &Path, name: &str, magic: u32) -> Result<Vec<M>, ImageError> {
    let bytes = read(dir, name)?;
    let bad = |what: String| ImageError::Format {
        path: dir.join(name).display().to_string(),
        what,
    };
    entries(&bytes, magic)
        .map_err(bad)?
        .into_iter()
        .map(|b| M::decode(b).map_err(|e| bad(e.to_string())))
        .collect()
}

/// The processes of the dump, in `pstree.img` order.
pub fn pstree(dir: &Path) -> Result<Vec<PstreeEntry>, ImageError> {
    decode(dir, "pstree.img", PSTREE_MAGIC)
}

/// The pagemap entries of process `pid` (the head entry skipped).
pub fn pagemap(dir: &Path, pid: u32) -> Result<Vec<PagemapEntry>, ImageError> {
    let name = format!("pagemap-{pid}.img");
    let bytes = read(dir, &name)?;
    let bad = |what: String| ImageError::Format {
        path: dir.join(&name).display().to_string(),
        what,
    };
    let e = entries(&bytes, PAGEMAP_MAGIC).map_err(bad)?;
    let Some((head, rest)) = e.split_first() else {
        return Err(bad("no pagemap head".into()));
    };
    PagemapHead::decode(*head).map_err(|e| bad(e.to_string()))?;
    rest.iter()
        .map(|b| PagemapEntry::decode(*b).map_err(|e| bad(e.to_string())))
        .collect()
}

/// The lazy runs of process `pid`, split at its VMA boundaries (run-time address = image address
/// before the process runs).
pub fn lazy_runs(dir: &Path, pid: u32) -> Result<Runs, ImageError> {
    let runs: Vec<Run> = pagemap(dir, pid)?
        .into_iter()
        .filter(|e| e.lazy())
        .map(|e| Run {
            start: e.vaddr,
            end: e.vaddr + e.pages() * crate::PAGE,
            img: e.vaddr,
        })
        .collect();
    let mut runs = Runs::new(runs);
    let mm: Vec<MmEntry> = decode(dir, &format!("mm-{pid}.img"), MM_MAGIC)?;
    let cuts: Vec<u64> = mm
        .iter()
        .flat_map(|m| m.vmas.iter().flat_map(|v| [v.start, v.end]))
        .collect();
    runs.split_at(&cuts);
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(magic: u32, msgs: &[Vec<u8>]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&IMG_COMMON_MAGIC.to_le_bytes());
        b.extend_from_slice(&magic.to_le_bytes());
        for m in msgs {
            b.extend_from_slice(&(m.len() as u32).to_le_bytes());
            b.extend_from_slice(m);
        }
        b
    }

    #[test]
    fn reads_lazy_runs_split_at_vmas() {
        let dir = tempfile::tempdir().unwrap();
        let pm = image(
            PAGEMAP_MAGIC,
            &[
                PagemapHead { pages_id: 1 }.encode_to_vec(),
                PagemapEntry {
                    vaddr: 0x1000,
                    compat_nr_pages: 2,
                    flags: Some(4),
                    nr_pages: None,
                }
                .encode_to_vec(),
                PagemapEntry {
                    vaddr: 0x10000,
                    compat_nr_pages: 0,
                    flags: Some(PE_LAZY),
                    nr_pages: Some(8),
                }
                .encode_to_vec(),
            ],
        );
        std::fs::write(dir.path().join("pagemap-7.img"), pm).unwrap();
        let mm = MmEntry {
            vmas: vec![
                VmaEntry {
                    start: 0x10000,
                    end: 0x14000,
                },
                VmaEntry {
                    start: 0x14000,
                    end: 0x20000,
                },
            ],
        };
        std::fs::write(
            dir.path().join("mm-7.img"),
            image(MM_MAGIC, &[mm.encode_to_vec()]),
        )
        .unwrap();
        let runs = lazy_runs(dir.path(), 7).unwrap();
        let v: Vec<_> = runs.iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(v, vec![(0x10000, 0x14000), (0x14000, 0x18000)]);
        let pt = image(
            PSTREE_MAGIC,
            &[PstreeEntry {
                pid: 1,
                ppid: 0,
                threads: vec![1, 5],
            }
            .encode_to_vec()],
        );
        std::fs::write(dir.path().join("pstree.img"), pt).unwrap();
        let t = pstree(dir.path()).unwrap();
        assert_eq!((t.len(), t[0].pid, t[0].threads.len()), (1, 1, 2));
    }

    #[test]
    fn refuses_wrong_magic_and_short_entries() {
        assert!(entries(&image(MM_MAGIC, &[]), PAGEMAP_MAGIC).is_err());
        let mut b = image(MM_MAGIC, &[vec![1, 2, 3]]);
        b.pop();
        assert!(entries(&b, MM_MAGIC).is_err());
    }
}
