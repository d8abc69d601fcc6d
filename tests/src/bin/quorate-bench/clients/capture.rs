//! The packet capture of the client-mode benchmark: UDP datagrams from or to the gossip port
//! within the cluster's subnet, counted by (source, destination), then split into
//! member-to-member gossip and the client channel.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use quorate_tests::Cluster;

use super::{Captured, Net, GOSSIP_PORT, MEMBERS};

/// (datagrams, payload bytes) by (source, destination), of UDP datagrams from or to the
/// gossip port within the cluster's subnet.
type Flows = HashMap<(Ipv4Addr, Ipv4Addr), (u64, u64)>;

pub(super) fn split(c: &Cluster, clients: usize, flows: &Flows, dropped: u64) -> Captured {
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
pub(super) struct Capture {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<(Flows, u64), String>>,
}

impl Capture {
    pub(super) fn start(c: &Cluster, on: Net) -> Option<Self> {
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

    pub(super) fn stop(self) -> Result<(Flows, u64), String> {
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
