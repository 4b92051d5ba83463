//! The page store: an append-only file of page runs, each tagged with the process (its pid as the
//! runtime's CRIU images name it: the pid inside the runtime's pid namespace) and its virtual
//! address. A later run of the same page supersedes an earlier one, so a pre-copy round only
//! appends what was written since the last one.
//!
//! Format, version 1, all integers little-endian:
//! - header: the 8 bytes `FERRYPG1`;
//! - then records: `pid: u32`, `vaddr: u64` (page aligned), `nr_pages: u32`, then
//!   `nr_pages * 4096` bytes of memory.
//!
//! The dirty list (pages the source wrote after they were stored: they must come from the source)
//! has the same framing with the header `FERRYDL1` and no page data.
//!
//! A truncated last record (a writer that died) is an error at [`Index::open`], never a silently
//! short page.

use crate::PAGE;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

const STORE_MAGIC: &[u8; 8] = b"FERRYPG1";
const DIRTY_MAGIC: &[u8; 8] = b"FERRYDL1";
const RECORD_HEAD: u64 = 16;

/// Size of a record's head (`pid`, `vaddr`, `nr_pages`), before its page data.
pub const RECORD_HEAD_LEN: usize = RECORD_HEAD as usize;

/// A record's head as the store and the dirty list frame it (also the framing of page runs
/// streamed between agents): `pid: u32`, `vaddr: u64`, `nr_pages: u32`, little-endian.
pub fn record_head(pid: u32, vaddr: u64, nr_pages: u32) -> [u8; RECORD_HEAD_LEN] {
    head(pid, vaddr, nr_pages)
}

/// `(pid, vaddr, nr_pages)` of a record head made by [`record_head`].
pub fn parse_record_head(h: &[u8; RECORD_HEAD_LEN]) -> (u32, u64, u32) {
    parse_head(h)
}

/// Why a store or dirty list could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("page store {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("page store {path}: {what}")]
    Format { path: String, what: String },
}

pub type Result<T> = std::result::Result<T, Error>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn head(pid: u32, vaddr: u64, nr_pages: u32) -> [u8; RECORD_HEAD as usize] {
    let mut h = [0u8; RECORD_HEAD as usize];
    h[..4].copy_from_slice(&pid.to_le_bytes());
    h[4..12].copy_from_slice(&vaddr.to_le_bytes());
    h[12..].copy_from_slice(&nr_pages.to_le_bytes());
    h
}

fn parse_head(h: &[u8; RECORD_HEAD as usize]) -> (u32, u64, u32) {
    (
        u32::from_le_bytes(h[..4].try_into().unwrap()),
        u64::from_le_bytes(h[4..12].try_into().unwrap()),
        u32::from_le_bytes(h[12..].try_into().unwrap()),
    )
}

/// Appends page runs to a store (creating it with its header when new).
pub struct Writer {
    out: BufWriter<File>,
    path: std::path::PathBuf,
    bytes: u64,
}

impl Writer {
    pub fn open(path: &Path) -> Result<Writer> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(io(path))?;
        if f.metadata().map_err(io(path))?.len() == 0 {
            f.write_all(STORE_MAGIC).map_err(io(path))?;
        }
        Ok(Writer {
            out: BufWriter::with_capacity(1 << 20, f),
            path: path.to_owned(),
            bytes: 0,
        })
    }

    /// Appends `data` (a whole number of pages) as the memory of `pid` at `vaddr`.
    pub fn append(&mut self, pid: u32, vaddr: u64, data: &[u8]) -> Result<()> {
        if !vaddr.is_multiple_of(PAGE) || !(data.len() as u64).is_multiple_of(PAGE) {
            return Err(Error::Format {
                path: self.path.display().to_string(),
                what: format!("unaligned run at {vaddr:#x} of {} bytes", data.len()),
            });
        }
        let n = (data.len() as u64 / PAGE) as u32;
        self.out
            .write_all(&head(pid, vaddr, n))
            .and_then(|_| self.out.write_all(data))
            .map_err(io(&self.path))?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Page bytes appended through this writer.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes and syncs what was appended.
    pub fn finish(self) -> Result<()> {
        let path = self.path.clone();
        let f = self
            .out
            .into_inner()
            .map_err(|e| io(&path)(e.into_error()))?;
        f.sync_data().map_err(io(&path))
    }
}

