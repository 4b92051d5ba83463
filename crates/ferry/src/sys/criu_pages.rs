//! The memory pages of a CRIU dump, as its images hold them: `pagemap-PID.img` (two magics, then
//! length-prefixed protobuf entries: one `pagemap_head` naming the pages file, then one
//! `pagemap_entry` per run of pages) and `pages-ID.img` (the raw pages of the runs flagged present,
//! in order). PID is the process's pid inside the runtime's pid namespace.
//!
//! Used to check a pre-copy page store against the dump made at the freeze (and `core-TID.img`
//! for where each thread's `struct rseq` lies). Shared memory
//! (`pagemap-shmem-*`) and pages kept in a parent image are not read.

use prost::Message;
use std::io;
use std::path::Path;

const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
const PAGEMAP_MAGIC: u32 = 0x5608_4025;
const CORE_MAGIC: u32 = 0x5505_3847;
/// `PE_PRESENT`: the run's pages are in the pages image.
const PE_PRESENT: u32 = 1 << 2;
/// `PE_PARENT`: the run's pages are in a parent dump.
const PE_PARENT: u32 = 1 << 0;

#[derive(Clone, PartialEq, Message)]
struct PagemapHead {
    #[prost(uint32, required, tag = "1")]
    pages_id: u32,
}

#[derive(Clone, PartialEq, Message)]
struct PagemapEntry {
    #[prost(uint64, required, tag = "1")]
    vaddr: u64,
    #[prost(uint32, required, tag = "2")]
    compat_nr_pages: u32,
    #[prost(bool, optional, tag = "3")]
    in_parent: Option<bool>,
    #[prost(uint32, optional, tag = "4")]
    flags: Option<u32>,
    #[prost(uint64, optional, tag = "5")]
    nr_pages: Option<u64>,
}

/// A run of pages of one process in a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub vaddr: u64,
    pub nr_pages: u64,
    /// Offset of its data in the pages image; `None` when the image holds no data for it (lazy
    /// or in a parent).
    pub offset: Option<u64>,
}

/// One process's memory in a dump.
pub struct ProcessPages {
    pub pid: u32,
    pub pages_file: std::path::PathBuf,
    pub runs: Vec<Run>,
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Parses one pagemap image.
pub fn parse_pagemap(bytes: &[u8]) -> io::Result<(u32, Vec<Run>)> {
    let word = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    if word(0) != Some(IMG_COMMON_MAGIC) || word(4) != Some(PAGEMAP_MAGIC) {
        return Err(bad("not a CRIU pagemap image (bad magic)".into()));
    }
    let mut off = 8;
    let mut entries = Vec::new();
    while off < bytes.len() {
        let n = word(off).ok_or_else(|| bad(format!("entry at {off} cut short")))? as usize;
        let body = bytes
            .get(off + 4..off + 4 + n)
            .ok_or_else(|| bad(format!("entry at {off} cut short")))?;
        entries.push(body);
        off += 4 + n;
    }
    let head = entries
        .first()
        .ok_or_else(|| bad("pagemap image without a head".into()))?;
    let head = PagemapHead::decode(*head).map_err(|e| bad(format!("pagemap head: {e}")))?;
    let mut runs = Vec::new();
    let mut data = 0u64;
    for e in &entries[1..] {
        let e = PagemapEntry::decode(*e).map_err(|e| bad(format!("pagemap entry: {e}")))?;
        let nr_pages = e.nr_pages.unwrap_or(e.compat_nr_pages as u64);
        let present = match e.flags {
            Some(f) => f & PE_PRESENT != 0,
            None => !e.in_parent.unwrap_or(false),
        };
        let in_parent = e.flags.is_some_and(|f| f & PE_PARENT != 0);
        let offset = (present && !in_parent).then_some(data);
        if present {
            data += nr_pages * 4096;
        }
        runs.push(Run {
            vaddr: e.vaddr,
            nr_pages,
            offset,
        });
    }
    Ok((head.pages_id, runs))
}

#[derive(Clone, PartialEq, Message)]
struct RseqEntry {
    #[prost(uint64, optional, tag = "1")]
    rseq_abi_pointer: Option<u64>,
    #[prost(uint32, optional, tag = "2")]
    rseq_abi_size: Option<u32>,
}

#[derive(Clone, PartialEq, Message)]
struct ThreadCore {
    #[prost(message, optional, tag = "15")]
    rseq_entry: Option<RseqEntry>,
}

#[derive(Clone, PartialEq, Message)]
struct CoreEntry {
    #[prost(message, optional, tag = "5")]
    thread_core: Option<ThreadCore>,
}

/// The `struct rseq` areas `(address, size)` of every thread in the image dir `dir` (from its
/// `core-TID.img`s). The kernel rewrites their `cpu_id_start`, `cpu_id`, `node_id` and `mm_cid`
/// whenever a registered thread returns to user space — CRIU's own work on a frozen task does —
/// so those bytes are not the process's writes.
pub fn rseq_areas(dir: &Path) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("core-") && name.ends_with(".img")) {
            continue;
        }
        let b = std::fs::read(dir.join(&name))?;
        let word = |i: usize| {
            b.get(i..i + 4)
                .map(|x| u32::from_le_bytes(x.try_into().unwrap()))
        };
        if word(0) != Some(IMG_COMMON_MAGIC) || word(4) != Some(CORE_MAGIC) {
            return Err(bad(format!("{name}: not a CRIU core image")));
        }
        let n = word(8).ok_or_else(|| bad(format!("{name}: cut short")))? as usize;
        let body = b
            .get(12..12 + n)
            .ok_or_else(|| bad(format!("{name}: cut short")))?;
        let core = CoreEntry::decode(body).map_err(|e| bad(format!("{name}: {e}")))?;
        if let Some(r) = core.thread_core.and_then(|t| t.rseq_entry) {
            if let (Some(p), Some(n)) = (r.rseq_abi_pointer, r.rseq_abi_size) {
                if p != 0 && n != 0 {
                    out.push((p, n as u64));
                }
            }
        }
    }
    Ok(out)
}

