//! The cluster-job lock on a real three-member cluster, taken with the members' own node
//! certificates: exclusion classes and the slot record, two contenders that never overlap, a
//! holder process killed with SIGKILL whose lock frees itself when its lease expires, and a
//! holder whose own etcd is stopped keeping its lease alive through the other members.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use quorate::etcd::client::{connect, ClientTls};
use quorate::jobs::{
    Acquired, Job, JobLock, JobLocks, LockHolder, RecordSlotError, LOCK_TTL, RENEW_EVERY,
};
use quorate::pki::PkiStore;
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Cluster};
use tokio::runtime::Runtime;

const CONTEND_TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn job_lock_excludes_expires_with_a_killed_holder_and_renews_through_other_members() {
    // The agents' own snapshot task would contend for the `snapshot` lock and slot this test
    // takes by hand.
    let mut c = Cluster::with(3, |_, b| {
        b.with(|cfg| cfg.snapshot.schedule = Some(String::new()))
    });
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let rt = Runtime::new().unwrap();

    let t = Instant::now();
    classes_and_slots(&c, &rt);
    eprintln!("classes and slots: {:?}", t.elapsed());
    let t = Instant::now();
    contenders_never_overlap(&c, &rt);
    eprintln!("contenders: {:?}", t.elapsed());
    let t = Instant::now();
    killed_holder_frees_the_lock_when_its_lease_expires(&c, &rt);
    eprintln!("killed holder: {:?}", t.elapsed());
    let t = Instant::now();
    holder_renews_through_other_members_while_its_etcd_is_stopped(&c, &rt);
    eprintln!("stopped etcd: {:?}", t.elapsed());
}

/// The TLS identity of agent `i`'s node, from its state directory.
fn tls(c: &Cluster, i: usize) -> ClientTls {
    let pki = PkiStore::new(c.agents[i].state_dir().join("pki"));
    ClientTls::from_store(&pki).expect("node certificate in the state dir")
}

/// Agent `i`'s client URL first, then the others'.
fn endpoints(c: &Cluster, i: usize) -> Vec<String> {
    let n = c.agents.len();
    (0..n).map(|k| c.client_url((i + k) % n)).collect()
}

/// The job locks as agent `i`'s node.
fn locks(c: &Cluster, i: usize) -> JobLocks {
    JobLocks::new(c.agents[i].name.clone(), endpoints(c, i), tls(c, i))
}

fn held(a: Acquired) -> JobLock {
    match a {
        Acquired::Held(lock) => lock,
        Acquired::Busy(h) => panic!("expected to take the lock; held by {h}"),
    }
}

fn busy(a: Acquired) -> LockHolder {
    match a {
        Acquired::Busy(h) => h,
        Acquired::Held(lock) => panic!("took the lock for {} although it is held", lock.job()),
    }
}