/// Where the newest copy of each stored page is: `(pid, page address) -> file offset`.
pub struct Index {
    file: File,
    pages: BTreeMap<(u32, u64), u64>,
}

impl Index {
    /// Reads a store's records (not their data) and indexes the newest copy of each page.
    pub fn open(path: &Path) -> Result<Index> {
        let bad = |what: String| Error::Format {
            path: path.display().to_string(),
            what,
        };
        let mut file = File::open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        let mut magic = [0u8; 8];
        file.read_exact(&mut magic).map_err(io(path))?;
        if &magic != STORE_MAGIC {
            return Err(bad("not a ferry page store (bad header)".into()));
        }
        let mut pages = BTreeMap::new();
        let mut off = 8u64;
        let mut h = [0u8; RECORD_HEAD as usize];
        while off < len {
            if off + RECORD_HEAD > len {
                return Err(bad(format!("record at {off} is cut short")));
            }
            file.read_exact_at(&mut h, off).map_err(io(path))?;
            let (pid, vaddr, n) = parse_head(&h);
            let data = off + RECORD_HEAD;
            let end = data + n as u64 * PAGE;
            if end > len || !vaddr.is_multiple_of(PAGE) {
                return Err(bad(format!("record at {off} is cut short or unaligned")));
            }
            for i in 0..n as u64 {
                pages.insert((pid, vaddr + i * PAGE), data + i * PAGE);
            }
            off = end;
        }
        file.seek(SeekFrom::Start(0)).map_err(io(path))?;
        Ok(Index { file, pages })
    }

    /// Number of distinct pages held.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    pub fn contains(&self, pid: u32, vaddr: u64) -> bool {
        self.pages.contains_key(&(pid, vaddr & !(PAGE - 1)))
    }

    /// Where in the store file the newest copy of the page at `vaddr` starts.
    pub fn offset(&self, pid: u32, vaddr: u64) -> Option<u64> {
        self.pages.get(&(pid, vaddr & !(PAGE - 1))).copied()
    }

    /// Reads `buf.len()` bytes of the store file from `off` (several pages at once, where
    /// [`Index::offset`] says they lie one after another).
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, off)
    }

    /// Reads the newest copy of the page at `vaddr` into `buf` (one page); false when not held.
    pub fn read(&self, pid: u32, vaddr: u64, buf: &mut [u8]) -> std::io::Result<bool> {
        match self.pages.get(&(pid, vaddr & !(PAGE - 1))) {
            Some(off) => self
                .file
                .read_exact_at(&mut buf[..PAGE as usize], *off)
                .map(|_| true),
            None => Ok(false),
        }
    }

    /// Every held page of `pid`, in address order.
    pub fn pages_of(&self, pid: u32) -> impl Iterator<Item = u64> + '_ {
        self.pages
            .range((pid, 0)..=(pid, u64::MAX))
            .map(|((_, a), _)| *a)
    }

    /// Forgets the pages the source wrote after they were stored.
    pub fn remove_dirty(&mut self, dirty: &[(u32, u64, u32)]) {
        for (pid, vaddr, n) in dirty {
            for i in 0..*n as u64 {
                self.pages.remove(&(*pid, vaddr + i * PAGE));
            }
        }
    }
}

/// Writes a dirty list: runs of `(pid, vaddr, nr_pages)`.
pub fn write_dirty(path: &Path, runs: &[(u32, u64, u32)]) -> Result<()> {
    let f = File::create(path).map_err(io(path))?;
    let mut out = BufWriter::new(f);
    out.write_all(DIRTY_MAGIC).map_err(io(path))?;
    for (pid, vaddr, n) in runs {
        out.write_all(&head(*pid, *vaddr, *n)).map_err(io(path))?;
    }
    out.into_inner()
        .map_err(|e| io(path)(e.into_error()))?
        .sync_data()
        .map_err(io(path))
}

