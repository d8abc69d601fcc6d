//! quorate-bench: quorate next to the manual procedure, in the same run on the same machine,
//! round by round, with medians, differences and ratios.
//!
//!   cargo run --release -p quorate-tests --bin quorate-bench -- [formation|growth|replace|restore|upgrade|all] [ROUNDS]
//!   cargo run --release -p quorate-tests --bin quorate-bench -- space [SECONDS] [RETENTION_SECONDS]
//!   cargo run --release -p quorate-tests --bin quorate-bench -- save [ROUNDS] [MB]
//!   cargo run --release -p quorate-tests --bin quorate-bench -- clients [ROUNDS] [CLIENTS] [WINDOW_SECONDS] [netns]
//!
//! TEST_QUORATE_BIN selects the agent binary (default: target/release/quorate if built, else
//! target/debug/quorate). See docs/benchmarks.md for results.

mod clients;
mod formation;
mod lifecycle;
mod manual;
mod restore;
mod save;
mod space;
mod upgrade;

use std::path::PathBuf;
use std::time::Duration;

/// One round: the manual procedure's time, quorate's, and a scenario-specific extra figure.
pub struct Round {
    pub manual: Duration,
    pub quorate: Duration,
    pub extra: Option<Duration>,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn report(title: &str, extra: Option<&str>, rounds: &[Round]) {
    println!("\n== {title}");
    println!(
        "{:>5} {:>10} {:>10} {:>10} {:>7} {:>14}",
        "round",
        "manual s",
        "quorate s",
        "diff s",
        "ratio",
        extra.unwrap_or("")
    );
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "{:>5} {:>10.3} {:>10.3} {:>10.3} {:>7.2} {:>14}",
            i + 1,
            r.manual.as_secs_f64(),
            r.quorate.as_secs_f64(),
            r.quorate.as_secs_f64() - r.manual.as_secs_f64(),
            r.quorate.as_secs_f64() / r.manual.as_secs_f64(),
            r.extra
                .map(|e| format!("{:.3}", e.as_secs_f64()))
                .unwrap_or_default()
        );
    }
    let m = median(rounds.iter().map(|r| r.manual).collect());
    let q = median(rounds.iter().map(|r| r.quorate).collect());
    print!(
        "median of {}: manual {:.3} s, quorate {:.3} s, quorate adds {:.3} s (ratio {:.2})",
        rounds.len(),
        m.as_secs_f64(),
        q.as_secs_f64(),
        q.as_secs_f64() - m.as_secs_f64(),
        q.as_secs_f64() / m.as_secs_f64()
    );
    if let (Some(label), true) = (extra, rounds.iter().all(|r| r.extra.is_some())) {
        let e = median(rounds.iter().filter_map(|r| r.extra).collect());
        print!("; {label}: {:.3} s", e.as_secs_f64());
    }
    println!();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_else(|| "all".into());
    let rounds_arg: Option<usize> = args.next().and_then(|a| a.parse().ok());
    let rounds = rounds_arg.unwrap_or(5);
    if std::env::var_os("TEST_QUORATE_BIN").is_none() {
        let release = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/quorate");
        if release.exists() {
            std::env::set_var("TEST_QUORATE_BIN", release);
        }
    }
    println!("agent binary: {}", quorate_tests::quorate_bin().display());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    if scenario == "space" {
        // Here the second argument is the writer's run time in seconds.
        let secs = rounds.max(30) as u64;
        let retention: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
        let retention = Duration::from_secs(retention);
        let samples = rt.block_on(space::run(
            Duration::from_secs(secs),
            Duration::from_secs(15),
            retention,
        ));
        space::report(&samples, retention);
        return;
    }
    if scenario == "save" {
        // Here the third argument is the keyspace to load, in MB.
        let mb: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
        let (r, agent, db_size) = rt.block_on(save::run(mb, rounds));
        save::report(&r, &agent, db_size);
        return;
    }
    if scenario == "clients" {
        // Here the third argument is the number of client agents, the fourth the length of
        // the traffic window in seconds; "netns" as the fifth puts every host in a network
        // namespace of its own (root), instead of on a loopback address.
        let rounds = rounds_arg.unwrap_or(3);
        let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
        let window: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
        let net = match args.next().as_deref() {
            Some("netns") => clients::Net::Netns,
            _ => clients::Net::Loopback,
        };
        clients::check(n);
        let window = Duration::from_secs(window);
        let r: Vec<clients::Round> = (0..rounds)
            .map(|i| clients::round(n, window, i % 2 == 1, net))
            .collect();
        clients::report(&r, n, window, net);
        return;
    }
    let all = scenario == "all";
    if all || scenario == "formation" {
        let r: Vec<Round> = (0..rounds)
            .map(|_| rt.block_on(formation::round()))
            .collect();
        report(
            "formation: empty hosts to a healthy 3-member mTLS cluster",
            Some("q: etcd up s"),
            &r,
        );
    }
    if all || scenario == "growth" {
        let r: Vec<Round> = (0..rounds)
            .map(|_| rt.block_on(lifecycle::growth()))
            .collect();
        report("growth: a 4th host to a healthy voting member", None, &r);
    }
    if all || scenario == "restore" {
        let r: Vec<Round> = (0..rounds).map(|_| rt.block_on(restore::round())).collect();
        report(
            "restore: a 3-member cluster from a snapshot to three healthy members",
            None,
            &r,
        );
    }
    if all || scenario == "upgrade" {
        let r: Vec<Round> = (0..rounds).map(|_| rt.block_on(upgrade::round())).collect();
        report(
            "upgrade: a rolling etcd 3.4.23 -> 3.5.30 upgrade of 3 members, healthy",
            None,
            &r,
        );
    }
    if all || scenario == "replace" {
        let r: Vec<Round> = (0..rounds)
            .map(|_| rt.block_on(lifecycle::replace()))
            .collect();
        report(
            "replacement: a wiped host to three healthy voters",
            None,
            &r,
        );
    }
}
