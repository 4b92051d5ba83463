//! `ferry-track PID... [--interval-ms N]`: tracks the written pages of the given processes and
//! prints one line per process and round (`round R pid P new N dirty_bytes B untracked_bytes U`),
//! until killed. A diagnostic for the tracker on a host.

fn main() {
    let mut pids = Vec::new();
    let mut interval = 200u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--interval-ms" {
            interval = args
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage());
        } else {
            pids.push(a.parse::<i32>().unwrap_or_else(|_| usage()));
        }
    }
    if pids.is_empty() {
        usage();
    }
    if let Err(why) = ferry_tracker::probe() {
        eprintln!("ferry-track: this host cannot track writes: {why}");
        std::process::exit(1);
    }
    let mut t = ferry_tracker::Tracker::new();
    for round in 1.. {
        match t.round(&pids) {
            Ok(rs) => {
                for r in rs {
                    let u: u64 = r.untracked.iter().map(|(a, b)| b - a).sum();
                    println!(
                        "round {round} pid {} new {} dirty_bytes {} untracked_bytes {u}",
                        r.pid,
                        r.new,
                        r.dirty_bytes()
                    );
                }
            }
            Err(e) => {
                eprintln!("ferry-track: {e}");
                std::process::exit(1);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(interval));
    }
}

fn usage() -> ! {
    eprintln!("usage: ferry-track PID... [--interval-ms N]");
    std::process::exit(2);
}
