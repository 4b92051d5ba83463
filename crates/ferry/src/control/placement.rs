//! Placement decisions as pure functions over a picture of the fleet (hosts with their capacity,
//! memory in use, labels, cordon and images): where a new or restored runtime goes, where the
//! monitor moves one, and the plan of a host's drain. The control plane gathers the picture from
//! the database and the agents and acts on the answer; nothing here does I/O, so every decision
//! can be tested over simulated fleets of any size.

use std::collections::BTreeSet;
use std::time::Duration;

/// One host as placement sees it.
#[derive(Debug, Clone)]
pub struct HostView {
    pub name: String,
    pub capacity_mb: u64,
    /// Memory its runtimes hold plus what is reserved there.
    pub used_mb: u64,
    pub labels: Vec<String>,
    /// Cordoned (or draining): nothing new is placed there.
    pub cordoned: bool,
    /// Image names it has (`None`: not known, treated as able to receive any image).
    pub images: Option<BTreeSet<String>>,
}

impl HostView {
    pub fn free_mb(&self) -> u64 {
        self.capacity_mb.saturating_sub(self.used_mb)
    }

    fn has_image(&self, image: &str) -> bool {
        self.images.as_ref().is_none_or(|s| s.contains(image))
    }
}

/// What a runtime needs from the host it is placed on.
#[derive(Debug, Clone, Default)]
pub struct Need {
    pub memory_mb: u64,
    /// An image the host must already have (it cannot be sent there); `None`: any host will do.
    pub image: Option<String>,
    /// Labels preferred: among hosts that fit, those with all of them win when any exist.
    pub prefer_labels: Vec<String>,
}

/// Why no host was chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    NoHosts,
    Unknown(String),
    Cordoned(String),
    NoRoom {
        host: String,
        free_mb: u64,
        capacity_mb: u64,
        need_mb: u64,
    },
    MissingImage {
        host: String,
        image: String,
    },
    /// No host fits (`need_mb` and the requested image, if any).
    NoneFits {
        need_mb: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoHosts => write!(f, "no hosts: start `ferry serve` with its local agent, or add one with `ferry host add`"),
            Refusal::Unknown(h) => write!(f, "unknown host {h:?}: see `ferry host ls`"),
            Refusal::Cordoned(h) => write!(f, "host {h} is cordoned: nothing new is placed there; choose another host, or run `ferry host uncordon {h}` first"),
            Refusal::NoRoom { host, free_mb, capacity_mb, need_mb } => write!(f, "host {host} has {free_mb} MB free of {capacity_mb} MB, not enough for {need_mb} MB: choose a smaller plan or another host"),
            Refusal::MissingImage { host, image } => write!(f, "host {host} does not have image {image}, and it cannot be sent there: import it on {host} first"),
            Refusal::NoneFits { need_mb } => write!(f, "no uncordoned host has {need_mb} MB free (with the image needed): choose a smaller plan, free some runtimes, uncordon or add a host"),
        }
    }
}

/// Whether `h` can take `need` (ignoring its cordon).
fn fits(h: &HostView, need: &Need) -> bool {
    h.free_mb() >= need.memory_mb && need.image.as_deref().is_none_or(|i| h.has_image(i))
}

