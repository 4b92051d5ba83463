//! What the server holds and still has to fetch for one process of the images: the lazy runs not
//! yet asked for (`todo`, image addresses), the runs held in the local page store and not yet
//! read (`stored`), and the pages already here (`cache`, by image address). Decides what to ask
//! the source for next: a fault's neighbourhood first, then the hot list, then the rest in small
//! chunks, smallest runs first; the store is read the same way, a chunk at a time.

use crate::ranges::{Run, Runs};
use crate::PAGE;
use std::collections::BTreeMap;

pub struct Proc {
    pub pid: u32,
    pub todo: Runs,
    /// Runs the page store holds (taken out of `todo`), not read yet.
    pub stored: Runs,
    pub cache: BTreeMap<u64, Vec<u8>>,
    pub total_pages: u64,
}

impl Proc {
    pub fn new(pid: u32, lazy: &Runs) -> Proc {
        Proc {
            pid,
            todo: lazy.clone(),
            stored: Runs::default(),
            cache: BTreeMap::new(),
            total_pages: lazy.bytes() / PAGE,
        }
    }

    /// The cached chunk holding image address `img`: `(chunk start, data)`.
    pub fn cached(&self, img: u64) -> Option<(u64, &[u8])> {
        let (s, d) = self.cache.range(..=img).next_back()?;
        (img < s + d.len() as u64).then_some((*s, d.as_slice()))
    }

    /// Takes the `pages`-page window around image address `img` (aligned to the window, clipped
    /// to the not-yet-fetched run holding `img`) out of `todo`; `None` if `img` is not to fetch.
    pub fn take_around(&mut self, img: u64, pages: u64) -> Option<(u64, u64)> {
        around(&mut self.todo, img, pages)
    }

    /// Takes the next `pages`-page chunk out of `todo`: from the smallest run left (lowest address
    /// among equals), in address order within it. Small runs are the interpreter's heap, stacks
    /// and libraries' data, which a resumed process touches first; big ones are its bulk data.
    pub fn take_next(&mut self, pages: u64) -> Option<(u64, u64)> {
        next(&mut self.todo, pages)
    }

    /// As [`Proc::take_around`], from the runs the page store holds.
    pub fn take_stored_around(&mut self, img: u64, pages: u64) -> Option<(u64, u64)> {
        around(&mut self.stored, img, pages)
    }

    /// As [`Proc::take_next`], from the runs the page store holds.
    pub fn take_stored_next(&mut self, pages: u64) -> Option<(u64, u64)> {
        next(&mut self.stored, pages)
    }

    /// Gives back what a short answer did not bring.
    pub fn give_back(&mut self, start: u64, end: u64) {
        self.todo.insert(Run {
            start,
            end,
            img: start,
        });
    }

    /// Holds pages that arrived (or were read from the page store).
    pub fn put(&mut self, vaddr: u64, data: Vec<u8>) {
        self.cache.insert(vaddr, data);
    }

    pub fn cached_pages(&self) -> u64 {
        self.cache.values().map(|d| d.len() as u64 / PAGE).sum()
    }

    /// Moves the pages of `todo` that `store` holds (and the source did not write since) to
    /// `stored`, so that they never go over the network; nothing is read yet. Returns how many.
    pub fn mark_stored(&mut self, store: &crate::store::Index) -> u64 {
        let mut n = 0;
        let runs: Vec<Run> = self.todo.iter().copied().collect();
        for r in runs {
            let mut a = r.start;
            while a < r.end {
                if !store.contains(self.pid, a) {
                    a += PAGE;
                    continue;
                }
                let start = a;
                while a < r.end && store.contains(self.pid, a) {
                    a += PAGE;
                }
                n += (a - start) / PAGE;
                self.todo.drop_range(start, a);
                self.stored.insert(Run {
                    start,
                    end: a,
                    img: start,
                });
            }
        }
        n
    }

    /// Reads `pages` pages from image address `start` (taken out of `stored`) from `store` into
    /// the cache; pages stored one after another in its file are read with one call.
    pub fn read_stored(
        &mut self,
        store: &crate::store::Index,
        start: u64,
        pages: u64,
    ) -> std::io::Result<()> {
        let end = start + pages * PAGE;
        let mut data = vec![0u8; (pages * PAGE) as usize];
        let mut a = start;
        while a < end {
            let first = store
                .offset(self.pid, a)
                .ok_or_else(|| std::io::Error::other(format!("page {a:#x} left the page store")))?;
            let mut n = 1;
            while a + n * PAGE < end
                && store.offset(self.pid, a + n * PAGE) == Some(first + n * PAGE)
            {
                n += 1;
            }
            let off = (a - start) as usize;
            store.read_at(first, &mut data[off..off + (n * PAGE) as usize])?;
            a += n * PAGE;
        }
        self.put(start, data);
        Ok(())
    }
}

