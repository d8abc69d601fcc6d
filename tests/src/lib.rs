//! The test harness: real `quorate` agents (the built binary) and real etcd on loopback
//! addresses. Each [`Cluster`] takes a /24 of 127.0.0.0/8 of its own (a lock file makes the
//! choice safe across parallel test processes), so every agent uses the standard ports, as on
//! separate hosts. Everything started is stopped on drop, also when a test fails.

pub mod agent;
pub mod cluster;
pub mod keys;
pub mod net;
pub mod netns;
pub mod notify;
pub mod prometheus;
pub mod restore;
pub mod revocation;
pub mod s3;
pub mod signing;
pub mod space;
pub mod wait;
pub mod writer;

pub use agent::Agent;
pub use cluster::Cluster;
pub use net::Subnet;
pub use netns::NetnsLab;
pub use wait::wait_for;
pub use writer::Writer;

use std::path::PathBuf;

/// The `quorate` binary under test: `TEST_QUORATE_BIN`, or target/debug/quorate of this
/// workspace. (Not a `QUORATE_*` variable: the agent refuses unknown ones.)
pub fn quorate_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TEST_QUORATE_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/quorate");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p quorate` (scripts/test.sh does), \
         or set TEST_QUORATE_BIN",
        bin.display()
    );
    bin
}

/// The etcd server the agents under test run: `TEST_ETCD_BINARY` (for example etcd 3.5
/// unpacked from Debian's archive into a cache by scripts/deps.sh), or `etcd` on PATH.
pub fn etcd_bin() -> PathBuf {
    match std::env::var_os("TEST_ETCD_BINARY").filter(|p| !p.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "TEST_ETCD_BINARY={} is not a file: point it at an etcd server binary",
                p.display()
            );
            p
        }
        None => PathBuf::from("etcd"),
    }
}

/// The version the etcd under test reports (`etcd --version`), as "3.5.30".
pub fn etcd_version() -> String {
    let out = std::process::Command::new(etcd_bin())
        .arg("--version")
        .output()
        .expect("run etcd --version");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("etcd --version printed no version: {text}"))
}

/// `etcdctl`, with a clear message when etcd-client is not installed.
pub fn etcdctl_bin() -> PathBuf {
    let p = PathBuf::from("/usr/bin/etcdctl");
    assert!(
        p.exists(),
        "etcdctl not found: apt-get install etcd-client (scripts/test.sh does)"
    );
    p
}

/// Fails `test` because a prerequisite is missing, naming it: a test never passes without
/// checking anything. The suite's setup (scripts/deps.sh, run as root) provides every
/// prerequisite, so this only fires on a machine that lacks one.
pub fn require_failed(test: &str, missing: &str) -> ! {
    panic!("{test} cannot run: {missing}. Run the suite as root through scripts/test.sh, which sets up what it needs")
}
