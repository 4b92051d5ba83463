//! The lazy-pages server: ferry's drop-in replacement for `criu lazy-pages --page-server`.
//!
//! What it does, in one single-threaded loop (plus one thread reading the source's answers):
//! - listens on `lazy-pages.socket` in the work dir, where `criu restore --lazy-pages` connects and
//!   sends, per process of `pstree.img`, its pid (an `int`; negative for a zombie, then nothing
//!   more) and its userfaultfd (SCM_RIGHTS), and after the restore the `int` 0x52535446;
//! - connects to the source's page server at once and fetches every lazy page into its own memory,
//!   before and during the restore, in small chunks with few in flight, so that a fault waits at
//!   most behind those; a fault asks for a window of pages around it, ahead of everything else;
//! - copies pages into the process (`UFFDIO_COPY`) on a fault and, without waiting for the restore
//!   to finish, as soon as the process's memory is registered (a copy into a range not registered
//!   yet fails with ENOENT and is retried), in slices so that faults are served in between;
//! - pages held in a page store (and not in its dirty list) are served locally, never fetched:
//!   read from it on a fault (the window around it) and otherwise a chunk per loop turn, so that
//!   the restore never waits for the whole store to be read;
//! - a hot list (pages touched first after the previous move) is fetched first, and the order of
//!   this move's first faults can be recorded for the next one;
//! - when every lazy page is in and the restore has finished, tells the source to finish
//!   (`PS_IOV_CLOSE`, waits for its answer) and exits 0. If the source goes away or the link
//!   breaks before, it logs why and exits 1 (the caller must then treat the process as lost).
//!
//! It does not yet: handle shared-memory (shmem) pagemaps (CRIU does not serve them lazily either),
//! or TLS to the page server.

use crate::fetch::Proc;
use crate::net::{Arrival, Link};
use crate::ranges::Runs;
use crate::uffd::{self, Event, Fill};
use crate::{image, PAGE};
use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const RESTORE_FINISHED: u32 = 0x5253_5446;
/// How many faults to record for the next move's hot list.
const RECORD_MAX: usize = 4096;
/// Background requests in flight at most (see `Server::schedule`).
const MAX_BULK_REQUESTS: usize = 32;
/// Pages read from the page store per loop turn (between two looks at faults): small, because a
/// fault waits for the turn under way, and a store not in the page cache reads at disk speed
/// (4 MB turns let a runtime writing through its memory starve its own server: measured).
const STORE_CHUNK: u64 = 256;

#[derive(Clone, Debug)]
pub struct Config {
    pub images: PathBuf,
    pub work: PathBuf,
    pub source: String,
    pub store: Option<PathBuf>,
    pub dirty: Option<PathBuf>,
    pub hot: Option<PathBuf>,
    pub record_faults: Option<PathBuf>,
    /// Where to write the counts (JSON) once every page was delivered.
    pub stats: Option<PathBuf>,
    /// Pages fetched for a fault (an aligned window around it).
    pub fault_around: u64,
    /// Pages per background request.
    pub chunk: u64,
    /// Background requests in flight at most.
    pub in_flight: usize,
    /// Bytes copied into the processes per loop turn, between two looks at faults.
    pub copy_slice: u64,
}

impl Config {
    pub fn new(images: PathBuf, work: PathBuf, source: String) -> Config {
        Config {
            images,
            work,
            source,
            store: None,
            dirty: None,
            hot: None,
            record_faults: None,
            stats: None,
            fault_around: 32,
            chunk: 64,
            in_flight: 2,
            copy_slice: 4 << 20,
        }
    }
}

struct Task {
    pid: u32,
    fd: OwnedFd,
    owed: Runs,
    /// Faulting pages (run-time addresses) waiting for their data.
    waiting: Vec<u64>,
    gone: bool,
    /// A copy was refused for now; try again from then.
    retry_at: Option<Instant>,
}

struct Request {
    pid: u32,
    vaddr: u64,
    pages: u64,
    fault: bool,
}

#[derive(Default)]
struct Counts {
    faults: u64,
    fault_requests: u64,
    bulk_requests: u64,
    fetched_pages: u64,
    stored_pages: u64,
    copied_pages: u64,
    zero_faults: u64,
}

