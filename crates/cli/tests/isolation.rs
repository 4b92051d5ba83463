//! Network isolation of runtimes on real runc, in the dev topology (whose fabric routes between
//! hosts, as a real network would): a runtime's code tries every path it must not have, each is
//! blocked by its nftables rules (and reachable once those rules are gone, so it is the policy that
//! blocks it, not the topology); the rules follow it through moves and hibernation, come back when
//! an agent restarts, and nothing is left behind.
//!
//! Traffic goes only to addresses inside namespaces this test (or the dev topology) made: the
//! "internet" (198.51.100.1, TEST-NET-2), "cloud metadata" (169.254.169.254) and a private package
//! "mirror" (192.168.77.1) are stand-in namespaces attached to the topology's router.

mod common;
use common::Ferry;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INTERNET: &str = "198.51.100.1";
const METADATA: &str = "169.254.169.254";
const MIRROR: &str = "192.168.77.1";

/// A stand-in namespace serving HTTP on port 80 at its address; the server is stopped (by PID)
/// when dropped, and the namespace goes with the topology.
struct StandIn {
    server: Child,
}

impl StandIn {
    fn attach(f: &Ferry, name: &str, addr: &str) -> StandIn {
        let ns = f.ok(&["dev", "attach", name, addr]).trim().to_string();
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "/usr/bin/python3", "-c"])
            .arg(format!(
                "import http.server\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(200); self.end_headers(); self.wfile.write(b'{name}')\n    def log_message(self, *a): pass\nhttp.server.HTTPServer(('{addr}', 80), H).serve_forever()"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a stand-in server");
        // Ready once it answers from its own namespace.
        let start = Instant::now();
        while !Command::new("ip")
            .args(["netns", "exec", &ns, "/usr/bin/python3", "-c"])
            .arg(format!(
                "import socket; socket.create_connection(('{addr}', 80), timeout=1).close()"
            ))
            .status()
            .unwrap()
            .success()
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "stand-in {name} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        StandIn { server }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Connects from runtime `rt`'s code to each target at once (2 s timeout each): `open`,
/// `refused` (the packet got there, nothing listens), `timeout` (dropped) or `error:ERRNO`.
fn probe(f: &Ferry, rt: &str, targets: &[(&str, String, u16)]) -> BTreeMap<String, String> {
    let list: Vec<String> = targets
        .iter()
        .map(|(k, h, p)| format!("({k:?}, {h:?}, {p})"))
        .collect();
    let code = format!(
        r#"import socket, json, concurrent.futures as cf
def probe(h, p):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect((h, p))
        return "open"
    except socket.timeout:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return "error:%s" % e.errno
    finally:
        s.close()
T = [{}]
with cf.ThreadPoolExecutor(len(T)) as ex:
    r = dict(zip([t[0] for t in T], ex.map(lambda t: probe(t[1], t[2]), T)))
print(json.dumps(r))"#,
        list.join(", ")
    );
    let out = f.py(rt, &code);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("probe output {out:?}: {e}"))
}

fn rt(f: &Ferry, name: &str) -> Value {
    f.json(&["inspect", name])
}

fn ip_of(f: &Ferry, name: &str) -> Ipv4Addr {
    rt(f, name)["ip"].as_str().unwrap().parse().unwrap()
}

/// The nftables table of runtime `name` on dev host `host` (named from the runtime's netns).
fn table_of(f: &Ferry, host: &str, name: &str) -> String {
    let id = rt(f, name)["id"].as_str().unwrap().to_string();
    format!("ferry_{}{host}_{id}", f.prefix).replace(|c: char| !c.is_ascii_alphanumeric(), "_")
}

fn host_ns(f: &Ferry, host: &str) -> String {
    f.dev_host(host)["netns"].as_str().unwrap().to_string()
}

/// The ferry tables in a dev host's namespace.
fn tables(f: &Ferry, host: &str) -> Vec<String> {
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &host_ns(f, host),
            "nft",
            "list",
            "tables",
            "inet",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table inet "))
        .filter(|t| t.starts_with("ferry_"))
        .map(str::to_string)
        .collect()
}

fn nft_in(f: &Ferry, host: &str, args: &[&str]) {
    let st = Command::new("ip")
        .args(["netns", "exec", &host_ns(f, host), "nft"])
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "nft {args:?} in {host}");
}

