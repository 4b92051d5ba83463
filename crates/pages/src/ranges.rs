//! Page ranges still owed to a restored process: runs of run-time addresses, each remembering the
//! address it had in the images (a remap moves a run, the image address stays). The lazy-pages
//! server drops a run once its pages are copied in, or when the process unmaps or discards them.

/// One run `[start, end)` at run time, `img` being where `start` was at dump time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub start: u64,
    pub end: u64,
    pub img: u64,
}

impl Run {
    /// The image address of run-time address `addr` (inside the run).
    pub fn img_of(&self, addr: u64) -> u64 {
        self.img + (addr - self.start)
    }
}

/// Sorted, non-overlapping runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Runs {
    runs: Vec<Run>,
}

impl Runs {
    /// Runs from `(start, end, img)` triples; they are sorted here and must not overlap.
    pub fn new(mut v: Vec<Run>) -> Runs {
        v.retain(|r| r.end > r.start);
        v.sort_by_key(|r| r.start);
        Runs { runs: v }
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Run> {
        self.runs.iter()
    }

    /// Bytes still owed.
    pub fn bytes(&self) -> u64 {
        self.runs.iter().map(|r| r.end - r.start).sum()
    }

    /// The run holding `addr`.
    pub fn find(&self, addr: u64) -> Option<Run> {
        let i = self.runs.partition_point(|r| r.end <= addr);
        self.runs.get(i).filter(|r| r.start <= addr).copied()
    }

    /// The parts of runs whose image addresses fall in `[img_start, img_end)`, as run-time runs.
    pub fn by_image(&self, img_start: u64, img_end: u64) -> Vec<Run> {
        let mut out = Vec::new();
        for r in &self.runs {
            let (a, b) = (r.img, r.img + (r.end - r.start));
            let (lo, hi) = (a.max(img_start), b.min(img_end));
            if lo < hi {
                out.push(Run {
                    start: r.start + (lo - a),
                    end: r.start + (hi - a),
                    img: lo,
                });
            }
        }
        out
    }

    /// The lowest run.
    pub fn first(&self) -> Option<Run> {
        self.runs.first().copied()
    }

    /// Adds a run that overlaps none held.
    pub fn insert(&mut self, r: Run) {
        if r.end > r.start {
            let i = self.runs.partition_point(|x| x.start < r.start);
            self.runs.insert(i, r);
        }
    }

    /// Removes run-time range `[start, end)`.
    pub fn drop_range(&mut self, start: u64, end: u64) {
        let mut out = Vec::with_capacity(self.runs.len() + 1);
        for r in self.runs.drain(..) {
            if r.end <= start || r.start >= end {
                out.push(r);
                continue;
            }
            if r.start < start {
                out.push(Run {
                    start: r.start,
                    end: start,
                    img: r.img,
                });
            }
            if r.end > end {
                out.push(Run {
                    start: end,
                    end: r.end,
                    img: r.img_of(end),
                });
            }
        }
        self.runs = out;
    }

    /// Moves run-time range `[from, from + len)` to `to` (an mremap).
    pub fn remap(&mut self, from: u64, to: u64, len: u64) {
        let end = from + len;
        let moved: Vec<Run> = self
            .runs
            .iter()
            .filter_map(|r| {
                let (lo, hi) = (r.start.max(from), r.end.min(end));
                (lo < hi).then(|| Run {
                    start: lo - from + to,
                    end: hi - from + to,
                    img: r.img_of(lo),
                })
            })
            .collect();
        self.drop_range(from, end);
        // Whatever was at the destination is replaced by the moved pages.
        self.drop_range(to, to + len);
        self.runs.extend(moved);
        self.runs.sort_by_key(|r| r.start);
    }

    /// Splits runs at every boundary in `cuts` (sorted or not), so that no run crosses one.
    pub fn split_at(&mut self, cuts: &[u64]) {
        let mut out = Vec::with_capacity(self.runs.len());
        for r in self.runs.drain(..) {
            let mut s = r.start;
            let mut inner: Vec<u64> = cuts
                .iter()
                .copied()
                .filter(|c| *c > r.start && *c < r.end)
                .collect();
            inner.sort_unstable();
            inner.dedup();
            for c in inner.into_iter().chain(std::iter::once(r.end)) {
                out.push(Run {
                    start: s,
                    end: c,
                    img: r.img_of(s),
                });
                s = c;
            }
        }
        self.runs = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: u64, end: u64, img: u64) -> Run {
        Run { start, end, img }
    }

    #[test]
    fn drop_splits_and_trims() {
        let mut r = Runs::new(vec![
            run(0x1000, 0x5000, 0x1000),
            run(0x8000, 0x9000, 0x8000),
        ]);
        r.drop_range(0x2000, 0x3000);
        assert_eq!(
            r.iter().copied().collect::<Vec<_>>(),
            vec![
                run(0x1000, 0x2000, 0x1000),
                run(0x3000, 0x5000, 0x3000),
                run(0x8000, 0x9000, 0x8000)
            ]
        );
        r.drop_range(0x0, 0x8800);
        assert_eq!(
            r.iter().copied().collect::<Vec<_>>(),
            vec![run(0x8800, 0x9000, 0x8800)]
        );
        assert_eq!(r.find(0x8800), Some(run(0x8800, 0x9000, 0x8800)));
        assert_eq!(r.find(0x8000), None);
        assert_eq!(r.bytes(), 0x800);
    }

    #[test]
    fn remap_keeps_image_addresses() {
        let mut r = Runs::new(vec![run(0x1000, 0x4000, 0x1000)]);
        r.remap(0x2000, 0x10000, 0x1000);
        assert_eq!(
            r.iter().copied().collect::<Vec<_>>(),
            vec![
                run(0x1000, 0x2000, 0x1000),
                run(0x3000, 0x4000, 0x3000),
                run(0x10000, 0x11000, 0x2000)
            ]
        );
        assert_eq!(r.by_image(0x2000, 0x3800).len(), 2);
        assert_eq!(
            r.by_image(0x2000, 0x2800),
            vec![run(0x10000, 0x10800, 0x2000)]
        );
    }

    #[test]
    fn split_at_vma_boundaries() {
        let mut r = Runs::new(vec![run(0x1000, 0x6000, 0x1000)]);
        r.split_at(&[0x3000, 0x1000, 0x9000, 0x5000]);
        assert_eq!(
            r.iter().copied().collect::<Vec<_>>(),
            vec![
                run(0x1000, 0x3000, 0x1000),
                run(0x3000, 0x5000, 0x3000),
                run(0x5000, 0x6000, 0x5000)
            ]
        );
    }
}
