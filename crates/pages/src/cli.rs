//! The `ferry-pages` command line: `ferry-pages serve --images DIR --work DIR --source ADDR:PORT
//! [--store FILE --dirty FILE] [--hot FILE] [--record-faults FILE] [--stats FILE]`. Exit status 0 once every lazy
//! page was delivered and the source told to finish, 1 otherwise (the reason is in
//! `WORK/lazy-pages.log` and on stderr).

use crate::server::{run, Config};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ferry-pages",
    about = "ferry's lazy-pages server (replaces `criu lazy-pages --page-server`)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the userfaultfd page faults of a `criu restore --lazy-pages` from the source's page
    /// server (and a local page store).
    Serve {
        /// The restore's image directory (pstree.img, pagemap-PID.img, mm-PID.img).
        #[arg(long)]
        images: PathBuf,
        /// The restore's work directory: lazy-pages.socket and lazy-pages.log go there.
        #[arg(long)]
        work: PathBuf,
        /// The source's page server, ADDR:PORT.
        #[arg(long)]
        source: String,
        /// A page store of pages pushed ahead (served locally unless listed in --dirty).
        #[arg(long)]
        store: Option<PathBuf>,
        /// The pages the source wrote after they were stored.
        #[arg(long, requires = "store")]
        dirty: Option<PathBuf>,
        /// Pages to fetch first (`PID VADDR` lines, as --record-faults writes them).
        #[arg(long)]
        hot: Option<PathBuf>,
        /// Write the first faults, in order, to this file (a hot list for the next move).
        #[arg(long)]
        record_faults: Option<PathBuf>,
        /// Once every page is delivered, write the counts (JSON) to this file.
        #[arg(long)]
        stats: Option<PathBuf>,
        /// Pages fetched around a fault.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
        fault_around: u64,
        /// Pages per background request.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
        chunk: u64,
        /// Background pages in flight, in chunks (--chunk pages each); shorter runs are asked
        /// for many at a time within the same number of pages (32 requests at most).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
        in_flight: u64,
    },
}

/// Runs the command line; returns the process exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let Cmd::Serve {
        images,
        work,
        source,
        store,
        dirty,
        hot,
        record_faults,
        stats,
        fault_around,
        chunk,
        in_flight,
    } = cli.cmd;
    let mut cfg = Config::new(images, work, source);
    cfg.store = store;
    cfg.dirty = dirty;
    cfg.hot = hot;
    cfg.record_faults = record_faults;
    cfg.stats = stats;
    cfg.fault_around = fault_around.next_power_of_two();
    cfg.chunk = chunk;
    cfg.in_flight = in_flight as usize;
    match run(cfg) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ferry-pages: {e}");
            1
        }
    }
}
