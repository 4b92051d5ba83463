//! The hot list: pages a runtime touched first after its last lazy restore, fetched first on the
//! next one. One page per line, `PID VADDR` (VADDR in hex, page aligned), in fault order; the pid
//! is the one in the runtime's CRIU images.

use std::path::Path;

/// Reads a hot list; lines that do not parse are skipped (a hot list is a hint, never required).
pub fn read(path: &Path) -> std::io::Result<Vec<(u32, u64)>> {
    let text = std::fs::read_to_string(path)?;
    Ok(parse(&text))
}

pub fn parse(text: &str) -> Vec<(u32, u64)> {
    text.lines()
        .filter_map(|l| {
            let (p, a) = l.trim().split_once(' ')?;
            let a = u64::from_str_radix(a.trim().trim_start_matches("0x"), 16).ok()?;
            Some((p.parse().ok()?, a & !(crate::PAGE - 1)))
        })
        .collect()
}

pub fn format(pages: &[(u32, u64)]) -> String {
    pages.iter().map(|(p, a)| format!("{p} {a:x}\n")).collect()
}

/// Writes a hot list atomically (a temporary file renamed over `path`).
pub fn write(path: &Path, pages: &[(u32, u64)]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format(pages))?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_skips_junk() {
        let pages = vec![(1, 0x7f00_0000_1000), (12, 0x5000)];
        let text = super::format(&pages) + "junk\n3 zz\n";
        assert_eq!(super::parse(&text), pages);
        assert_eq!(super::parse("1 0x1fff\n"), vec![(1, 0x1000)]);
    }
}
