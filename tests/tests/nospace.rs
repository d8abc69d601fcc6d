//! The space alarm on real etcd with a small quota: history that fills the quota is recovered
//! from by the agents alone (compaction, defragmentation of every member one at a time,
//! disarm), and a quota filled by live data keeps the alarm, with the reason and the fix in
//! `quorate status`. Every write etcd acknowledged is read back at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::space::{self, Put};
use quorate_tests::{wait_for, Cluster};

const QUOTA: &str = "32MiB";
const VALUE: usize = 100 * 1024;
/// Generous: filling 32 MiB through three members on a loaded 2-core machine.
const FILL_TIMEOUT: Duration = Duration::from_secs(240);
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn nospace_from_history_is_recovered_by_the_agents_alone() {
    let mut c = Cluster::with(3, |_, b| b.quota(QUOTA));
    c.start_and_wait();
    let cert = c.client_cert(0, "writer");
    let tls = space::tls(&cert);
    let eps = space::endpoints(&c);
    let rt = space::runtime();
    // key -> the last write etcd acknowledged for it
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut seq = 0u64;
    let mut put = |acked: &mut BTreeMap<String, u64>| {
        seq += 1;
        let key = format!("/space/{}", seq % 8);
        let outcome = rt.block_on(space::put(&eps, &tls, &key, space::value(seq, VALUE)));
        if outcome == Put::Acked {
            acked.insert(key, seq);
        }
        outcome
    };

    // Overwriting the same few keys fills the quota with history until etcd refuses.
    let deadline = Instant::now() + FILL_TIMEOUT;
    loop {
        assert!(
            Instant::now() < deadline,
            "no NOSPACE after {} writes",
            acked.len()
        );
        match put(&mut acked) {
            Put::NoSpace => break,
            Put::Acked => {}
            Put::Failed(e) => eprintln!("a write failed (retrying): {e}"),
        }
    }

    // The agents compact, defragment and disarm; writes succeed again.
    wait_for("writes to succeed again", RECOVERY_TIMEOUT, || {
        match put(&mut acked) {
            Put::Acked => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    for _ in 0..10 {
        wait_for("a write after the recovery", FORM_TIMEOUT, || {
            match put(&mut acked) {
                Put::Acked => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    }
    wait_for("no alarm left", FORM_TIMEOUT, || {
        let list = space::alarm_list(&c, 1, &cert);
        if list.trim().is_empty() {
            Ok(())
        } else {
            Err(list)
        }
    });

    for (key, seq) in &acked {
        let v = rt
            .block_on(space::get(&eps, &tls, key))
            .unwrap_or_else(|| panic!("{key} is gone"));
        let got = space::seq_of(&v).expect("a value written by this test");
        assert!(
            got >= *seq,
            "{key} holds write {got}, older than acknowledged {seq}"
        );
    }

    // Every member was defragmented by the recovery, never two at once.
    let intervals = space::intervals(&c);
    eprintln!(
        "{} writes acknowledged; defragmentations: {intervals:#?}",
        seq_count(&acked)
    );
    for a in &c.agents {
        assert!(
            intervals
                .iter()
                .any(|i| i.member == a.name && i.trigger == "nospace"),
            "{} was not defragmented by the recovery: {intervals:?}",
            a.name
        );
    }
    space::assert_no_overlap(&intervals);
}

fn seq_count(acked: &BTreeMap<String, u64>) -> u64 {
    acked.values().copied().max().unwrap_or_default()
}

#[test]
fn a_quota_filled_by_live_data_keeps_the_alarm_and_says_why() {
    let mut c = Cluster::with(3, |_, b| b.quota(QUOTA));
    c.start_and_wait();
    let cert = c.client_cert(0, "writer");
    let tls = space::tls(&cert);
    let eps = space::endpoints(&c);
    let rt = space::runtime();
    let mut acked: Vec<(String, u64)> = Vec::new();

    // Distinct keys, never overwritten: all of it is live data.
    let deadline = Instant::now() + FILL_TIMEOUT;
    let mut seq = 0u64;
    loop {
        assert!(
            Instant::now() < deadline,
            "no NOSPACE after {} writes",
            acked.len()
        );
        seq += 1;
        let key = format!("/live/{seq:06}");
        match rt.block_on(space::put(&eps, &tls, &key, space::value(seq, VALUE))) {
            Put::NoSpace => break,
            Put::Acked => acked.push((key, seq)),
            Put::Failed(e) => eprintln!("a write failed (retrying): {e}"),
        }
    }

    // The recovery runs, finds nothing to reclaim, and says so with the fix.
    let text = wait_for("the status to explain the alarm", RECOVERY_TIMEOUT, || {
        for a in &c.agents {
            let o = a.cli(&["status"]);
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            if text.contains("live data fills the quota") {
                return Ok(text);
            }
        }
        Err("no agent says the live data fills the quota".into())
    });
    assert!(text.contains("etcd.quota"), "the fix is named: {text}");
    assert!(text.contains("delete data"), "the fix is named: {text}");
    assert!(
        space::alarm_list(&c, 0, &cert).contains("NOSPACE"),
        "the alarm stays"
    );
    assert_eq!(
        rt.block_on(space::put(&eps, &tls, "/live/more", space::value(0, VALUE))),
        Put::NoSpace
    );

    for (key, seq) in &acked {
        let v = rt
            .block_on(space::get(&eps, &tls, key))
            .unwrap_or_else(|| panic!("{key} is gone"));
        assert_eq!(space::seq_of(&v), Some(*seq), "{key}");
    }
    space::assert_no_overlap(&space::intervals(&c));
}