/// Chooses the host for `need`: `wanted` if given (refused if it is cordoned, full or lacks the
/// image), otherwise, among uncordoned hosts other than `exclude` that fit, those with every
/// preferred label if any has them, the one with the most free memory (ties: the first by name).
/// Returns the index into `hosts`. Linear in the number of hosts.
pub fn place(
    hosts: &[HostView],
    need: &Need,
    wanted: Option<&str>,
    exclude: Option<&str>,
) -> Result<usize, Refusal> {
    if hosts.is_empty() {
        return Err(Refusal::NoHosts);
    }
    if let Some(w) = wanted {
        let (i, h) = hosts
            .iter()
            .enumerate()
            .find(|(_, h)| h.name == w)
            .ok_or_else(|| Refusal::Unknown(w.to_string()))?;
        if h.cordoned {
            return Err(Refusal::Cordoned(w.to_string()));
        }
        if h.free_mb() < need.memory_mb {
            return Err(Refusal::NoRoom {
                host: w.to_string(),
                free_mb: h.free_mb(),
                capacity_mb: h.capacity_mb,
                need_mb: need.memory_mb,
            });
        }
        if let Some(img) = need.image.as_deref().filter(|i| !h.has_image(i)) {
            return Err(Refusal::MissingImage {
                host: w.to_string(),
                image: img.to_string(),
            });
        }
        return Ok(i);
    }
    // (index, free, has every preferred label)
    let mut best: Option<(usize, u64, bool)> = None;
    for (i, h) in hosts.iter().enumerate() {
        if h.cordoned || exclude == Some(h.name.as_str()) || !fits(h, need) {
            continue;
        }
        let labelled = need
            .prefer_labels
            .iter()
            .all(|l| h.labels.iter().any(|x| x == l));
        let free = h.free_mb();
        let better = match best {
            None => true,
            Some((bi, bfree, blab)) => {
                (labelled, free, std::cmp::Reverse(&h.name))
                    > (blab, bfree, std::cmp::Reverse(&hosts[bi].name))
            }
        };
        if better {
            best = Some((i, free, labelled));
        }
    }
    best.map(|(i, _, _)| i).ok_or(Refusal::NoneFits {
        need_mb: need.memory_mb,
    })
}

/// The monitor's choice of where to move a runtime now on `from` that needs `need` (its next plan
/// up): the same rule as [`place`], never its own host, never a cordoned one.
pub fn move_target(hosts: &[HostView], need: &Need, from: &str) -> Option<usize> {
    place(hosts, need, None, Some(from)).ok()
}

/// How fast moves go: a fixed cost per move plus its memory at a rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoveRate {
    pub mb_per_s: f64,
    pub overhead: Duration,
}

impl MoveRate {
    /// Used when no move was measured yet: deliberately slow.
    pub const CONSERVATIVE: MoveRate = MoveRate {
        mb_per_s: 40.0,
        overhead: Duration::from_secs(5),
    };

    /// The estimated duration of moving (or hibernating) `memory_mb`.
    pub fn estimate(&self, memory_mb: u64) -> Duration {
        self.overhead + Duration::from_secs_f64(memory_mb as f64 / self.mb_per_s.max(0.1))
    }

    /// A rate from measured moves (`(memory MB, total ms)` each): the slowest of them, so that
    /// a plan errs on the side of hibernating; [`MoveRate::CONSERVATIVE`] when there are none.
    pub fn from_samples(samples: &[(u64, f64)]) -> MoveRate {
        let rates: Vec<f64> = samples
            .iter()
            .filter(|(mb, ms)| *mb > 0 && *ms > 0.0)
            .map(|(mb, ms)| {
                // The fixed cost is taken out before the rate (but never below a tenth of it).
                let secs = (*ms / 1000.0 - 1.0).max(ms / 10_000.0);
                *mb as f64 / secs
            })
            .collect();
        match rates.iter().cloned().reduce(f64::min) {
            Some(r) => MoveRate {
                mb_per_s: r,
                overhead: Duration::from_secs(1),
            },
            None => MoveRate::CONSERVATIVE,
        }
    }
}