/// Retries `try_acquire` until it holds the lock (errors count as busy: a member may be
/// electing a leader).
async fn acquire(locks: &JobLocks, job: Job) -> JobLock {
    let deadline = Instant::now() + CONTEND_TIMEOUT;
    loop {
        match locks.try_acquire(job).await {
            Ok(Acquired::Held(lock)) => return lock,
            Ok(Acquired::Busy(_)) | Err(_) if Instant::now() < deadline => {}
            other => panic!("no {job} lock within {CONTEND_TIMEOUT:?}: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// member-down excludes defrag against an etcd restart, not a snapshot; the slot record is
/// written only under the lock.
fn classes_and_slots(c: &Cluster, rt: &Runtime) {
    let (n1, n2, n3) = (locks(c, 0), locks(c, 1), locks(c, 2));
    rt.block_on(async {
        let defrag = held(n1.try_acquire(Job::Defrag).await.unwrap());
        let h = busy(n2.try_acquire(Job::EtcdRestart).await.unwrap());
        assert_eq!((h.node.as_str(), h.job), ("n1", Some(Job::Defrag)));
        assert!(h.started_at.is_some());
        let snapshot = held(n3.try_acquire(Job::Snapshot).await.unwrap());
        assert_eq!(n2.holder(Job::EtcdRestart).await.unwrap(), Some(h));
        assert_eq!(n2.holder(Job::Snapshot).await.unwrap().unwrap().node, "n3");

        assert_eq!(n1.last_slot(Job::Snapshot).await.unwrap(), None);
        snapshot.record_slot(3600).await.unwrap();
        assert_eq!(n1.last_slot(Job::Snapshot).await.unwrap(), Some(3600));

        // Someone deletes the lock key: the holder may no longer record.
        let mut raw = connect(&[c.client_url(0)], &tls(c, 0), Duration::from_secs(5))
            .await
            .unwrap();
        raw.delete(Job::Snapshot.lock_key(), None).await.unwrap();
        let e = snapshot.record_slot(7200).await.unwrap_err();
        assert!(matches!(e, RecordSlotError::NotHeld { .. }), "{e}");
        assert_eq!(n2.last_slot(Job::Snapshot).await.unwrap(), Some(3600));

        defrag.release().await;
        snapshot.release().await;
        assert_eq!(n3.holder(Job::Defrag).await.unwrap(), None);
        // Released means free at once, not after the TTL.
        held(n2.try_acquire(Job::EtcdRestart).await.unwrap())
            .release()
            .await;
    });
}

/// Two agents ask for member-down at once (one to defragment, one to restart etcd): both run,
/// one after the other.
fn contenders_never_overlap(c: &Cluster, rt: &Runtime) {
    async fn contend(
        locks: JobLocks,
        job: Job,
        start: std::sync::Arc<tokio::sync::Barrier>,
    ) -> (Instant, Instant) {
        start.wait().await;
        let lock = acquire(&locks, job).await;
        let began = Instant::now();
        // The critical section: "work" that notices a loss.
        tokio::select! {
            _ = lock.lost() => panic!("{job} lock lost mid-job"),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        assert_eq!(
            locks.holder(job).await.unwrap().and_then(|h| h.job),
            Some(job),
            "the lock key names the running job"
        );
        let ended = Instant::now();
        lock.release().await;
        (began, ended)
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let (a, b) = rt.block_on(async {
        tokio::join!(
            contend(locks(c, 0), Job::Defrag, barrier.clone()),
            contend(locks(c, 1), Job::EtcdRestart, barrier.clone()),
        )
    });
    assert!(
        a.1 <= b.0 || b.1 <= a.0,
        "critical sections overlap: defrag {a:?}, etcd-restart {b:?}"
    );
}

/// The holder process; SIGKILLed on drop.
struct HolderProcess(Child);

impl Drop for HolderProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

enum Attempt {
    Busy(Instant, LockHolder),
    Held(Instant, JobLock),
    Failed(String),
}

/// A separate process holds member-down as n3; n1 keeps asking; the process is killed with
/// SIGKILL (no release); n1 gets the lock once the lease expires, never before the kill.
fn killed_holder_frees_the_lock_when_its_lease_expires(c: &Cluster, rt: &Runtime) {
    let pki = c.agents[2].state_dir().join("pki");
    let mut child = Command::new(env!("CARGO_BIN_EXE_quorate-job-holder"))
        .arg(&pki)
        .arg(&c.agents[2].name)
        .arg(Job::Defrag.name())
        .args(endpoints(c, 2))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start quorate-job-holder");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut holder = HolderProcess(child);
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = line_rx
        .recv_timeout(CONTEND_TIMEOUT)
        .expect("the holder process reports the lock");
    assert!(line.starts_with("acquired "), "{line}");
    let holder_acquired = Instant::now();

    // n1 contends from now on, reporting every attempt.
    let (tx, rx) = mpsc::channel();
    let n1 = locks(c, 0);
    let contender = rt.spawn(async move {
        let deadline = Instant::now() + CONTEND_TIMEOUT * 2;
        while Instant::now() < deadline {
            let attempt = match n1.try_acquire(Job::EtcdRestart).await {
                Ok(Acquired::Busy(h)) => Attempt::Busy(Instant::now(), h),
                Ok(Acquired::Held(lock)) => Attempt::Held(Instant::now(), lock),
                Err(e) => Attempt::Failed(e.to_string()),
            };
            let done = matches!(attempt, Attempt::Held(..));
            if tx.send(attempt).is_err() || done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    // Let the holder keep its lease for longer than the TTL, under contention.
    let hold_for = LOCK_TTL + RENEW_EVERY;
    let mut busy_seen = 0;
    wait_for(
        "the holder to keep the lock past its TTL",
        CONTEND_TIMEOUT,
        || {
            while let Ok(a) = rx.try_recv() {
                match a {
                    Attempt::Busy(_, h) => {
                        assert_eq!((h.node.as_str(), h.job), ("n3", Some(Job::Defrag)));
                        busy_seen += 1;
                    }
                    Attempt::Held(..) => panic!("n1 took the lock while the holder process lives"),
                    Attempt::Failed(e) => eprintln!("contender: {e}"),
                }
            }
            if holder_acquired.elapsed() > hold_for && busy_seen > 0 {
                Ok(())
            } else {
                Err(format!("{busy_seen} busy answers so far"))
            }
        },
    );
    assert!(
        holder.0.try_wait().unwrap().is_none(),
        "the holder process exited"
    );
    holder.0.kill().unwrap();
    let killed = Instant::now();
    holder.0.wait().unwrap();

    let (took, lock) = loop {
        match rx.recv_timeout(CONTEND_TIMEOUT) {
            Ok(Attempt::Held(at, lock)) => break (at, lock),
            Ok(Attempt::Busy(at, h)) => assert_eq!(h.node, "n3", "busy at {at:?}"),
            Ok(Attempt::Failed(e)) => eprintln!("contender: {e}"),
            Err(e) => panic!("n1 never got the lock after the holder was killed: {e}"),
        }
    };
    assert!(
        took > killed,
        "n1 took the lock before the holder was killed"
    );
    eprintln!(
        "holder killed; n1 took the lock {:?} later ({busy_seen} busy answers before the kill)",
        took - killed
    );
    rt.block_on(async {
        contender.await.unwrap();
        lock.release().await;
    });
}

/// SIGCONTs a SIGSTOPped process on drop.
struct Stopped(Pid);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// n1 holds member-down (as for a restart of its own etcd); n1's etcd is stopped with
/// SIGSTOP; the keep-alive moves to the other members and the lock outlives the TTL.
fn holder_renews_through_other_members_while_its_etcd_is_stopped(c: &Cluster, rt: &Runtime) {
    let n1 = locks(c, 0);
    let lock = rt.block_on(acquire(&n1, Job::EtcdRestart));
    let own = c.client_url(0);
    let status = lock.status();
    wait_for("a renewal through n1's own etcd", CONTEND_TIMEOUT, || {
        let s = status.borrow().clone();
        if s.renewed_via.as_deref() == Some(own.as_str()) {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    let pid = c.agents[0]
        .status()
        .unwrap()
        .etcd
        .pid
        .expect("n1's etcd pid");
    let pid = Pid::from_raw(pid as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let stopped = Stopped(pid);
    let stopped_at = Instant::now();
    let renewals_at_stop = status.borrow().renewals;

    wait_for(
        "the lock to be renewed through other members for longer than its TTL",
        CONTEND_TIMEOUT,
        || {
            assert!(
                !lock.is_lost(),
                "lock lost with n1's etcd stopped: {:?}",
                status.borrow()
            );
            let s = status.borrow().clone();
            let elsewhere = s.renewed_via.as_deref().is_some_and(|v| v != own);
            if stopped_at.elapsed() > LOCK_TTL + RENEW_EVERY
                && elsewhere
                && s.renewals >= renewals_at_stop + 2
            {
                Ok(())
            } else {
                Err(format!("{:?} after {:?}", s, stopped_at.elapsed()))
            }
        },
    );
    eprintln!(
        "with n1's etcd stopped for {:?}: {:?}",
        stopped_at.elapsed(),
        *status.borrow()
    );
    let lease = lock.lease_id();
    rt.block_on(async {
        let n2 = locks(c, 1);
        let h = n2
            .holder(Job::Defrag)
            .await
            .unwrap()
            .expect("lock still held");
        assert_eq!((h.node.as_str(), h.job), ("n1", Some(Job::EtcdRestart)));
        let mut raw = connect(&[c.client_url(1)], &tls(c, 1), Duration::from_secs(5))
            .await
            .unwrap();
        let ttl = raw.lease_time_to_live(lease, None).await.unwrap().ttl();
        assert!(ttl > 0, "lease {lease:x} has TTL {ttl}");
        busy(n2.try_acquire(Job::Defrag).await.unwrap());
    });
    drop(stopped);
    rt.block_on(lock.release());
    wait_for("n1 ready again", FORM_TIMEOUT, || c.agents[0].ready());
    let n3 = locks(c, 2);
    assert_eq!(rt.block_on(n3.holder(Job::Defrag)).unwrap(), None);
}