pub struct Server {
    cfg: Config,
    procs: BTreeMap<u32, Proc>,
    lazy: BTreeMap<u32, Runs>,
    tasks: Vec<Task>,
    link: Link,
    inflight: VecDeque<Request>,
    hot: VecDeque<(u32, u64)>,
    nr_tasks: usize,
    received: usize,
    restore_finished: bool,
    listener: Option<UnixListener>,
    client: Option<UnixStream>,
    closing: bool,
    copy_more: bool,
    log: std::fs::File,
    t0: Instant,
    recorded: Vec<(u32, u64)>,
    n: Counts,
    /// The page store, when one was given (pages still in `Proc::stored` are read from it).
    store: Option<crate::store::Index>,
    /// Every hot page the store held was read.
    hot_stored_read: bool,
    /// The source's link broke when nothing still owed had to come from it.
    source_gone: bool,
}

/// Runs the server; the error says why it stopped before every page was delivered.
pub fn run(cfg: Config) -> Result<(), String> {
    let t0 = Instant::now();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cfg.work.join("lazy-pages.log"))
        .map_err(|e| format!("cannot open the log in {}: {e}", cfg.work.display()))?;
    let mut srv = Server::start(cfg, log, t0)?;
    let r = srv.serve();
    match &r {
        Ok(()) => srv.say("all lazy pages delivered; the source was told to finish"),
        Err(e) => srv.say(&format!("Error: {e}")),
    }
    srv.summary();
    if let (Ok(()), Some(p)) = (&r, srv.cfg.stats.clone()) {
        if let Err(e) = std::fs::write(&p, srv.stats_json()) {
            srv.say(&format!("cannot write the counts to {}: {e}", p.display()));
        }
    }
    r
}

impl Server {
    fn start(cfg: Config, mut log: std::fs::File, t0: Instant) -> Result<Server, String> {
        let tree = image::pstree(&cfg.images).map_err(|e| e.to_string())?;
        let mut lazy = BTreeMap::new();
        let mut procs = BTreeMap::new();
        for t in &tree {
            // A zombie has no memory images.
            if !cfg.images.join(format!("pagemap-{}.img", t.pid)).exists() {
                continue;
            }
            let runs = image::lazy_runs(&cfg.images, t.pid).map_err(|e| e.to_string())?;
            procs.insert(t.pid, Proc::new(t.pid, &runs));
            lazy.insert(t.pid, runs);
        }
        // The source first (fetching starts at once), then the socket: the restore may start as
        // soon as it exists. Bound by its relative name, as CRIU does, from inside the work dir.
        let link = Link::connect(&cfg.source)
            .map_err(|e| format!("cannot connect to the page server at {}: {e}", cfg.source))?;
        std::env::set_current_dir(&cfg.work)
            .map_err(|e| format!("cannot enter {}: {e}", cfg.work.display()))?;
        let _ = std::fs::remove_file("lazy-pages.socket");
        let listener = UnixListener::bind("lazy-pages.socket")
            .map_err(|e| format!("cannot listen on lazy-pages.socket: {e}"))?;
        let _ = writeln!(
            log,
            "[{:8.3}] ferry-pages: {} processes, {} lazy pages, source {}",
            t0.elapsed().as_secs_f64(),
            tree.len(),
            procs.values().map(|p| p.total_pages).sum::<u64>(),
            cfg.source
        );
        let mut srv = Server {
            nr_tasks: tree.len(),
            procs,
            lazy,
            tasks: Vec::new(),
            link,
            inflight: VecDeque::new(),
            hot: VecDeque::new(),
            received: 0,
            restore_finished: false,
            listener: Some(listener),
            client: None,
            closing: false,
            copy_more: false,
            log,
            t0,
            recorded: Vec::new(),
            n: Counts::default(),
            store: None,
            hot_stored_read: false,
            source_gone: false,
            cfg,
        };
        srv.load_store()?;
        if let Some(h) = srv.cfg.hot.clone() {
            match crate::hot::read(&h) {
                Ok(v) => {
                    srv.say(&format!("hot list: {} pages", v.len()));
                    srv.hot = v.into();
                }
                Err(e) => srv.say(&format!("no hot list ({}: {e})", h.display())),
            }
        }
        Ok(srv)
    }