/// A runtime on the host being drained.
#[derive(Debug, Clone)]
pub struct DrainItem {
    pub name: String,
    pub memory_mb: u64,
    /// Its image, when a target must already have it (it cannot be sent).
    pub image_needed: Option<String>,
    pub prefer_labels: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainMode {
    StopCopy,
    Lazy,
    Hibernate,
}

impl std::str::FromStr for DrainMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stop-copy" => Ok(DrainMode::StopCopy),
            "lazy" => Ok(DrainMode::Lazy),
            "hibernate" => Ok(DrainMode::Hibernate),
            o => Err(format!(
                "unknown drain mode {o:?}: use stop-copy (default), lazy or hibernate"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DrainOptions {
    pub mode: DrainMode,
    /// Moves at a time (at least 1).
    pub parallel: usize,
    pub within: Option<Duration>,
    pub rate: MoveRate,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Move to this host; expected to finish `finish` after the drain starts.
    Move { to: String, finish: Duration },
    /// Hibernate where it is (its snapshot then goes to `to` when a host has room for it, so the
    /// host ends empty; `None`: the snapshot stays).
    Hibernate { why: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub runtime: String,
    pub action: Action,
}

/// Plans the drain of `source`: every runtime in `items` gets a step. Moves go to uncordoned hosts
/// with room (capacity taken by earlier steps counted), largest first without a deadline (the
/// packing that fits most), smallest first with one (the most runtimes moved in time); `parallel`
/// lanes each run one move at a time. A runtime that fits nowhere, or whose move would end after
/// `within`, is hibernated instead; mode `hibernate` hibernates all.
pub fn plan_drain(
    hosts: &[HostView],
    source: &str,
    items: &[DrainItem],
    opts: &DrainOptions,
) -> Vec<Step> {
    let mut hosts: Vec<HostView> = hosts.to_vec();
    let mut order: Vec<&DrainItem> = items.iter().collect();
    if opts.within.is_some() {
        order.sort_by(|a, b| a.memory_mb.cmp(&b.memory_mb).then(a.name.cmp(&b.name)));
    } else {
        order.sort_by(|a, b| b.memory_mb.cmp(&a.memory_mb).then(a.name.cmp(&b.name)));
    }
    let mut lanes = vec![Duration::ZERO; opts.parallel.max(1)];
    let mut steps = Vec::with_capacity(items.len());
    for it in order {
        let hibernate = |why: String| Step {
            runtime: it.name.clone(),
            action: Action::Hibernate { why },
        };
        if opts.mode == DrainMode::Hibernate {
            steps.push(hibernate("drain mode hibernate".into()));
            continue;
        }
        let need = Need {
            memory_mb: it.memory_mb,
            image: it.image_needed.clone(),
            prefer_labels: it.prefer_labels.clone(),
        };
        let Ok(i) = place(&hosts, &need, None, Some(source)) else {
            steps.push(hibernate(format!(
                "no other uncordoned host has {} MB free{}",
                it.memory_mb,
                it.image_needed
                    .as_ref()
                    .map(|i| format!(" and image {i}"))
                    .unwrap_or_default()
            )));
            continue;
        };
        let lane = (0..lanes.len()).min_by_key(|l| lanes[*l]).unwrap_or(0);
        let finish = lanes[lane] + opts.rate.estimate(it.memory_mb);
        if let Some(w) = opts.within.filter(|w| finish > *w) {
            steps.push(hibernate(format!(
                "moving it would end about {:.0} s in, after the {:.0} s deadline",
                finish.as_secs_f64(),
                w.as_secs_f64()
            )));
            continue;
        }
        lanes[lane] = finish;
        hosts[i].used_mb += it.memory_mb;
        steps.push(Step {
            runtime: it.name.clone(),
            action: Action::Move {
                to: hosts[i].name.clone(),
                finish,
            },
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::time::Instant;

    fn host(name: &str, cap: u64, used: u64) -> HostView {
        HostView {
            name: name.into(),
            capacity_mb: cap,
            used_mb: used,
            labels: vec![],
            cordoned: false,
            images: None,
        }
    }

    fn need(mb: u64) -> Need {
        Need {
            memory_mb: mb,
            ..Default::default()
        }
    }

    fn opts(mode: DrainMode, within: Option<u64>) -> DrainOptions {
        DrainOptions {
            mode,
            parallel: 2,
            within: within.map(Duration::from_secs),
            rate: MoveRate {
                mb_per_s: 100.0,
                overhead: Duration::from_secs(1),
            },
        }
    }

    #[test]
    fn picks_roomiest_uncordoned() {
        let mut hs = vec![host("a", 1000, 0), host("b", 2000, 0), host("c", 1000, 500)];
        assert_eq!(place(&hs, &need(100), None, None), Ok(1));
        hs[1].cordoned = true;
        assert_eq!(place(&hs, &need(100), None, None), Ok(0));
        assert_eq!(place(&hs, &need(100), None, Some("a")), Ok(2));
        assert_eq!(
            place(&hs, &need(100), Some("b"), None),
            Err(Refusal::Cordoned("b".into()))
        );
        assert!(place(&hs, &need(600), Some("c"), None)
            .unwrap_err()
            .to_string()
            .contains("500 MB free"));
        assert_eq!(
            place(&hs, &need(5000), None, None),
            Err(Refusal::NoneFits { need_mb: 5000 })
        );
        assert!(Refusal::Cordoned("b".into())
            .to_string()
            .contains("ferry host uncordon b"));
    }

    #[test]
    fn labels_and_images() {
        let mut hs = vec![host("a", 4000, 0), host("gpu", 1000, 0)];
        hs[1].labels = vec!["gpu".into()];
        let mut n = need(100);
        n.prefer_labels = vec!["gpu".into()];
        assert_eq!(place(&hs, &n, None, None), Ok(1));
        n.memory_mb = 2000; // the labelled host is too small: the others still serve
        assert_eq!(place(&hs, &n, None, None), Ok(0));
        hs[0].images = Some(BTreeSet::new());
        n.image = Some("py:3.12".into());
        assert_eq!(
            place(&hs, &n, None, None),
            Err(Refusal::NoneFits { need_mb: 2000 })
        );
        assert!(matches!(
            place(&hs, &n, Some("a"), None),
            Err(Refusal::MissingImage { .. })
        ));
    }

    #[test]
    fn drain_moves_then_hibernates_what_does_not_fit() {
        let hs = vec![
            host("src", 4000, 3000),
            host("a", 1000, 0),
            host("b", 1000, 200),
        ];
        let items: Vec<DrainItem> = [("x", 900), ("y", 700), ("z", 600)]
            .iter()
            .map(|(n, mb)| DrainItem {
                name: n.to_string(),
                memory_mb: *mb,
                image_needed: None,
                prefer_labels: vec![],
            })
            .collect();
        let steps = plan_drain(&hs, "src", &items, &opts(DrainMode::StopCopy, None));
        assert_eq!(steps.len(), 3);
        assert!(matches!(&steps[0].action, Action::Move { to, .. } if to == "a"));
        assert!(matches!(&steps[1].action, Action::Move { to, .. } if to == "b"));
        assert!(matches!(&steps[2].action, Action::Hibernate { .. }));
        let all = plan_drain(&hs, "src", &items, &opts(DrainMode::Hibernate, None));
        assert!(all
            .iter()
            .all(|s| matches!(s.action, Action::Hibernate { .. })));
    }

    #[test]
    fn drain_deadline_hibernates_late_moves() {
        let hs = vec![host("src", 100_000, 0), host("a", 100_000, 0)];
        // 2 lanes, 1 s + mb/100 each: 100 MB = 2 s, 1000 MB = 11 s, 5000 MB = 51 s.
        let items: Vec<DrainItem> = [("s1", 100), ("s2", 100), ("m", 1000), ("big", 5000)]
            .iter()
            .map(|(n, mb)| DrainItem {
                name: n.to_string(),
                memory_mb: *mb,
                image_needed: None,
                prefer_labels: vec![],
            })
            .collect();
        let steps = plan_drain(&hs, "src", &items, &opts(DrainMode::Lazy, Some(20)));
        let by: HashMap<&str, &Action> = steps
            .iter()
            .map(|s| (s.runtime.as_str(), &s.action))
            .collect();
        assert!(
            matches!(by["s1"], Action::Move { finish, .. } if *finish == Duration::from_secs(2))
        );
        assert!(
            matches!(by["s2"], Action::Move { finish, .. } if *finish == Duration::from_secs(2))
        );
        assert!(
            matches!(by["m"], Action::Move { finish, .. } if *finish == Duration::from_secs(13))
        );
        assert!(matches!(by["big"], Action::Hibernate { why } if why.contains("deadline")));
    }

    #[test]
    fn rate_from_samples_is_the_slowest() {
        assert_eq!(MoveRate::from_samples(&[]), MoveRate::CONSERVATIVE);
        let r = MoveRate::from_samples(&[(200, 3000.0), (200, 5000.0)]);
        assert!((r.mb_per_s - 50.0).abs() < 1e-9, "{r:?}");
        assert!(r.estimate(500) > Duration::from_secs(10));
    }

    fn fleet() -> impl Strategy<Value = (Vec<HostView>, Vec<DrainItem>)> {
        let h = (256u64..8192, 0u64..8192, any::<bool>(), any::<bool>());
        let hosts = proptest::collection::vec(h, 1..20).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (cap, used, cordoned, gpu))| HostView {
                    name: format!("h{i}"),
                    capacity_mb: cap,
                    used_mb: used.min(cap),
                    labels: if gpu { vec!["gpu".into()] } else { vec![] },
                    cordoned: cordoned && i > 0,
                    images: if i % 3 == 0 {
                        Some(["py".to_string()].into())
                    } else {
                        None
                    },
                })
                .collect::<Vec<_>>()
        });
        let items = proptest::collection::vec((64u64..4096, any::<bool>(), any::<bool>()), 0..40)
            .prop_map(|v| {
                v.into_iter()
                    .enumerate()
                    .map(|(i, (mb, img, gpu))| DrainItem {
                        name: format!("r{i}"),
                        memory_mb: mb,
                        image_needed: img.then(|| "py".into()),
                        prefer_labels: if gpu { vec!["gpu".into()] } else { vec![] },
                    })
                    .collect::<Vec<_>>()
            });
        (hosts, items)
    }

    /// Checks a drain plan against the fleet: every runtime once, moves only to uncordoned other
    /// hosts that have the image, and no host over its capacity.
    fn check_plan(
        hosts: &[HostView],
        items: &[DrainItem],
        steps: &[Step],
        within: Option<Duration>,
    ) {
        assert_eq!(steps.len(), items.len());
        let mut added: HashMap<&str, u64> = HashMap::new();
        let by_name: HashMap<&str, &DrainItem> =
            items.iter().map(|i| (i.name.as_str(), i)).collect();
        let mut seen = BTreeSet::new();
        for s in steps {
            assert!(seen.insert(s.runtime.clone()), "twice: {}", s.runtime);
            if let Action::Move { to, finish } = &s.action {
                let h = hosts.iter().find(|h| &h.name == to).unwrap();
                let it = by_name[s.runtime.as_str()];
                assert!(!h.cordoned && h.name != hosts[0].name);
                if let Some(i) = &it.image_needed {
                    assert!(h.has_image(i));
                }
                if let Some(w) = within {
                    assert!(*finish <= w);
                }
                *added.entry(to.as_str()).or_default() += it.memory_mb;
            }
        }
        for h in hosts {
            let a = added.get(h.name.as_str()).copied().unwrap_or(0);
            if a > 0 {
                assert!(h.used_mb + a <= h.capacity_mb, "{} overfilled", h.name);
            }
        }
    }

    proptest! {
        #[test]
        fn placement_never_overfills_nor_uses_cordoned((hosts, items) in fleet(), mb in 1u64..8192) {
            if let Ok(i) = place(&hosts, &need(mb), None, None) {
                prop_assert!(!hosts[i].cordoned);
                prop_assert!(hosts[i].used_mb + mb <= hosts[i].capacity_mb);
                // the roomiest
                prop_assert!(hosts.iter().filter(|h| !h.cordoned).all(|h| h.free_mb() <= hosts[i].free_mb()));
            } else {
                prop_assert!(hosts.iter().filter(|h| !h.cordoned).all(|h| h.free_mb() < mb));
            }
            let _ = items;
        }

        #[test]
        fn drain_plan_never_overfills((hosts, items) in fleet(), within in proptest::option::of(1u64..200), lazy in any::<bool>()) {
            let mode = if lazy { DrainMode::Lazy } else { DrainMode::StopCopy };
            let o = opts(mode, within);
            let steps = plan_drain(&hosts, &hosts[0].name, &items, &o);
            check_plan(&hosts, &items, &steps, o.within);
        }
    }

    /// A fleet of 1000 hosts and 20 000 runtimes.
    fn big_fleet() -> (Vec<HostView>, Vec<(String, String, u64)>) {
        let mut hosts = Vec::new();
        let mut runtimes = Vec::new();
        for i in 0..1000u64 {
            let cap = 16_384 + (i % 7) * 4096;
            let mut used = 0;
            for j in 0..20u64 {
                let mb = [256, 512, 1024, 384][((i + j) % 4) as usize];
                if used + mb <= cap {
                    used += mb;
                    runtimes.push((format!("rt{i}-{j}"), format!("h{i:04}"), mb));
                }
            }
            hosts.push(HostView {
                name: format!("h{i:04}"),
                capacity_mb: cap,
                used_mb: used,
                labels: if i % 10 == 0 {
                    vec!["gpu".into()]
                } else {
                    vec![]
                },
                cordoned: i % 50 == 7,
                images: if i % 4 == 0 {
                    None
                } else {
                    Some(["py".to_string()].into())
                },
            });
        }
        (hosts, runtimes)
    }

    #[test]
    fn at_scale_1000_hosts_20000_runtimes() {
        let (mut hosts, runtimes) = big_fleet();
        assert_eq!(runtimes.len(), 20_000);
        let budget = Duration::from_millis(50);
        // Placement: 2000 creates in a row, each a decision on the whole fleet, capacity taken.
        let mut worst = Duration::ZERO;
        for k in 0..2000u64 {
            let mut n = need([256, 1024, 2048][(k % 3) as usize]);
            if k % 5 == 0 {
                n.prefer_labels = vec!["gpu".into()];
            }
            let t = Instant::now();
            let r = place(&hosts, &n, None, None);
            worst = worst.max(t.elapsed());
            let i = r.expect("the fleet has room");
            assert!(!hosts[i].cordoned);
            assert!(hosts[i].used_mb + n.memory_mb <= hosts[i].capacity_mb);
            if k % 5 == 0
                && hosts.iter().any(|h| {
                    !h.cordoned && h.labels.contains(&"gpu".into()) && h.free_mb() >= n.memory_mb
                })
            {
                assert!(hosts[i].labels.contains(&"gpu".into()));
            }
            hosts[i].used_mb += n.memory_mb;
        }
        assert!(worst < budget, "placement took {worst:?}");
        // The monitor's choices: for 2000 runtimes, the next plan up (double) elsewhere.
        let mut worst = Duration::ZERO;
        for (name, on, mb) in runtimes.iter().step_by(10) {
            let n = need(mb * 2);
            let t = Instant::now();
            let r = move_target(&hosts, &n, on);
            worst = worst.max(t.elapsed());
            if let Some(i) = r {
                assert_ne!(&hosts[i].name, on, "{name}");
                assert!(!hosts[i].cordoned && hosts[i].free_mb() >= mb * 2);
            }
        }
        assert!(worst < budget, "monitor choice took {worst:?}");
        // Drain plans of 20 hosts, each decided at once, then applied (cordoning the drained host).
        let mut worst = Duration::ZERO;
        for d in (1..1000).step_by(50) {
            let src = hosts[d].name.clone();
            hosts[d].cordoned = true;
            let items: Vec<DrainItem> = runtimes
                .iter()
                .filter(|(_, h, _)| *h == src)
                .map(|(n, _, mb)| DrainItem {
                    name: n.clone(),
                    memory_mb: *mb,
                    image_needed: (mb % 512 == 0).then(|| "py".into()),
                    prefer_labels: vec![],
                })
                .collect();
            let o = DrainOptions {
                mode: DrainMode::StopCopy,
                parallel: 4,
                within: (d % 100 == 1).then(|| Duration::from_secs(90)),
                rate: MoveRate::CONSERVATIVE,
            };
            let t = Instant::now();
            let steps = plan_drain(&hosts, &src, &items, &o);
            worst = worst.max(t.elapsed());
            let mut view = hosts.clone();
            view.swap(0, d);
            check_plan(&view, &items, &steps, o.within);
            for s in &steps {
                if let Action::Move { to, .. } = &s.action {
                    let it = items.iter().find(|i| i.name == s.runtime).unwrap();
                    hosts.iter_mut().find(|h| &h.name == to).unwrap().used_mb += it.memory_mb;
                }
            }
            if o.within.is_none() {
                assert!(
                    steps
                        .iter()
                        .all(|s| matches!(s.action, Action::Move { .. })),
                    "a roomy fleet takes every runtime of {src}"
                );
            }
        }
        assert!(worst < budget, "drain plan took {worst:?}");
        for h in &hosts {
            assert!(h.used_mb <= h.capacity_mb, "{} overfilled", h.name);
        }
    }
}
