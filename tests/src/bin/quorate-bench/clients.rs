//! Client mode at scale: CLIENTS client agents (one address each) on a 3-member
//! cluster, next to the same cluster without them, in the same run, the order alternating
//! between rounds. Each side measures:
//! - formation: from starting the processes to the three members ready. The client token only
//!   exists once the cluster has formed, so on the "with" side the client agents are given the
//!   join token (which a client may hold) and are started at the same moment as the members:
//!   they ask for the directory from the first second, and the clock runs until the members
//!   are ready; the time until every client is ready is reported beside it;
//! - clients ready after the token: `token create --client`, every member holding it, then the
//!   client agents restarted from empty state and files with the client token; the clock runs
//!   from their start until every one is ready (certificate written, an endpoint answering);
//! - traffic over a steady window: each member's gossip datagrams received and sent (its
//!   counters, which include the directory asks and answers), each client's directory traffic
//!   (its /status), and, when a packet socket can be opened (root), the UDP payload bytes on
//!   the gossip port captured with a packet socket, split into member-to-member gossip and the
//!   client channel; CPU time of the member agents and of their etcd over the window;
//! - memory: VmRSS of the member agents, their etcd and the client agents;
//! - failure detection: `kill -9` of member n3's agent and its etcd, then the time until both
//!   other members' gossip view has n3 down (and first suspected).
//!
//! Hosts are loopback addresses of one /24 (the harness's default), or with `netns` one network
//! namespace each on a bridge. On loopback every TCP connection an agent opens comes from
//! 127.0.0.1 (the local route's preferred source), so the issuer's per-address rate limit of
//! agent API connections sees all client agents as one host; in namespaces each has its own.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorate::client::ClientStatus;
use quorate::config::{ClientSection, Mode};
use quorate::gossip::PeerState;
use quorate_tests::{wait_for, Agent, Cluster, NetnsLab};

use crate::median;

const MEMBERS: usize = 3;
/// Deadline for the members to form, and for every client to be ready, on a loaded 2-core
/// machine with up to 250 client agents.
const TIMEOUT: Duration = Duration::from_secs(180);
/// Settling time after the last client is ready (or formation), before the window.
const SETTLE: Duration = Duration::from_secs(5);
const GOSSIP_PORT: u16 = 7946;

/// Counters of one member over the window.
#[derive(Debug, Clone, Default)]
pub struct MemberWindow {
    pub received: u64,
    pub sent: u64,
    pub client_answers: u64,
    /// Agent CPU time over the window.
    pub cpu: Duration,
    /// Its etcd's CPU time over the window.
    pub etcd_cpu: Duration,
}

/// One client's directory traffic over the window.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientWindow {
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub datagrams_received: u64,
    pub bytes_received: u64,
}

/// UDP payload bytes and datagrams on the gossip port, captured on `lo`.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// Per member: (datagrams, bytes) sent to / received from other members.
    pub swim_sent: Vec<(u64, u64)>,
    pub swim_received: Vec<(u64, u64)>,
    /// Per member: (datagrams, bytes) of the client channel: asks received, answers sent.
    pub asks_received: Vec<(u64, u64)>,
    pub answers_sent: Vec<(u64, u64)>,
    /// Datagrams the kernel dropped from the capture socket (its buffer was full).
    pub dropped: u64,
}

/// One side of a round.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub formation: Duration,
    /// Every client ready, from the common start (join token).
    pub clients_cold: Option<Duration>,
    /// Every client ready, from its start with the client token.
    pub clients_ready: Option<Duration>,
    pub window: Duration,
    pub members: Vec<MemberWindow>,
    pub client_traffic: Vec<ClientWindow>,
    pub captured: Option<Captured>,
    /// VmRSS in KiB.
    pub member_rss: Vec<u64>,
    pub etcd_rss: Vec<u64>,
    pub client_rss: Vec<u64>,
    pub suspected: Option<Duration>,
    pub detected: Duration,
    /// Member counters over the whole side (certificates issued, API refusals, drops).
    pub counters: Vec<(String, u64)>,
    /// Why clients were not ready in time, if they were not (one line per distinct reason).
    pub not_ready: Vec<String>,
    /// The clients' readiness during the window, and after n3 was killed.
    pub steady: Option<AfterKill>,
    pub after_kill: Option<AfterKill>,
}

/// How long the clients are watched after a member is killed: three of their endpoint checks.
const AFTER_KILL: Duration = Duration::from_secs(30);

/// The clients' readiness over a time (the steady window, or the [`AFTER_KILL`] after a member
/// was killed), polled every 250 ms.
#[derive(Debug, Clone, Default)]
pub struct AfterKill {
    /// Clients seen not ready at least once.
    pub ever: usize,
    pub polls: u64,
    pub polls_not_ready: u64,
    /// Not ready in the last poll.
    pub at_end: usize,
    pub first_not_ready: Option<Duration>,
    /// What the clients said when first seen not ready (counted).
    pub reasons: Vec<String>,
}