/// Reads a dirty list written by [`write_dirty`].
pub fn read_dirty(path: &Path) -> Result<Vec<(u32, u64, u32)>> {
    let mut r = BufReader::new(File::open(path).map_err(io(path))?);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(io(path))?;
    if &magic != DIRTY_MAGIC {
        return Err(Error::Format {
            path: path.display().to_string(),
            what: "not a ferry dirty list (bad header)".into(),
        });
    }
    let mut out = Vec::new();
    let mut h = [0u8; RECORD_HEAD as usize];
    loop {
        match r.read_exact(&mut h) {
            Ok(()) => out.push(parse_head(&h)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io(path)(e)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn page(b: u8) -> Vec<u8> {
        vec![b; PAGE as usize]
    }

    #[test]
    fn a_later_copy_supersedes_and_dirty_pages_are_forgotten() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pages");
        let mut w = Writer::open(&p).unwrap();
        let mut two = page(1);
        two.extend(page(2));
        w.append(7, 0x1000, &two).unwrap();
        w.append(7, 0x2000, &page(3)).unwrap();
        w.append(8, 0x1000, &page(9)).unwrap();
        w.finish().unwrap();
        let mut ix = Index::open(&p).unwrap();
        assert_eq!(ix.len(), 3);
        let mut b = page(0);
        assert!(ix.read(7, 0x2abc, &mut b).unwrap());
        assert_eq!(b, page(3));
        assert!(ix.read(7, 0x1000, &mut b).unwrap());
        assert_eq!(b, page(1));
        assert!(!ix.read(7, 0x3000, &mut b).unwrap());
        let dl = d.path().join("dirty");
        write_dirty(&dl, &[(7, 0x1000, 2)]).unwrap();
        ix.remove_dirty(&read_dirty(&dl).unwrap());
        assert!(!ix.contains(7, 0x1000) && !ix.contains(7, 0x2000));
        assert!(ix.contains(8, 0x1000));
        assert_eq!(ix.pages_of(8).collect::<Vec<_>>(), vec![0x1000]);
    }

    #[test]
    fn a_cut_short_store_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pages");
        let mut w = Writer::open(&p).unwrap();
        w.append(1, 0, &page(5)).unwrap();
        w.finish().unwrap();
        let len = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 1).unwrap();
        assert!(matches!(Index::open(&p), Err(Error::Format { .. })));
        std::fs::write(&p, b"NOTASTOR").unwrap();
        assert!(matches!(Index::open(&p), Err(Error::Format { .. })));
        let mut w = Writer::open(&d.path().join("x")).unwrap();
        assert!(w.append(1, 0x10, &page(1)).is_err(), "unaligned refused");
    }

    proptest! {
        #[test]
        fn the_newest_copy_of_every_page_is_read(writes in proptest::collection::vec((0u32..3, 0u64..16, 1u32..4, any::<u8>()), 1..40)) {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("pages");
            let mut w = Writer::open(&p).unwrap();
            let mut model = BTreeMap::new();
            for (pid, pg, n, b) in &writes {
                let data: Vec<u8> = (0..*n).flat_map(|i| page(b.wrapping_add(i as u8))).collect();
                w.append(*pid, pg * PAGE, &data).unwrap();
                for i in 0..*n as u64 {
                    model.insert((*pid, (pg + i) * PAGE), b.wrapping_add(i as u8));
                }
            }
            w.finish().unwrap();
            let ix = Index::open(&p).unwrap();
            prop_assert_eq!(ix.len(), model.len());
            let mut buf = page(0);
            for ((pid, a), b) in model {
                prop_assert!(ix.read(pid, a, &mut buf).unwrap());
                prop_assert_eq!(&buf, &page(b));
            }
        }
    }
}