    fn say(&mut self, msg: &str) {
        let _ = writeln!(self.log, "[{:8.3}] {msg}", self.t0.elapsed().as_secs_f64());
    }

    fn summary(&mut self) {
        let n = &self.n;
        let msg = format!(
            "faults {} ({} zero, {} sent a request), requests {} bulk, pages fetched {}, from the store {}, copied {}",
            n.faults, n.zero_faults, n.fault_requests, n.bulk_requests, n.fetched_pages, n.stored_pages, n.copied_pages
        );
        self.say(&msg);
        if let Some(p) = self.cfg.record_faults.clone() {
            if let Err(e) = crate::hot::write(&p, &self.recorded) {
                self.say(&format!("cannot record faults in {}: {e}", p.display()));
            }
        }
    }

    /// The counts as a JSON object of numbers (`pages_fetched`: over the network from the
    /// source; `pages_from_store`: from the local page store; `faults`; `pages_copied`; `ms`:
    /// the server's whole life).
    fn stats_json(&self) -> String {
        let n = &self.n;
        format!(
            "{{\"faults\": {}, \"pages_fetched\": {}, \"pages_from_store\": {}, \"pages_copied\": {}, \"ms\": {:.1}}}\n",
            n.faults,
            n.fetched_pages,
            n.stored_pages,
            n.copied_pages,
            self.t0.elapsed().as_secs_f64() * 1e3
        )
    }

    fn load_store(&mut self) -> Result<(), String> {
        let Some(path) = self.cfg.store.clone() else {
            return Ok(());
        };
        let mut idx = crate::store::Index::open(&path).map_err(|e| e.to_string())?;
        if let Some(d) = &self.cfg.dirty {
            let dirty = crate::store::read_dirty(d).map_err(|e| e.to_string())?;
            idx.remove_dirty(&dirty);
        }
        let n: u64 = self.procs.values_mut().map(|p| p.mark_stored(&idx)).sum();
        self.store = Some(idx);
        self.say(&format!("page store: {n} lazy pages held locally"));
        Ok(())
    }

    /// Reads `pages` pages of process `pid` from image address `vaddr` out of the page store into
    /// its cache.
    fn read_stored(&mut self, pid: u32, vaddr: u64, pages: u64) -> Result<(), String> {
        let (Some(store), Some(p)) = (self.store.as_ref(), self.procs.get_mut(&pid)) else {
            return Err("a stored page without a page store".into());
        };
        p.read_stored(store, vaddr, pages)
            .map_err(|e| format!("reading the page store: {e}"))?;
        self.n.stored_pages += pages;
        self.copy_more = true;
        Ok(())
    }

    fn done(&self) -> bool {
        self.restore_finished
            && self.received == self.nr_tasks
            && self.tasks.iter().all(|t| t.gone || t.owed.is_empty())
    }