fn port_of(f: &Ferry, file: &str) -> u16 {
    std::fs::read_to_string(f.state.join(file))
        .unwrap()
        .trim()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap()
}

/// `s` without terminal colour sequences (the daemons' logs have them).
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn expect(results: &BTreeMap<String, String>, want: &[(&str, &str)], when: &str) {
    for (k, v) in want {
        assert_eq!(
            results.get(*k).map(String::as_str),
            Some(*v),
            "{when}: {k} should be {v}; all: {results:?}"
        );
    }
}

#[test]
fn a_runtime_reaches_only_what_its_policy_allows() {
    let Some(f) = Ferry::start_dev(2) else { return };
    let _inet = StandIn::attach(&f, "inet", INTERNET);
    let _meta = StandIn::attach(&f, "meta", METADATA);
    let _mirror = StandIn::attach(&f, "mirr", MIRROR);
    f.ok(&["create", "--name", "alice", "--host", "h1"]);
    f.ok(&["create", "--name", "bob", "--host", "h1"]);
    f.ok(&["create", "--name", "carol", "--host", "h2"]);
    f.ok(&[
        "create", "--name", "dave", "--host", "h1", "--egress", "deny",
    ]);
    f.ok(&[
        "create",
        "--name",
        "erin",
        "--host",
        "h2",
        "--allow-cidr",
        "192.168.77.0/24",
    ]);
    // Bad input is refused with what to do.
    let e = f.fails(&["create", "--name", "x1", "--allow-cidr", "192.168.77.0/40"]);
    assert!(e.contains("is not an IPv4 CIDR"), "{e}");
    let e = f.fails(&["create", "--name", "x2", "--allow-cidr", "169.254.169.254"]);
    assert!(e.contains("can never reach"), "{e}");
    let e = f.fails(&["create", "--name", "x3", "--egress", "sometimes"]);
    assert!(e.contains("allow") && e.contains("deny"), "{e}");
    // inspect shows the policy.
    let shown = f.ok(&["inspect", "erin"]);
    assert!(
        shown.contains("egress:    allow, also open: 192.168.77.0/24"),
        "{shown}"
    );
    assert!(f
        .ok(&["inspect", "alice"])
        .contains("egress:    allow (the plan's)"));
    assert_eq!(rt(&f, "dave")["egress"]["egress"], "deny");

    let h1: Ipv4Addr = f.dev_host("h1")["addr"].as_str().unwrap().parse().unwrap();
    let root = Ipv4Addr::from(u32::from(h1) & 0xffff_ff00 | 1);
    let alice = ip_of(&f, "alice");
    let peer = Ipv4Addr::from(u32::from(alice) - 1);
    let (bob, carol) = (ip_of(&f, "bob"), ip_of(&f, "carol"));
    let targets = [
        ("bob", bob.to_string(), 8888),
        ("carol", carol.to_string(), 8888),
        ("agent", h1.to_string(), 7701),
        (
            "agent2",
            f.dev_host("h2")["addr"].as_str().unwrap().to_string(),
            7701,
        ),
        ("peer", peer.to_string(), 7701),
        ("control", root.to_string(), port_of(&f, "serve.addr")),
        ("proxy", root.to_string(), port_of(&f, "proxy.addr")),
        ("metadata", METADATA.to_string(), 80),
        ("mirror", MIRROR.to_string(), 80),
        ("internet", INTERNET.to_string(), 80),
    ];
    let blocked: Vec<(&str, &str)> = targets[..9].iter().map(|t| (t.0, "timeout")).collect();
    let r = probe(&f, "alice", &targets);
    expect(&r, &blocked, "alice under allow");
    expect(&r, &[("internet", "open")], "alice under allow");
    // urllib to the metadata service fails too.
    let out = f.py(
        "alice",
        &format!("import urllib.request\ntry:\n    urllib.request.urlopen('http://{METADATA}/latest/meta-data/', timeout=2); print('fetched')\nexcept Exception as e:\n    print('failed', type(e).__name__)"),
    );
    assert!(out.starts_with("failed"), "{out}");
    let r = probe(&f, "dave", &targets[7..]);
    expect(
        &r,
        &[
            ("metadata", "timeout"),
            ("mirror", "timeout"),
            ("internet", "timeout"),
        ],
        "dave under deny",
    );
    let r = probe(&f, "erin", &targets);
    expect(
        &r,
        &[
            ("mirror", "open"),
            ("internet", "open"),
            ("metadata", "timeout"),
            ("bob", "timeout"),
            ("carol", "timeout"),
        ],
        "erin with the mirror opened",
    );

    // Runtimes have no IPv6.
    let alice_ns = format!("{}h1-{}", f.prefix, rt(&f, "alice")["id"].as_str().unwrap());
    let v6 = Command::new("ip")
        .args(["-n", &alice_ns, "-6", "addr"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&v6.stdout).trim().is_empty(),
        "IPv6 in a runtime"
    );

    // Spoofing: a process in alice's namespace with NET_ADMIN takes bob's address as a source.
    let spoof = |src: Option<Ipv4Addr>| {
        let bind = src
            .map(|s| format!("s.bind(('{s}', 0)); "))
            .unwrap_or_default();
        let o = Command::new("ip")
            .args(["netns", "exec", &alice_ns, "/usr/bin/python3", "-c"])
            .arg(format!("import socket\ns = socket.socket(); s.settimeout(2)\ntry:\n    {bind}s.connect(('{INTERNET}', 80)); print('open')\nexcept OSError as e:\n    print('blocked', e)"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let st = Command::new("ip")
        .args([
            "-n",
            &alice_ns,
            "addr",
            "add",
            &format!("{bob}/32"),
            "dev",
            "eth0",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(spoof(None), "open");
    assert!(
        spoof(Some(bob)).starts_with("blocked"),
        "a spoofed source got through"
    );
    Command::new("ip")
        .args([
            "-n",
            &alice_ns,
            "addr",
            "del",
            &format!("{bob}/32"),
            "dev",
            "eth0",
        ])
        .status()
        .unwrap();

    // Proof that the rules, not the topology, block: without alice's own table, bob and carol
    // are still refused by theirs (the receiver's side)...
    let (ta, tb, tc) = (
        table_of(&f, "h1", "alice"),
        table_of(&f, "h1", "bob"),
        table_of(&f, "h2", "carol"),
    );
    assert!(tables(&f, "h1").contains(&ta), "{:?}", tables(&f, "h1"));
    nft_in(&f, "h1", &["delete", "table", "inet", &ta]);
    let r = probe(&f, "alice", &targets);
    expect(
        &r,
        &[
            ("bob", "timeout"),
            ("carol", "timeout"),
            ("agent", "open"),
            ("agent2", "open"),
            ("peer", "refused"),
            ("control", "refused"),
            ("proxy", "refused"),
            ("metadata", "open"),
            ("mirror", "open"),
            ("internet", "open"),
        ],
        "alice without her table",
    );
    // ...and without theirs, everything is reachable: the topology routes it all.
    nft_in(&f, "h1", &["delete", "table", "inet", &tb]);
    nft_in(&f, "h2", &["delete", "table", "inet", &tc]);
    let r = probe(&f, "alice", &targets[..2]);
    expect(
        &r,
        &[("bob", "open"), ("carol", "open")],
        "without any table",
    );

    // An agent restart re-installs the missing tables and removes tables of runtimes it does
    // not have.
    let ghost = format!(
        "ferry_{}h1_rt_ghost",
        f.prefix.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    nft_in(&f, "h1", &["add", "table", "inet", &ghost]);
    f.ok(&["dev", "restart-agent", "h1"]);
    f.ok(&["dev", "restart-agent", "h2"]);
    let h1_tables = tables(&f, "h1");
    assert!(
        h1_tables.contains(&ta) && h1_tables.contains(&tb),
        "{h1_tables:?}"
    );
    assert!(
        !h1_tables.contains(&ghost),
        "an orphan table survived: {h1_tables:?}"
    );
    assert!(tables(&f, "h2").contains(&tc));
    let r = probe(&f, "alice", &targets);
    expect(&r, &blocked, "alice after the agents restarted");

    // The rules cost of a runtime's network set-up, as the agent logs it.
    let log =
        strip_ansi(&std::fs::read_to_string(f.state.join("agent-h1.log")).unwrap_or_default());
    let costs: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("network rules installed"))
        .filter_map(|l| {
            l.split("rules_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(!costs.is_empty(), "no rules timing in the agent log");
    eprintln!("installing a runtime's rules took {costs:?} ms");

    // Removing a runtime removes its table.
    f.ok(&["rm", "--force", "bob"]);
    assert!(!tables(&f, "h1").contains(&tb), "{:?}", tables(&f, "h1"));
}

#[test]
fn the_rules_follow_a_runtime_through_moves_and_hibernation() {
    // The plan's policy (free: deny) applies to a runtime that sets none.
    let Some(f) = Ferry::start_dev_with(2, &["--no-auto", "--plan-egress=free=deny"]) else {
        return;
    };
    let _inet = StandIn::attach(&f, "inet", INTERNET);
    f.ok(&["create", "--name", "rover", "--host", "h1"]);
    assert!(f
        .ok(&["inspect", "rover"])
        .contains("egress:    deny (the plan's)"));
    f.py("rover", "x = 7");
    let check = |host: &str, other: &str, when: &str| {
        let t = table_of(&f, host, "rover");
        assert!(
            tables(&f, host).contains(&t),
            "{when}: no table at {host}: {:?}",
            tables(&f, host)
        );
        assert!(
            !tables(&f, other).iter().any(|t| t.ends_with(
                rt(&f, "rover")["id"]
                    .as_str()
                    .unwrap()
                    .replace('-', "_")
                    .as_str()
            )),
            "{when}: a table left at {other}: {:?}",
            tables(&f, other)
        );
        let agent = f.dev_host(host)["addr"].as_str().unwrap().to_string();
        let r = probe(
            &f,
            "rover",
            &[("internet", INTERNET.into(), 80), ("agent", agent, 7701)],
        );
        expect(&r, &[("internet", "timeout"), ("agent", "timeout")], when);
        assert_eq!(f.py("rover", "print(x)").trim(), "7", "{when}");
    };
    check("h1", "h2", "created");
    f.ok(&["migrate", "rover", "--to", "h2"]);
    check("h2", "h1", "after a stop-copy move");
    f.ok(&["migrate", "rover", "--to", "h1", "--mode", "lazy"]);
    check("h1", "h2", "after a lazy move");
    f.ok(&["hibernate", "rover"]);
    assert!(
        tables(&f, "h1").is_empty() && tables(&f, "h2").is_empty(),
        "a hibernated runtime keeps a table"
    );
    f.ok(&["wake", "rover"]);
    let host = rt(&f, "rover")["host"].as_str().unwrap().to_string();
    let other = if host == "h1" { "h2" } else { "h1" };
    check(&host, other, "after hibernate and wake");
    f.ok(&["rm", "--force", "rover"]);
    assert!(
        tables(&f, "h1").is_empty() && tables(&f, "h2").is_empty(),
        "tables left after rm"
    );
}
