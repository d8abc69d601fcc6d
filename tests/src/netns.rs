//! A small network lab for tests that need real partitions: one bridge and one network
//! namespace per host, on 10.79.N.0/24 (N allocated under a lock file, like loopback subnets).
//! Hosts are cut off and healed by taking their interface down and up. Everything is removed
//! on drop, also when the test fails. Needs root and iproute2.

use std::fs::{File, OpenOptions};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

/// Bridge, namespaces and veth pairs for `n` hosts.
pub struct NetnsLab {
    n: u8,
    hosts: usize,
    _lock: Flock<File>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetnsLab {
    /// Whether this process can build the lab (root, with iproute2).
    pub fn available() -> bool {
        nix::unistd::geteuid().is_root() && Command::new("ip").arg("-V").output().is_ok()
    }

    /// Creates the lab for `hosts` hosts.
    pub fn create(hosts: usize) -> Self {
        let (n, lock) = (1..=200u8)
            .find_map(|n| {
                let path = std::env::temp_dir().join(format!("quorate-test-netns-{n}.lock"));
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(path)
                    .ok()?;
                Flock::lock(file, FlockArg::LockExclusiveNonblock)
                    .ok()
                    .map(|l| (n, l))
            })
            .expect("no free netns lab number");
        let lab = Self {
            n,
            hosts,
            _lock: lock,
        };
        lab.teardown(); // leftovers of a killed run
        lab.build().unwrap_or_else(|e| {
            lab.teardown();
            panic!("cannot build the network lab: {e}")
        });
        lab
    }

    fn bridge(&self) -> String {
        format!("qtb{}", self.n)
    }

    /// Namespace name of host `i` (0-based).
    pub fn ns(&self, i: usize) -> String {
        format!("qt{}h{}", self.n, i + 1)
    }

    fn veth(&self, i: usize) -> String {
        format!("qt{}v{}", self.n, i + 1)
    }

    /// Address of host `i` (0-based).
    pub fn addr(&self, i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 79, self.n, i as u8 + 1))
    }

    fn build(&self) -> Result<(), String> {
        let br = self.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("10.79.{}.254/24", self.n),
            "dev",
            &br,
        ])?;
        ip(&["link", "set", &br, "up"])?;
        for i in 0..self.hosts {
            let (ns, veth) = (self.ns(i), self.veth(i));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &veth, "master", &br, "up"])?;
            let addr = format!("{}/24", self.addr(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Cuts host `i` off the network.
    pub fn partition(&self, i: usize) {
        ip(&["-n", &self.ns(i), "link", "set", "eth0", "down"]).expect("partition");
    }

    /// Reconnects host `i`.
    pub fn heal(&self, i: usize) {
        ip(&["-n", &self.ns(i), "link", "set", "eth0", "up"]).expect("heal");
    }

    fn teardown(&self) {
        for i in 0..self.hosts {
            let _ = ip(&["netns", "del", &self.ns(i)]);
            let _ = ip(&["link", "del", &self.veth(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

impl Drop for NetnsLab {
    fn drop(&mut self) {
        self.teardown();
    }
}