pub struct Round {
    pub without: Side,
    pub with: Side,
    pub order: &'static str,
}

/// Where the hosts are: loopback addresses of one /24 (the harness's default), or one network
/// namespace per host on a bridge, where each host's TCP connections come from its own
/// address (on loopback they all come from 127.0.0.1, see docs/benchmarks.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    Loopback,
    Netns,
}

/// One round: both sides, `with` first when `with_first`.
pub fn round(clients: usize, window: Duration, with_first: bool, net: Net) -> Round {
    if with_first {
        let with = side(clients, window, net);
        let without = side(0, window, net);
        Round {
            without,
            with,
            order: "with, without",
        }
    } else {
        let without = side(0, window, net);
        let with = side(clients, window, net);
        Round {
            without,
            with,
            order: "without, with",
        }
    }
}

fn client_status(a: &Agent) -> Result<ClientStatus, String> {
    let (code, body) = a.get("/status")?;
    if code != 200 {
        return Err(format!("/status answered {code}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("not a client's status: {e}"))
}

/// The config of client agent `i`: its own address, the given token, every member to ask.
fn client_config(
    c: &Cluster,
    lab: Option<&NetnsLab>,
    i: usize,
    token: &str,
) -> quorate::config::ConfigBuilder {
    let addr = |i: usize| match lab {
        Some(lab) => lab.addr(i),
        None => c.subnet.host(i as u8 + 1),
    };
    let members: Vec<String> = (0..MEMBERS).map(|m| addr(m).to_string()).collect();
    let dir = files_dir(c, i);
    c.config(i)
        .advertise(addr(i))
        .token(token)
        .seed(false)
        .join(members)
        .with(move |cfg| {
            cfg.mode = Mode::Client;
            cfg.client = Some(ClientSection {
                name: Some(format!("bench-client-{i}")),
                dir: Some(dir),
                on_change: None,
                role: None,
            });
        })
}

fn files_dir(c: &Cluster, i: usize) -> PathBuf {
    c.root.path().join(format!("n{}", i + 1)).join("files")
}

fn check_alive(c: &Cluster) {
    for a in &c.agents {
        assert!(!a.exited(), "{} exited:\n{}", a.name, a.log_tail(30));
    }
}

/// Polls the members (every 10 ms) and the clients (in a thread of their own) from `start`:
/// (members ready, every client ready or None after TIMEOUT with the reasons).
fn wait_formation(
    c: &Cluster,
    clients: &[usize],
    start: Instant,
) -> (Duration, Option<Duration>, Vec<String>) {
    std::thread::scope(|s| {
        let clients_thread = s.spawn(|| wait_clients(c, clients, start));
        let mut ready = [false; MEMBERS];
        while ready.iter().any(|r| !r) {
            assert!(
                start.elapsed() < TIMEOUT,
                "members not ready in {TIMEOUT:?}:\n{}",
                c.logs(20)
            );
            for (i, r) in ready.iter_mut().enumerate() {
                let a = &c.agents[i];
                assert!(!a.exited(), "{} exited:\n{}", a.name, a.log_tail(20));
                *r = *r || a.ready().is_ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let formation = start.elapsed();
        let (all, why) = clients_thread.join().expect("client poller");
        (formation, all, why)
    })
}

/// Waits until every client in `clients` is ready: the time from `start`, or None after
/// TIMEOUT with the distinct reasons of those that are not.
fn wait_clients(c: &Cluster, clients: &[usize], start: Instant) -> (Option<Duration>, Vec<String>) {
    let mut pending: Vec<usize> = clients.to_vec();
    while !pending.is_empty() {
        if start.elapsed() > TIMEOUT {
            let mut why: Vec<String> = pending
                .iter()
                .map(|&i| match client_status(&c.agents[i]) {
                    Ok(s) => s.message,
                    Err(e) => e,
                })
                .collect();
            why.sort();
            let mut counted: Vec<String> = Vec::new();
            for w in why.chunk_by(|a, b| a == b) {
                counted.push(format!("{} client(s): {}", w.len(), w[0]));
            }
            return (None, counted);
        }
        pending.retain(|&i| {
            let a = &c.agents[i];
            assert!(!a.exited(), "{} exited:\n{}", a.name, a.log_tail(20));
            a.ready().is_err()
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    (Some(start.elapsed()), Vec::new())
}

fn side(clients: usize, window: Duration, net: Net) -> Side {
    // The lab outlives the cluster (dropped after it).
    let lab = (net == Net::Netns).then(|| NetnsLab::create(MEMBERS + clients));
    let mut c = match &lab {
        Some(lab) => Cluster::in_netns(lab, MEMBERS),
        None => Cluster::new(MEMBERS),
    };
    let client_ix: Vec<usize> = (0..clients)
        .map(|_| {
            let token = c.token.clone();
            let i = c.agents.len();
            let cfg = client_config(&c, lab.as_ref(), i, &token);
            let i = c.add_agent(move |_, _| cfg.clone());
            if let Some(lab) = &lab {
                c.agents[i].addr = lab.addr(i);
                c.agents[i].netns = Some(lab.ns(i));
            }
            i
        })
        .collect();
    let mut out = Side {
        window,
        ..Side::default()
    };

    // Formation, with the clients (join token) started at the same moment as the members.
    let start = Instant::now();
    c.start_all();
    let (formation, cold, why) = wait_formation(&c, &client_ix, start);
    out.formation = formation;
    out.clients_cold = cold;
    out.not_ready
        .extend(why.into_iter().map(|w| format!("join token: {w}")));
    let formed = Instant::now();

    if clients > 0 {
        // The client token, held by every member; then the clients from scratch with it.
        let o = c.agents[0].cli(&["token", "create", "--client"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let client_token = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        wait_for("every member to hold the client token", TIMEOUT, || {
            for a in &c.agents[..MEMBERS] {
                let o = a.cli(&["token", "show", "--client"]);
                if String::from_utf8_lossy(&o.stdout).trim() != client_token {
                    return Err(format!("{} has not read it yet", a.name));
                }
            }
            Ok(())
        });
        for &i in &client_ix {
            c.agents[i].signal_stop();
        }
        for &i in &client_ix {
            let name = c.agents[i].name.clone();
            assert!(
                c.agents[i].wait_stopped(Duration::from_secs(30)),
                "{name} did not stop"
            );
            for dir in [c.agents[i].state_dir(), files_dir(&c, i)] {
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).expect("wipe client dir");
                }
            }
            let cfg = client_config(&c, lab.as_ref(), i, &client_token);
            c.agents[i].write_config(&cfg);
        }
        let start = Instant::now();
        for &i in &client_ix {
            c.agents[i].start();
        }
        let (ready, why) = wait_clients(&c, &client_ix, start);
        out.clients_ready = ready;
        out.not_ready
            .extend(why.into_iter().map(|w| format!("client token: {w}")));
    }
    // Both sides start their window at least SETTLE after the last event, and on a cluster
    // at least 6 s old.
    std::thread::sleep(SETTLE.max(Duration::from_secs(6).saturating_sub(formed.elapsed())));
    check_alive(&c);

    // The steady window.
    let before_members: Vec<_> = (0..MEMBERS).map(|i| member_sample(&c.agents[i])).collect();
    let before_clients: Vec<_> = client_ix
        .iter()
        .map(|&i| client_status(&c.agents[i]).ok())
        .collect();
    let capture = Capture::start(&c, net);
    let t0 = Instant::now();
    if client_ix.is_empty() {
        std::thread::sleep(window);
    } else {
        out.steady = Some(watch_clients(&c, &client_ix, window));
    }
    let captured = capture.map(|cap| cap.stop());
    let after_members: Vec<_> = (0..MEMBERS).map(|i| member_sample(&c.agents[i])).collect();
    let after_clients: Vec<_> = client_ix
        .iter()
        .map(|&i| client_status(&c.agents[i]).ok())
        .collect();
    out.window = t0.elapsed();
    for (b, a) in before_members.iter().zip(&after_members) {
        let d = |k: &str| a.0.get(k).copied().unwrap_or(0) - b.0.get(k).copied().unwrap_or(0);
        out.members.push(MemberWindow {
            received: d("gossip_datagrams_received"),
            sent: d("gossip_datagrams_sent"),
            client_answers: d("gossip_client_answers"),
            cpu: a.1.saturating_sub(b.1),
            etcd_cpu: a.2.saturating_sub(b.2),
        });
    }
    for (b, a) in before_clients.iter().zip(&after_clients) {
        if let (Some(b), Some(a)) = (b, a) {
            out.client_traffic.push(ClientWindow {
                datagrams_sent: a.datagrams_sent - b.datagrams_sent,
                bytes_sent: a.bytes_sent - b.bytes_sent,
                datagrams_received: a.datagrams_received - b.datagrams_received,
                bytes_received: a.bytes_received - b.bytes_received,
            });
        }
    }
    out.captured = match captured {
        Some(Ok(packets)) => Some(split(&c, clients, &packets.0, packets.1)),
        Some(Err(e)) => {
            eprintln!("packet capture failed: {e}");
            None
        }
        None => None,
    };

    // Memory.
    for a in &c.agents[..MEMBERS] {
        let pid = a.pid().expect("member running");
        out.member_rss.push(rss_kib(pid).unwrap_or(0));
        out.etcd_rss
            .push(child_named(pid, "etcd").and_then(rss_kib).unwrap_or(0));
    }
    for &i in &client_ix {
        if let Some(r) = c.agents[i].pid().and_then(rss_kib) {
            out.client_rss.push(r);
        }
    }
    let mut totals: HashMap<String, u64> = HashMap::new();
    for a in &c.agents[..MEMBERS] {
        if let Ok(s) = a.status() {
            for (k, v) in s.counters {
                *totals.entry(k).or_default() += v;
            }
        }
    }
    for k in [
        "certificates_issued",
        "api_requests",
        "api_refused_busy",
        "api_refused_rate",
        "api_rejected_identity",
        "gossip_dropped_unauthenticated",
        "gossip_dropped_malformed",
        "gossip_client_answers",
    ] {
        out.counters
            .push((k.to_owned(), totals.get(k).copied().unwrap_or(0)));
    }

    // Failure detection: n3's agent and its etcd killed, n1 and n2 to see it down.
    let victim = MEMBERS - 1;
    let victim_name = c.agents[victim].name.clone();
    // Its etcd is killed by pid at the same moment, as a host that loses power.
    let victim_etcd = c.agents[victim]
        .pid()
        .and_then(|p| child_named(p, "etcd"))
        .expect("n3's etcd");
    let start = Instant::now();
    c.agents[victim].kill9();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim_etcd as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let ((suspected, detected), after_kill) = std::thread::scope(|s| {
        let c = &c;
        let watcher =
            (!client_ix.is_empty()).then(|| s.spawn(|| watch_clients(c, &client_ix, AFTER_KILL)));
        let detection = detect(c, &victim_name, start);
        (
            detection,
            watcher.map(|w| w.join().expect("client watcher")),
        )
    });
    out.suspected = suspected;
    out.detected = detected;
    out.after_kill = after_kill;
    c.stop_all();
    out
}

/// Polls n1 and n2 until both have `victim` down: (both suspected it, both have it down),
/// from `start`.
fn detect(c: &Cluster, victim_name: &str, start: Instant) -> (Option<Duration>, Duration) {
    let mut suspected: [Option<Duration>; MEMBERS - 1] = [None; MEMBERS - 1];
    let mut down: [Option<Duration>; MEMBERS - 1] = [None; MEMBERS - 1];
    while down.iter().any(Option::is_none) {
        assert!(
            start.elapsed() < TIMEOUT,
            "{victim_name} not seen down in {TIMEOUT:?}:\n{}",
            c.logs(20)
        );
        for o in 0..MEMBERS - 1 {
            if down[o].is_some() {
                continue;
            }
            let Ok(s) = c.agents[o].status() else {
                continue;
            };
            let state = s
                .gossip
                .iter()
                .find(|g| g.name == victim_name)
                .map(|g| g.state);
            let now = start.elapsed();
            match state {
                Some(PeerState::Suspect) => {
                    suspected[o].get_or_insert(now);
                }
                Some(PeerState::Down) | None => {
                    suspected[o].get_or_insert(now);
                    down[o] = Some(now);
                }
                Some(PeerState::Alive) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (
        suspected.iter().flatten().copied().max(),
        down.iter().flatten().copied().max().unwrap_or_default(),
    )
}

/// Watches the clients' readiness for `how_long` after a member was killed.
fn watch_clients(c: &Cluster, clients: &[usize], how_long: Duration) -> AfterKill {
    let start = Instant::now();
    let mut out = AfterKill::default();
    let mut ever = vec![false; clients.len()];
    let mut reasons: Vec<String> = Vec::new();
    let mut last_round_not_ready = 0;
    while start.elapsed() < how_long {
        last_round_not_ready = 0;
        for (k, &i) in clients.iter().enumerate() {
            out.polls += 1;
            if c.agents[i].ready().is_err() {
                out.polls_not_ready += 1;
                last_round_not_ready += 1;
                if !ever[k] {
                    ever[k] = true;
                    out.first_not_ready.get_or_insert(start.elapsed());
                    if let Ok(st) = client_status(&c.agents[i]) {
                        reasons.push(st.message);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    out.ever = ever.iter().filter(|e| **e).count();
    out.at_end = last_round_not_ready;
    reasons.sort();
    for w in reasons.chunk_by(|a, b| a == b) {
        out.reasons.push(format!("{} client(s): {}", w.len(), w[0]));
    }
    out
}

/// A member's counters, its agent's CPU time (user + system) and its etcd's.
fn member_sample(a: &Agent) -> (std::collections::BTreeMap<String, u64>, Duration, Duration) {
    let counters = wait_for(&format!("{}'s status", a.name), TIMEOUT, || {
        a.status().map(|s| s.counters)
    });
    let pid = a.pid();
    (
        counters,
        pid.and_then(cpu_time).unwrap_or_default(),
        pid.and_then(|p| child_named(p, "etcd"))
            .and_then(cpu_time)
            .unwrap_or_default(),
    )
}

fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis((utime + stime) * 1000 / hz))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A child of `pid` whose command is `name`.
fn child_named(pid: u32, name: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if comm == name && ppid == Some(pid) {
            return Some(child);
        }
    }
    None
}

/// (datagrams, payload bytes) by (source, destination), of UDP datagrams from or to the
/// gossip port within the cluster's subnet.
type Flows = HashMap<(Ipv4Addr, Ipv4Addr), (u64, u64)>;

fn split(c: &Cluster, clients: usize, flows: &Flows, dropped: u64) -> Captured {
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V4(v) => v,
        IpAddr::V6(_) => unreachable!("loopback subnets are IPv4"),
    };
    let members: Vec<Ipv4Addr> = (0..MEMBERS).map(|i| v4(c.agents[i].addr)).collect();
    let client_addrs: Vec<Ipv4Addr> = (MEMBERS..MEMBERS + clients)
        .map(|i| v4(c.agents[i].addr))
        .collect();
    let mut out = Captured {
        swim_sent: vec![(0, 0); MEMBERS],
        swim_received: vec![(0, 0); MEMBERS],
        asks_received: vec![(0, 0); MEMBERS],
        answers_sent: vec![(0, 0); MEMBERS],
        dropped,
    };
    let add = |slot: &mut (u64, u64), v: &(u64, u64)| {
        slot.0 += v.0;
        slot.1 += v.1;
    };
    for ((src, dst), v) in flows {
        let s = members.iter().position(|m| m == src);
        let d = members.iter().position(|m| m == dst);
        match (s, d) {
            (Some(s), Some(d)) => {
                add(&mut out.swim_sent[s], v);
                add(&mut out.swim_received[d], v);
            }
            (Some(s), None) if client_addrs.contains(dst) => add(&mut out.answers_sent[s], v),
            (None, Some(d)) if client_addrs.contains(src) => add(&mut out.asks_received[d], v),
            _ => {}
        }
    }
    out
}

/// A packet socket on `lo` counting UDP datagrams from or to port 7946 within one subnet
/// (needs CAP_NET_RAW; without it the bytes are not reported).
struct Capture {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<(Flows, u64), String>>,
}

impl Capture {
    fn start(c: &Cluster, on: Net) -> Option<Self> {
        let net = match c.agents[0].addr {
            IpAddr::V4(v) => v.octets(),
            IpAddr::V6(_) => return None,
        };
        let fd = match packet_socket(on) {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("no packet capture (bytes of members not measured): {e}");
                return None;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || capture_loop(fd, [net[0], net[1], net[2]], &stop))
        };
        Some(Self { stop, thread })
    }

    fn stop(self) -> Result<(Flows, u64), String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| "capture thread panicked".to_owned())?
    }
}

/// On lo, or on every interface for the lab (each datagram then passes the sender's and the
/// receiver's veth: counted once, where it enters the bridge). All protocols are taken, as
/// bridge ports hand IP datagrams to protocol-specific sockets only once they are not
/// bridged; the filter keeps IPv4.
fn packet_socket(on: Net) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::libc;
    use std::os::fd::FromRawFd;
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            proto as i32,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let check = |r: i32| {
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // Classic BPF on the IP header: IPv4, UDP, first fragment, source or destination
        // port 7946; keep the first 64 bytes (the headers).
        let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
        let port = GOSSIP_PORT as u32;
        let mut program = [
            op(0x28, 0, 0, 0xfffff000), // ldh skb->protocol
            op(0x15, 0, 10, 0x0800),    // jeq IPv4, else drop
            op(0x30, 0, 0, 9),          // ldb [9]: protocol
            op(0x15, 0, 8, 17),         // jeq UDP, else drop
            op(0x28, 0, 0, 6),          // ldh [6]: fragment offset
            op(0x45, 6, 0, 0x1fff),     // jset: a later fragment, drop
            op(0xb1, 0, 0, 0),          // ldxb 4*([0]&0xf): header length
            op(0x48, 0, 0, 0),          // ldh [x+0]: source port
            op(0x15, 2, 0, port),       // jeq 7946: accept
            op(0x48, 0, 0, 2),          // ldh [x+2]: destination port
            op(0x15, 0, 1, port),       // jeq 7946: accept, else drop
            op(0x06, 0, 0, 64),         // accept 64 bytes
            op(0x06, 0, 0, 0),          // drop
        ];
        let prog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_mut_ptr(),
        };
        check(libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &prog as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as u32,
        ))?;
        let buf: libc::c_int = 8 << 20;
        check(libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &buf as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        ))?;
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        check(libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        ))?;
        let ifindex = match on {
            Net::Loopback => {
                let lo = libc::if_nametoindex(c"lo".as_ptr());
                if lo == 0 {
                    return Err(std::io::Error::last_os_error());
                }
                lo as i32
            }
            Net::Netns => 0,
        };
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        check(libc::bind(
            raw,
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ))?;
        // Datagrams queued before the filter was attached would count twice the window's
        // start: read the statistics once to reset them, and drain nothing (they are few and
        // within the window anyway).
        let mut stats: libc::tpacket_stats = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as u32;
        libc::getsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            &mut stats as *mut _ as *mut libc::c_void,
            &mut len,
        );
        Ok(fd)
    }
}

fn capture_loop(
    fd: std::os::fd::OwnedFd,
    net: [u8; 3],
    stop: &AtomicBool,
) -> Result<(Flows, u64), String> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let raw = fd.as_raw_fd();
    let mut flows = Flows::new();
    let mut buf = [0u8; 128];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: recvfrom into buffers owned here.
        let (n, sll) = unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            let n = libc::recvfrom(
                raw,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
                &mut sll as *mut _ as *mut libc::sockaddr,
                &mut len,
            );
            (n, sll)
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Interrupted => continue,
                _ => return Err(e.to_string()),
            }
        }
        // Every datagram is seen twice: on lo going out and coming in, in the lab entering
        // the bridge from the sender's veth and leaving it on the receiver's. Count it once.
        if sll.sll_pkttype == libc::PACKET_OUTGOING
            || sll.sll_protocol != (libc::ETH_P_IP as u16).to_be()
        {
            continue;
        }
        let b = &buf[..n as usize];
        if b.len() < 28 || b[0] >> 4 != 4 || b[9] != 17 {
            continue;
        }
        let ihl = ((b[0] & 0xf) as usize) * 4;
        if b.len() < ihl + 8 {
            continue;
        }
        let total = u16::from_be_bytes([b[2], b[3]]) as u64;
        let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
        let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
        let in_net = |a: &Ipv4Addr| a.octets()[..3] == net;
        if !in_net(&src) || !in_net(&dst) {
            continue;
        }
        let payload = total.saturating_sub(ihl as u64 + 8);
        let e = flows.entry((src, dst)).or_default();
        e.0 += 1;
        e.1 += payload;
    }
    // SAFETY: getsockopt into a struct owned here.
    let dropped = unsafe {
        let mut stats: libc::tpacket_stats = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as u32;
        libc::getsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            &mut stats as *mut _ as *mut libc::c_void,
            &mut len,
        );
        stats.tp_drops as u64
    };
    Ok((flows, dropped))
}