/// The `pages`-page window of `runs` around `img` (aligned, clipped to its run), taken out.
fn around(runs: &mut Runs, img: u64, pages: u64) -> Option<(u64, u64)> {
    let r = runs.find(img)?;
    let w = pages * PAGE;
    let lo = (img & !(w - 1)).max(r.start);
    let hi = ((img & !(w - 1)) + w).min(r.end);
    runs.drop_range(lo, hi);
    Some((lo, (hi - lo) / PAGE))
}

/// The next `pages`-page chunk of `runs`, from the smallest run left, taken out.
fn next(runs: &mut Runs, pages: u64) -> Option<(u64, u64)> {
    let r = runs
        .iter()
        .min_by_key(|r| (r.end - r.start, r.start))
        .copied()?;
    let hi = r.end.min(r.start + pages * PAGE);
    runs.drop_range(r.start, hi);
    Some((r.start, (hi - r.start) / PAGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_with(runs: &[(u64, u64)]) -> Proc {
        let r = Runs::new(
            runs.iter()
                .map(|&(s, e)| Run {
                    start: s,
                    end: e,
                    img: s,
                })
                .collect(),
        );
        Proc::new(1, &r)
    }

    #[test]
    fn fault_window_is_aligned_and_clipped() {
        let mut p = proc_with(&[(0x3000, 0x40000)]);
        // 16 pages = 0x10000: the fault at 0x12345 takes 0x10000..0x20000.
        assert_eq!(p.take_around(0x12345, 16), Some((0x10000, 16)));
        assert_eq!(p.take_around(0x12345, 16), None, "already taken");
        // Clipped at the run's start.
        assert_eq!(p.take_around(0x4000, 16), Some((0x3000, 13)));
        assert_eq!(p.take_next(4), Some((0x20000, 4)));
        p.give_back(0x22000, 0x24000);
        // The smallest run first: the two pages given back, then the rest.
        assert_eq!(p.take_next(64), Some((0x22000, 2)));
        assert_eq!(p.take_next(64), Some((0x24000, 28)));
        assert_eq!(p.take_next(64), None);
        let mut q = proc_with(&[(0x1000, 0x9000), (0x20000, 0x22000), (0x30000, 0x32000)]);
        assert_eq!(q.take_next(64), Some((0x20000, 2)));
        assert_eq!(q.take_next(64), Some((0x30000, 2)));
        assert_eq!(q.take_next(4), Some((0x1000, 4)));
    }

    /// A page store of records `(pid, vaddr, pages, byte)`, each page filled with `byte`, and its
    /// index (the directory holding it lives as long as the first value).
    fn store_of(records: &[(u32, u64, u64, u8)]) -> (tempfile::TempDir, crate::store::Index) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let mut w = crate::store::Writer::open(&path).unwrap();
        for &(pid, vaddr, pages, byte) in records {
            w.append(pid, vaddr, &vec![byte; (pages * PAGE) as usize])
                .unwrap();
        }
        w.finish().unwrap();
        let idx = crate::store::Index::open(&path).unwrap();
        (dir, idx)
    }

    #[test]
    fn store_runs_are_read_on_demand_into_the_cache() {
        let (_dir, mut idx) = store_of(&[(1, 0x2000, 2, 7), (2, 0x2000, 1, 9)]);
        idx.remove_dirty(&[(1, 0x3000, 1)]);
        let mut p = proc_with(&[(0x1000, 0x5000)]);
        assert_eq!(p.mark_stored(&idx), 1);
        assert!(
            p.cached(0x2000).is_none(),
            "nothing read before it is asked for"
        );
        assert_eq!(p.take_stored_around(0x2fff, 32), Some((0x2000, 1)));
        assert_eq!(p.take_stored_next(64), None);
        p.read_stored(&idx, 0x2000, 1).unwrap();
        let (s, d) = p.cached(0x2fff).unwrap();
        assert_eq!((s, d.len(), d[0]), (0x2000, PAGE as usize, 7));
        assert!(p.cached(0x3000).is_none());
        assert_eq!(p.take_next(64), Some((0x1000, 1)));
        assert_eq!(p.take_next(64), Some((0x3000, 2)));
    }

    #[test]
    fn a_stored_run_reads_the_newest_copy_of_each_page() {
        let (_dir, idx) = store_of(&[(1, 0x2000, 3, 7), (1, 0x3000, 1, 8)]);
        let mut p = proc_with(&[(0x2000, 0x5000)]);
        assert_eq!(p.mark_stored(&idx), 3);
        assert_eq!(p.take_stored_next(64), Some((0x2000, 3)));
        p.read_stored(&idx, 0x2000, 3).unwrap();
        let (_, d) = p.cached(0x2000).unwrap();
        let firsts: Vec<u8> = d.chunks(PAGE as usize).map(|c| c[0]).collect();
        assert_eq!(firsts, vec![7, 8, 7]);
        assert!(p.todo.is_empty());
    }
}