/// Whether byte `addr` is one of the kernel-owned fields of a `struct rseq` in `areas`
/// (`cpu_id_start`, `cpu_id`: offsets 0..8; `node_id`, `mm_cid`: 20..28).
pub fn kernel_owned(areas: &[(u64, u64)], addr: u64) -> bool {
    areas
        .iter()
        .any(|&(p, n)| addr >= p && addr < p + n && matches!(addr - p, 0..8 | 20..28))
}

/// Every process's pages in the CRIU image dir `dir`.
pub fn read_dir(dir: &Path) -> io::Result<Vec<ProcessPages>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("pagemap-")
            .and_then(|r| r.strip_suffix(".img"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let (pages_id, runs) = parse_pagemap(&std::fs::read(dir.join(&name))?)
            .map_err(|e| bad(format!("{name}: {e}")))?;
        out.push(ProcessPages {
            pid,
            pages_file: dir.join(format!("pages-{pages_id}.img")),
            runs,
        });
    }
    out.sort_by_key(|p| p.pid);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(out: &mut Vec<u8>, m: &impl Message) {
        let b = m.encode_to_vec();
        out.extend((b.len() as u32).to_le_bytes());
        out.extend(b);
    }

    #[test]
    fn runs_get_their_offsets_in_the_pages_image() {
        let mut img = Vec::new();
        img.extend(IMG_COMMON_MAGIC.to_le_bytes());
        img.extend(PAGEMAP_MAGIC.to_le_bytes());
        frame(&mut img, &PagemapHead { pages_id: 3 });
        let entry = |vaddr, n, flags| PagemapEntry {
            vaddr,
            compat_nr_pages: n,
            in_parent: None,
            flags: Some(flags),
            nr_pages: None,
        };
        frame(&mut img, &entry(0x1000, 2, PE_PRESENT));
        frame(&mut img, &entry(0x9000, 1, 2)); // lazy: no data here
        frame(&mut img, &entry(0x20000, 3, PE_PRESENT));
        let (id, runs) = parse_pagemap(&img).unwrap();
        assert_eq!(id, 3);
        assert_eq!(runs[0].offset, Some(0));
        assert_eq!(runs[1].offset, None);
        assert_eq!(runs[2].offset, Some(2 * 4096));
        assert_eq!(runs[2].nr_pages, 3);
        assert!(parse_pagemap(&img[..img.len() - 1]).is_err(), "cut short");
        assert!(parse_pagemap(b"12345678").is_err(), "bad magic");
    }

    #[test]
    fn only_the_kernel_owned_rseq_fields_are_exempt() {
        let a = [(0x1000u64, 32u64)];
        assert!(kernel_owned(&a, 0x1000) && kernel_owned(&a, 0x1007));
        assert!(!kernel_owned(&a, 0x1008), "rseq_cs is the process's");
        assert!(kernel_owned(&a, 0x1014) && kernel_owned(&a, 0x101b));
        assert!(!kernel_owned(&a, 0x101c) && !kernel_owned(&a, 0x0fff));
    }
}
