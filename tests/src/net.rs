//! Loopback subnets for tests: 127.N.0.0/24 with N from 10 to 249, one per cluster, chosen
//! under an exclusive lock file so that parallel tests (and the demo on 127.0.0.x) never share
//! addresses.

use std::fs::{File, OpenOptions};
use std::net::{IpAddr, Ipv4Addr};

use nix::fcntl::{Flock, FlockArg};

/// A /24 of loopback addresses held for the lifetime of the value.
pub struct Subnet {
    n: u8,
    _lock: Flock<File>,
}

impl Subnet {
    /// Takes a free subnet.
    pub fn allocate() -> Self {
        let start = std::process::id() % 240;
        for i in 0..240u32 {
            let n = 10 + ((start + i) % 240) as u8;
            let path = std::env::temp_dir().join(format!("quorate-test-net-{n}.lock"));
            let Ok(file) = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
            else {
                continue;
            };
            if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                return Self { n, _lock: lock };
            }
        }
        panic!("no free loopback subnet for the test");
    }

    /// Address of host `h` (1..=254).
    pub fn host(&self, h: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.n, 0, h))
    }
}