/// The round column: the round's number on its first line ("without"), blank on the second.
fn round_label(i: usize, side: &str) -> String {
    if side == "without" {
        format!("{}", i + 1)
    } else {
        String::new()
    }
}

fn per_sec(n: u64, window: Duration) -> f64 {
    n as f64 / window.as_secs_f64()
}

fn median_f(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.3}", d.as_secs_f64()))
        .unwrap_or_else(|| "-".into())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Per member, per second: (datagrams received, sent).
fn member_rates(s: &Side) -> Vec<(f64, f64)> {
    s.members
        .iter()
        .map(|m| (per_sec(m.received, s.window), per_sec(m.sent, s.window)))
        .collect()
}

fn median_of<T>(v: &[T], f: impl Fn(&T) -> f64) -> f64 {
    median_f(v.iter().map(f).collect())
}

pub fn report(rounds: &[Round], clients: usize, window: Duration, net: Net) {
    let n = rounds.len();
    println!(
        "\n== clients: {clients} client agents on a 3-member cluster, next to the cluster alone ({n} rounds, {:.0} s windows, {})",
        window.as_secs_f64(),
        match net {
            Net::Loopback => "hosts on loopback addresses",
            Net::Netns => "hosts in network namespaces",
        }
    );

    println!("\n-- formation: start to the 3 members ready (with: {clients} clients started at the same moment, join token)");
    println!(
        "{:>5} {:>15} {:>10} {:>10} {:>7} {:>18} {:>20}",
        "round", "order", "without s", "with s", "ratio", "clients ready s", "after client token s"
    );
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "{:>5} {:>15} {:>10.3} {:>10.3} {:>7.2} {:>18} {:>20}",
            i + 1,
            r.order,
            r.without.formation.as_secs_f64(),
            r.with.formation.as_secs_f64(),
            r.with.formation.as_secs_f64() / r.without.formation.as_secs_f64(),
            secs(r.with.clients_cold),
            secs(r.with.clients_ready),
        );
    }
    let fw = median(rounds.iter().map(|r| r.without.formation).collect());
    let fc = median(rounds.iter().map(|r| r.with.formation).collect());
    let cold: Vec<Duration> = rounds.iter().filter_map(|r| r.with.clients_cold).collect();
    let ready: Vec<Duration> = rounds.iter().filter_map(|r| r.with.clients_ready).collect();
    println!(
        "median of {n}: formation without {:.3} s, with {:.3} s (ratio {:.2}); all clients ready from the common start {} ({} of {n} rounds), after the client token {} ({} of {n} rounds)",
        fw.as_secs_f64(),
        fc.as_secs_f64(),
        fc.as_secs_f64() / fw.as_secs_f64(),
        if cold.is_empty() { "-".into() } else { format!("{:.3} s", median(cold.clone()).as_secs_f64()) },
        cold.len(),
        if ready.is_empty() { "-".into() } else { format!("{:.3} s", median(ready.clone()).as_secs_f64()) },
        ready.len(),
    );

    println!("\n-- failure detection: kill -9 of n3's agent and etcd, to n1 and n2 both seeing it down (first suspected)");
    println!(
        "{:>5} {:>10} {:>10} {:>7} {:>16} {:>16}",
        "round", "without s", "with s", "ratio", "suspect without", "suspect with"
    );
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "{:>5} {:>10.3} {:>10.3} {:>7.2} {:>16} {:>16}",
            i + 1,
            r.without.detected.as_secs_f64(),
            r.with.detected.as_secs_f64(),
            r.with.detected.as_secs_f64() / r.without.detected.as_secs_f64(),
            secs(r.without.suspected),
            secs(r.with.suspected),
        );
    }
    let dw = median(rounds.iter().map(|r| r.without.detected).collect());
    let dc = median(rounds.iter().map(|r| r.with.detected).collect());
    println!(
        "median of {n}: detection without {:.3} s, with {:.3} s (ratio {:.2})",
        dw.as_secs_f64(),
        dc.as_secs_f64(),
        dc.as_secs_f64() / dw.as_secs_f64()
    );

    println!(
        "\n-- members' gossip datagrams per second (their counters, client asks and answers included), n1 n2 n3"
    );
    println!(
        "{:>5} {:>8} {:>20} {:>20} {:>20} {:>17} {:>17} {:>17}",
        "round",
        "side",
        "received/s",
        "sent/s",
        "client answers/s",
        "agent cpu %",
        "etcd cpu %",
        "sum recv+sent/s"
    );
    let three = |v: &[f64], prec: usize| {
        v.iter()
            .map(|x| format!("{x:.prec$}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut ratios = Vec::new();
    let mut max_ratios = Vec::new();
    for (i, r) in rounds.iter().enumerate() {
        let mut sums = Vec::new();
        let mut maxes = Vec::new();
        for (label, s) in [("without", &r.without), ("with", &r.with)] {
            let rates = member_rates(s);
            let sum: f64 = rates.iter().map(|x| x.0 + x.1).sum();
            sums.push(sum);
            maxes.push(rates.iter().map(|x| x.0 + x.1).fold(0.0, f64::max));
            let recv: Vec<f64> = rates.iter().map(|x| x.0).collect();
            let sent: Vec<f64> = rates.iter().map(|x| x.1).collect();
            let answers: Vec<f64> = s
                .members
                .iter()
                .map(|m| per_sec(m.client_answers, s.window))
                .collect();
            let cpu: Vec<f64> = s
                .members
                .iter()
                .map(|m| 100.0 * m.cpu.as_secs_f64() / s.window.as_secs_f64())
                .collect();
            let etcd_cpu: Vec<f64> = s
                .members
                .iter()
                .map(|m| 100.0 * m.etcd_cpu.as_secs_f64() / s.window.as_secs_f64())
                .collect();
            println!(
                "{:>5} {:>8} {:>20} {:>20} {:>20} {:>17} {:>17} {:>17.2}",
                round_label(i, label),
                label,
                three(&recv, 2),
                three(&sent, 2),
                three(&answers, 2),
                three(&cpu, 1),
                three(&etcd_cpu, 1),
                sum,
            );
        }
        ratios.push(sums[1] / sums[0]);
        max_ratios.push(maxes[1] / maxes[0]);
    }
    println!(
        "median ratio with / without: all members' datagrams {:.2}, the busiest member's {:.2}",
        median_f(ratios),
        median_f(max_ratios)
    );

    if rounds
        .iter()
        .all(|r| r.without.captured.is_some() && r.with.captured.is_some())
    {
        println!(
            "\n-- members' gossip-port UDP payload bytes per second (captured with a packet socket), n1 n2 n3"
        );
        println!(
            "{:>5} {:>8} {:>20} {:>20} {:>20} {:>20} {:>8}",
            "round",
            "side",
            "swim in+out B/s",
            "swim datagrams/s",
            "asks in B/s",
            "answers out B/s",
            "dropped"
        );
        let mut ratios = Vec::new();
        for (i, r) in rounds.iter().enumerate() {
            let mut totals = Vec::new();
            for (label, s) in [("without", &r.without), ("with", &r.with)] {
                let c = s.captured.as_ref().expect("captured");
                let w = s.window;
                let swim_b: Vec<f64> = (0..MEMBERS)
                    .map(|m| per_sec(c.swim_sent[m].1 + c.swim_received[m].1, w))
                    .collect();
                let swim_d: Vec<f64> = (0..MEMBERS)
                    .map(|m| per_sec(c.swim_sent[m].0 + c.swim_received[m].0, w))
                    .collect();
                let asks: Vec<f64> = (0..MEMBERS)
                    .map(|m| per_sec(c.asks_received[m].1, w))
                    .collect();
                let answers: Vec<f64> = (0..MEMBERS)
                    .map(|m| per_sec(c.answers_sent[m].1, w))
                    .collect();
                totals.push(
                    swim_b.iter().sum::<f64>()
                        + asks.iter().sum::<f64>()
                        + answers.iter().sum::<f64>(),
                );
                println!(
                    "{:>5} {:>8} {:>20} {:>20} {:>20} {:>20} {:>8}",
                    round_label(i, label),
                    label,
                    three(&swim_b, 0),
                    three(&swim_d, 2),
                    three(&asks, 0),
                    three(&answers, 0),
                    c.dropped,
                );
            }
            ratios.push(totals[1] / totals[0]);
        }
        println!(
            "median ratio with / without of all bytes on the members' gossip ports: {:.2}",
            median_f(ratios)
        );
    }

    println!("\n-- each client agent's directory traffic per second (its /status; median over the clients, [min, max])");
    println!(
        "{:>5} {:>8} {:>18} {:>18} {:>18} {:>18}",
        "round", "clients", "datagrams sent/s", "bytes sent/s", "datagrams recv/s", "bytes recv/s"
    );
    for (i, r) in rounds.iter().enumerate() {
        let s = &r.with;
        let col = |f: fn(&ClientWindow) -> u64| {
            let v: Vec<f64> = s
                .client_traffic
                .iter()
                .map(|c| per_sec(f(c), s.window))
                .collect();
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(0.0, f64::max);
            format!("{:.3} [{:.2},{:.2}]", median_f(v), min, max)
        };
        println!(
            "{:>5} {:>8} {:>18} {:>18} {:>18} {:>18}",
            i + 1,
            s.client_traffic.len(),
            col(|c| c.datagrams_sent),
            col(|c| c.bytes_sent),
            col(|c| c.datagrams_received),
            col(|c| c.bytes_received),
        );
        if let Some(cap) = &s.captured {
            let asks: u64 = cap.asks_received.iter().map(|v| v.1).sum();
            let answers: u64 = cap.answers_sent.iter().map(|v| v.1).sum();
            let sent: u64 = s.client_traffic.iter().map(|c| c.bytes_sent).sum();
            let received: u64 = s.client_traffic.iter().map(|c| c.bytes_received).sum();
            println!(
                "       all clients: {sent} B sent, {received} B received by their counters; {asks} B of asks, {answers} B of answers captured (windows differ by up to 1 s)"
            );
        }
    }

    println!(
        "\n-- clients' readiness (/readyz of every client every 250 ms): in the steady window, and in the {} s after n3 was killed",
        AFTER_KILL.as_secs()
    );
    println!(
        "{:>5} {:>10} {:>12} {:>14} {:>12} {:>14} {:>16}",
        "round", "side", "ever not", "polls not %", "not at end", "first not s", "clients"
    );
    for (i, r) in rounds.iter().enumerate() {
        for (label, w) in [
            ("steady", &r.with.steady),
            ("after kill", &r.with.after_kill),
        ] {
            let Some(w) = w else { continue };
            println!(
                "{:>5} {:>10} {:>12} {:>14.2} {:>12} {:>14} {:>16}",
                if label == "steady" {
                    format!("{}", i + 1)
                } else {
                    String::new()
                },
                label,
                w.ever,
                100.0 * w.polls_not_ready as f64 / w.polls.max(1) as f64,
                w.at_end,
                secs(w.first_not_ready),
                r.with.client_traffic.len(),
            );
            for reason in &w.reasons {
                println!("{:>5} {:>10} first seen not ready: {reason}", "", "");
            }
        }
    }

    println!("\n-- memory: VmRSS MiB (median [max])");
    println!(
        "{:>5} {:>16} {:>16} {:>16} {:>16} {:>18}",
        "round", "member agent w/o", "member agent with", "etcd w/o", "etcd with", "client agent"
    );
    let mm = |v: &[u64]| {
        let max = v.iter().copied().max().unwrap_or(0);
        format!(
            "{:.1} [{:.1}]",
            mib(median_of(v, |x| *x as f64) as u64),
            mib(max)
        )
    };
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "{:>5} {:>16} {:>16} {:>16} {:>16} {:>18}",
            i + 1,
            mm(&r.without.member_rss),
            mm(&r.with.member_rss),
            mm(&r.without.etcd_rss),
            mm(&r.with.etcd_rss),
            mm(&r.with.client_rss),
        );
    }

    println!("\n-- members' counters over each side's run (sum of the 3 members, before the kill)");
    for (i, r) in rounds.iter().enumerate() {
        let line = |s: &Side| {
            s.counters
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!("{:>5} without: {}", i + 1, line(&r.without));
        println!("{:>5} with:    {}", "", line(&r.with));
        for w in &r.with.not_ready {
            println!("{:>5} NOT READY in {TIMEOUT:?}: {w}", "");
        }
    }
}

/// Checks the arguments: members and clients must fit the /24.
pub fn check(clients: usize) {
    assert!(
        (1..=250).contains(&clients),
        "CLIENTS must be 1 to 250 (one loopback address each, next to the 3 members)"
    );
}
