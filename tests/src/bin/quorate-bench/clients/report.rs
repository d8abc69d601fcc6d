//! The client-mode benchmark's report: per-round lines, then medians side by side and their
//! ratios.

use super::*;
use crate::median;

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
