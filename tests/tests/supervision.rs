//! etcd is a supervised child: restarted when it dies, never outliving its agent, and never
//! inheriting the agent's secrets (QUORATE_*, the S3 credentials) or systemd's variables.

use std::time::Duration;

use quorate_tests::agent::process_alive;
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Cluster};

#[test]
fn killed_etcd_is_restarted_and_dies_with_its_agent() {
    let mut c = Cluster::new(3);
    // The join token through the environment, as a unit's Environment= would give it, and
    // credentials the agent might hold for S3.
    c.agents[0]
        .env
        .push(("QUORATE_TOKEN".into(), c.token.clone()));
    c.agents[0]
        .env
        .push(("AWS_SECRET_ACCESS_KEY".into(), "not-for-etcd".into()));
    c.start_all();
    c.wait_ready(FORM_TIMEOUT);
    let etcd = c.agents[0].status().unwrap().etcd.pid.expect("etcd pid");
    let environ = std::fs::read(format!("/proc/{etcd}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    let names: Vec<&str> = environ
        .split('\0')
        .filter_map(|kv| kv.split('=').next())
        .collect();
    assert!(names.contains(&"PATH"), "{names:?}");
    for name in &names {
        assert!(
            !name.starts_with("QUORATE_") && *name != "AWS_SECRET_ACCESS_KEY",
            "etcd inherited {name}"
        );
    }

    // kill -9 of an etcd child: not ready at once, restarted, ready again.
    let old = c.agents[1].status().unwrap().etcd.pid.expect("etcd pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("n2 to notice", Duration::from_secs(10), || {
        match c.agents[1].ready() {
            Ok(_) => Err("still ready".into()),
            Err(reason) => Ok(reason),
        }
    });
    wait_for("n2 ready again", FORM_TIMEOUT, || c.agents[1].ready());
    let s = c.agents[1].status().unwrap();
    assert_eq!(s.etcd.restarts, 1);
    assert_eq!(s.counters["etcd_unexpected_exits"], 1);
    assert_ne!(s.etcd.pid, Some(old));

    // kill -9 of an agent: its etcd goes with it (PR_SET_PDEATHSIG), and a restarted agent
    // brings the member back.
    let etcd = c.agents[2].status().unwrap().etcd.pid.expect("etcd pid");
    c.agents[2].kill9();
    wait_for(
        "n3's etcd to exit with its agent",
        Duration::from_secs(20),
        || {
            if process_alive(etcd) {
                Err(format!("etcd {etcd} still alive"))
            } else {
                Ok(())
            }
        },
    );
    c.agents[2].start();
    c.wait_ready(FORM_TIMEOUT);
    let s = c.agents[2].status().unwrap();
    assert_eq!(s.etcd.members.len(), 3);
}