    fn serve(&mut self) -> Result<(), String> {
        loop {
            self.schedule()?;
            if self.done() && self.source_gone {
                self.say("every process has its pages (from the store; the source is gone)");
                return Ok(());
            }
            if self.done() && !self.closing && self.inflight.is_empty() {
                self.say("every process has its pages; closing the page server connection");
                if let Err(e) = self.link.close() {
                    // Every page is in: the source's end no longer matters to the processes.
                    self.say(&format!(
                        "warning: after every page was delivered, telling the page server to finish failed: {e}"
                    ));
                    return Ok(());
                }
                self.closing = true;
            }
            let mut fds: Vec<libc::pollfd> = Vec::new();
            let pfd = |fd: RawFd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            fds.push(pfd(self.link.wake_fd()));
            let l_at = self.listener.as_ref().map(|l| {
                fds.push(pfd(l.as_raw_fd()));
                fds.len() - 1
            });
            let c_at = self.client.as_ref().map(|c| {
                fds.push(pfd(c.as_raw_fd()));
                fds.len() - 1
            });
            let first_task = fds.len();
            let live: Vec<usize> = (0..self.tasks.len())
                .filter(|&i| !self.tasks[i].gone)
                .collect();
            for &i in &live {
                fds.push(pfd(self.tasks[i].fd.as_raw_fd()));
            }
            let timeout = if self.copy_more {
                0
            } else if self.tasks.iter().any(|t| t.retry_at.is_some() && !t.gone) {
                2
            } else {
                -1
            };
            // SAFETY: `fds` is a valid array of pollfd for the call.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, timeout) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("poll: {e}"));
            }
            // Faults first.
            for (k, &i) in live.iter().enumerate() {
                let re = fds[first_task + k].revents;
                if re & libc::POLLIN != 0 {
                    self.read_events(i)?;
                } else if re & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                    self.tasks[i].gone = true;
                }
            }
            if fds[0].revents != 0 {
                self.link.drain_wake();
                while let Ok(a) = self.link.arrivals.try_recv() {
                    if self.arrived(a)? {
                        return Ok(());
                    }
                }
            }
            if let Some(k) = l_at {
                if fds[k].revents != 0 {
                    self.accept()?;
                }
            }
            if let Some(k) = c_at {
                if fds[k].revents != 0 {
                    self.handle_restore_message()?;
                }
            }
            let now = Instant::now();
            if self
                .tasks
                .iter()
                .any(|t| !t.gone && t.retry_at.is_some_and(|at| at <= now))
            {
                self.copy_more = true;
            }
            self.copy_some()?;
        }
    }

    fn accept(&mut self) -> Result<(), String> {
        let Some(l) = self.listener.take() else {
            return Ok(());
        };
        let (c, _) = l
            .accept()
            .map_err(|e| format!("accepting the restore's connection: {e}"))?;
        self.say("the restore connected");
        self.client = Some(c);
        Ok(())
    }

    /// One message from `criu restore`: a process's pid and userfaultfd, or the end of the restore.
    fn handle_restore_message(&mut self) -> Result<(), String> {
        let Some(c) = self.client.as_mut() else {
            return Ok(());
        };
        let mut b = [0u8; 4];
        match c.read(&mut b[..1]) {
            Ok(0) => {
                self.client = None;
                if !self.restore_finished {
                    return Err("the restore closed its connection before it finished".into());
                }
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(format!("reading from the restore: {e}")),
        }
        c.read_exact(&mut b[1..])
            .map_err(|e| format!("reading from the restore: {e}"))?;
        if self.received == self.nr_tasks {
            let v = u32::from_ne_bytes(b);
            if v != RESTORE_FINISHED {
                return Err(format!("unexpected message {v:#x} from the restore"));
            }
            self.restore_finished = true;
            self.copy_more = true;
            self.say("the restore finished");
            return Ok(());
        }
        let pid = i32::from_ne_bytes(b);
        self.received += 1;
        if pid < 0 {
            self.say(&format!("zombie {}", -pid));
            return Ok(());
        }
        let fd = recv_fd(c.as_raw_fd())
            .map_err(|e| format!("receiving the userfaultfd of {pid}: {e}"))?;
        let pid = pid as u32;
        let owed = self.lazy.get(&pid).cloned().unwrap_or_default();
        self.say(&format!(
            "process {pid}: userfaultfd received, {} lazy pages",
            owed.bytes() / PAGE
        ));
        self.tasks.push(Task {
            pid,
            fd,
            owed,
            waiting: Vec::new(),
            gone: false,
            retry_at: None,
        });
        self.copy_more = true;
        Ok(())
    }

    fn read_events(&mut self, i: usize) -> Result<(), String> {
        loop {
            let fd = self.tasks[i].fd.as_raw_fd();
            let ev = match uffd::read_event(fd) {
                Ok(Some(ev)) => ev,
                Ok(None) => return Ok(()),
                Err(e) => {
                    if self.tasks[i].owed.is_empty() {
                        self.tasks[i].gone = true;
                        return Ok(());
                    }
                    return Err(format!(
                        "reading events of process {}: {e}",
                        self.tasks[i].pid
                    ));
                }
            };
            match ev {
                Event::PageFault { addr } => self.fault(i, addr & !(PAGE - 1))?,
                Event::Fork { ufd } => {
                    // SAFETY: the kernel installed this descriptor in our table for us.
                    let fd = unsafe { OwnedFd::from_raw_fd(ufd) };
                    let p = &self.tasks[i];
                    let child = Task {
                        pid: p.pid,
                        fd,
                        owed: p.owed.clone(),
                        waiting: Vec::new(),
                        gone: false,
                        retry_at: None,
                    };
                    self.say(&format!("process {}: fork", p.pid));
                    self.tasks.push(child);
                    self.copy_more = true;
                }
                Event::Remap { from, to, len } => self.tasks[i].owed.remap(from, to, len),
                Event::Remove { start, end } => {
                    if let Err(e) = uffd::unregister(fd, start, end - start) {
                        if e.raw_os_error() == Some(libc::ENOMEM) {
                            self.tasks[i].gone = true;
                            return Ok(());
                        }
                        return Err(format!("unregistering {start:#x}-{end:#x}: {e}"));
                    }
                    self.tasks[i].owed.drop_range(start, end);
                }
                Event::Unmap { start, end } => self.tasks[i].owed.drop_range(start, end),
                Event::Other(e) => return Err(format!("unexpected userfaultfd event {e:#x}")),
            }
        }
    }

    fn fault(&mut self, i: usize, page: u64) -> Result<(), String> {
        self.n.faults += 1;
        let t = &self.tasks[i];
        let Some(run) = t.owed.find(page) else {
            // Not a lazy page (or one already copied in by the time this fault is read).
            self.n.zero_faults += 1;
            let fd = t.fd.as_raw_fd();
            match uffd::zero(fd, page, PAGE) {
                Ok(Fill::Gone) => self.tasks[i].gone = true,
                Ok(_) => {}
                Err(e) => return Err(format!("zero page at {page:#x}: {e}")),
            }
            return Ok(());
        };
        let pid = t.pid;
        let img = run.img_of(page);
        if self.recorded.len() < RECORD_MAX {
            self.recorded.push((pid, page));
        }
        if self.procs.get(&pid).and_then(|p| p.cached(img)).is_some() {
            return self.copy_cached_at(i, img, Some(self.cfg.fault_around));
        }
        let fa = self.cfg.fault_around;
        if let Some((vaddr, pages)) = self
            .procs
            .get_mut(&pid)
            .and_then(|p| p.take_stored_around(img, fa))
        {
            self.read_stored(pid, vaddr, pages)?;
            return self.copy_cached_at(i, img, None);
        }
        self.tasks[i].waiting.push(page);
        let asked = self
            .inflight
            .iter()
            .any(|r| r.pid == pid && img >= r.vaddr && img < r.vaddr + r.pages * PAGE);
        if asked {
            return Ok(());
        }
        let Some((vaddr, pages)) = self
            .procs
            .get_mut(&pid)
            .and_then(|p| p.take_around(img, fa))
        else {
            return Err(format!(
                "process {pid}: page {img:#x} is owed but neither here nor asked for"
            ));
        };
        self.n.fault_requests += 1;
        self.request(pid, vaddr, pages, true)
    }

    fn request(&mut self, pid: u32, vaddr: u64, pages: u64, fault: bool) -> Result<(), String> {
        self.link
            .get(pid, vaddr, pages)
            .map_err(|e| format!("sending a request to the page server: {e}"))?;
        self.inflight.push_back(Request {
            pid,
            vaddr,
            pages,
            fault,
        });
        Ok(())
    }

    /// Keeps a few background requests in flight: the hot list first, then address order. Reads
    /// one chunk of the page store per turn (the hot list's first, if stored).
    fn schedule(&mut self) -> Result<(), String> {
        if self.closing || self.done() {
            return Ok(());
        }
        let chunk = self.cfg.chunk;
        let mut from_store = None;
        if !self.hot_stored_read {
            from_store = self.hot.iter().find_map(|&(pid, a)| {
                self.procs
                    .get_mut(&pid)
                    .and_then(|p| p.take_stored_around(a, chunk))
                    .map(|w| (pid, w))
            });
            // No new stored runs appear: once none of the hot list is left there, never again.
            self.hot_stored_read = from_store.is_none();
        }
        let from_store = from_store.or_else(|| {
            self.procs
                .values_mut()
                .find_map(|p| p.take_stored_next(STORE_CHUNK).map(|w| (p.pid, w)))
        });
        if let Some((pid, (vaddr, pages))) = from_store {
            self.read_stored(pid, vaddr, pages)?;
        }
        // At most `in_flight` full chunks' worth of pages in flight for the background, however
        // many requests that takes (up to MAX_BULK_REQUESTS): the short runs a pre-copy's dirty
        // list leaves are fetched many at a time, not two per round trip.
        let budget = self.cfg.in_flight as u64 * chunk;
        loop {
            let bulk = self.inflight.iter().filter(|r| !r.fault);
            let (requests, pages) = bulk.fold((0, 0), |(n, p), r| (n + 1, p + r.pages));
            if requests >= MAX_BULK_REQUESTS || pages >= budget {
                break;
            }
            let mut next = None;
            while let Some((pid, a)) = self.hot.pop_front() {
                if let Some(w) = self
                    .procs
                    .get_mut(&pid)
                    .and_then(|p| p.take_around(a, chunk))
                {
                    next = Some((pid, w));
                    break;
                }
            }
            if next.is_none() {
                next = self
                    .procs
                    .values_mut()
                    .find_map(|p| p.take_next(chunk).map(|w| (p.pid, w)));
            }
            let Some((pid, (vaddr, pages))) = next else {
                return Ok(());
            };
            self.n.bulk_requests += 1;
            self.request(pid, vaddr, pages, false)?;
        }
        Ok(())
    }

    /// Handles an answer; true when the server is done.
    fn arrived(&mut self, a: Arrival) -> Result<bool, String> {
        match a {
            Arrival::Pages { pid, vaddr, data } => {
                let req = self
                    .inflight
                    .pop_front()
                    .ok_or("the page server sent pages nobody asked for")?;
                let got = data.len() as u64 / PAGE;
                self.n.fetched_pages += got;
                let p = self
                    .procs
                    .get_mut(&pid)
                    .ok_or("pages of an unknown process")?;
                if got < req.pages {
                    p.give_back(vaddr + got * PAGE, req.vaddr + req.pages * PAGE);
                }
                let end = vaddr + got * PAGE;
                p.put(vaddr, data);
                // Faults waiting for these pages get them now, with the rest of the chunk.
                for i in 0..self.tasks.len() {
                    let t = &mut self.tasks[i];
                    if t.pid != pid || t.gone || t.waiting.is_empty() {
                        continue;
                    }
                    let owed = &t.owed;
                    let hit = t.waiting.iter().any(|w| {
                        owed.find(*w)
                            .map(|r| r.img_of(*w))
                            .is_some_and(|g| g >= vaddr && g < end)
                    });
                    if hit {
                        self.copy_cached_at(i, vaddr, None)?;
                    }
                }
                self.copy_more = true;
                Ok(false)
            }
            Arrival::CloseAck(st) => {
                self.say(&format!(
                    "the page server acknowledged the end (status {st})"
                ));
                Ok(true)
            }
            Arrival::Broken(e) => {
                if self.done() {
                    self.say(&format!("warning: after every page was delivered: {e}"));
                    return Ok(true);
                }
                if self.inflight.is_empty() && self.procs.values().all(|p| p.todo.is_empty()) {
                    // Nothing still owed has to come from the source: the rest is in the store.
                    self.say(&format!(
                        "warning: the page source went away ({e}); every page still owed is in the page store"
                    ));
                    self.source_gone = true;
                    return Ok(false);
                }
                let missing: u64 = self
                    .tasks
                    .iter()
                    .filter(|t| !t.gone)
                    .map(|t| t.owed.bytes() / PAGE)
                    .sum();
                Err(format!(
                    "the page source went away before every page was delivered ({missing} pages still owed to the restored processes): {e}"
                ))
            }
        }
    }

    /// Copies the cached chunk holding image address `img` into task `i` (a fault and its
    /// neighbourhood), and wakes whoever waits on it. With `window` (pages), only the aligned
    /// window of the chunk around `img`: a chunk read ahead from the page store is large
    /// (STORE_CHUNK pages), and a fault must not wait for all of it; the rest goes in the
    /// background.
    fn copy_cached_at(&mut self, i: usize, img: u64, window: Option<u64>) -> Result<(), String> {
        let pid = self.tasks[i].pid;
        let Some((start, data)) = self.procs.get(&pid).and_then(|p| p.cached(img)) else {
            return Ok(());
        };
        let end = start + data.len() as u64;
        let (lo, hi) = match window {
            Some(pages) => {
                let w = pages * PAGE;
                let at = img & !(w - 1);
                (at.max(start), (at + w).min(end))
            }
            None => (start, end),
        };
        let t = &mut self.tasks[i];
        let copied = copy_into(t, lo, &data[(lo - start) as usize..(hi - start) as usize])?;
        self.n.copied_pages += copied / PAGE;
        let owed = &t.owed;
        t.waiting.retain(|w| owed.find(*w).is_some());
        Ok(())
    }

    /// Copies up to one slice of cached pages into the processes that still lack them.
    fn copy_some(&mut self) -> Result<(), String> {
        if !self.copy_more {
            return Ok(());
        }
        self.copy_more = false;
        let mut budget = self.cfg.copy_slice;
        let now = Instant::now();
        for t in self.tasks.iter_mut() {
            if t.gone || t.owed.is_empty() {
                continue;
            }
            if let Some(at) = t.retry_at {
                if now < at {
                    continue;
                }
                t.retry_at = None;
            }
            let Some(p) = self.procs.get(&t.pid) else {
                continue;
            };
            let runs: Vec<_> = t.owed.iter().copied().collect();
            'runs: for r in runs {
                let (a, b) = (r.img, r.img + (r.end - r.start));
                let from = p.cached(a).map(|(s, _)| s).unwrap_or(a);
                for (&s, d) in p.cache.range(from..b) {
                    if budget == 0 {
                        self.copy_more = true;
                        break 'runs;
                    }
                    let n = copy_into(t, s, d)?;
                    self.n.copied_pages += n / PAGE;
                    budget = budget.saturating_sub(n.max(PAGE));
                    if t.gone || t.retry_at.is_some() {
                        break 'runs;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Copies what task `t` still owes of chunk `[start, start + data.len())` (image addresses) into
/// it; returns the bytes copied. A refused copy (not registered yet) sets `retry_at`.
fn copy_into(t: &mut Task, start: u64, data: &[u8]) -> Result<u64, String> {
    let mut total = 0;
    for r in t.owed.by_image(start, start + data.len() as u64) {
        let mut dst = r.start;
        while dst < r.end {
            let off = (r.img_of(dst) - start) as usize;
            let len = (r.end - dst) as usize;
            let fill = uffd::copy(t.fd.as_raw_fd(), dst, &data[off..off + len])
                .map_err(|e| format!("copying pages to process {} at {dst:#x}: {e}", t.pid))?;
            match fill {
                Fill::Done(n) => {
                    t.owed.drop_range(dst, dst + n);
                    total += n;
                    dst += n;
                }
                Fill::Exists(n) => {
                    // The page at dst + n is already there: nothing owed for it.
                    t.owed.drop_range(dst, dst + n + PAGE);
                    total += n;
                    dst += n + PAGE;
                }
                Fill::Later(n) => {
                    t.owed.drop_range(dst, dst + n);
                    total += n;
                    t.retry_at = Some(Instant::now() + Duration::from_millis(2));
                    return Ok(total);
                }
                Fill::Gone => {
                    t.gone = true;
                    return Ok(total);
                }
            }
        }
    }
    Ok(total)
}

/// Receives one descriptor (SCM_RIGHTS, with one byte of data) from a unix socket.
fn recv_fd(sock: RawFd) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(RawFd);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(std::io::Error::from)?;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the descriptor was just received and is ours alone.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(std::io::Error::other("no descriptor in the message"))
}
