//! What validation needs to know about the host (its addresses, its hostname, the etcd binary),
//! behind a trait so that the validation rules are tested without touching the machine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Facts about the host that configuration checks depend on.
pub trait HostProbe {
    /// The host name, used as the default node name.
    fn hostname(&self) -> Option<String>;
    /// The address to advertise when none is configured.
    fn detect_address(&self) -> Option<IpAddr>;
    /// Whether this host can bind `ip` (it is one of its addresses).
    fn is_local_address(&self, ip: IpAddr) -> bool;
    /// Resolves a binary name on PATH, or checks that a path is an executable file.
    fn find_executable(&self, binary: &Path) -> Option<PathBuf>;
    /// Output of `<binary> --version`.
    fn etcd_version_output(&self, binary: &Path) -> Result<String, String>;
    /// Reads a file (token file, CA files).
    fn read_file(&self, path: &Path) -> std::io::Result<String>;
    /// The permission bits of a file, when it can be looked at (None: unknown).
    fn file_mode(&self, _path: &Path) -> Option<u32> {
        None
    }
}

/// The real host.
pub struct SystemHost;

impl HostProbe for SystemHost {
    fn hostname(&self) -> Option<String> {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .map(|h| h.split('.').next().unwrap_or_default().to_owned())
            .filter(|h| !h.is_empty())
    }

    fn detect_address(&self) -> Option<IpAddr> {
        route_source_address().or_else(first_interface_address)
    }

    fn is_local_address(&self, ip: IpAddr) -> bool {
        // Binding port 0 succeeds exactly when the address belongs to this host (including all
        // of 127.0.0.0/8, which interface listings do not show).
        UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
    }

    fn find_executable(&self, binary: &Path) -> Option<PathBuf> {
        if binary.components().count() > 1 {
            return is_executable(binary).then(|| binary.to_path_buf());
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(binary))
            .find(|candidate| is_executable(candidate))
    }

    fn etcd_version_output(&self, binary: &Path) -> Result<String, String> {
        let out = Command::new(binary)
            .arg("--version")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "`{} --version` exited with {}",
                binary.display(),
                out.status
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn file_mode(&self, path: &Path) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The source address the kernel would use for the default route. A UDP connect sends no
/// packet; it only asks the routing table.
fn route_source_address() -> Option<IpAddr> {
    let socket = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)).ok()?;
    socket
        .connect(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 9))
        .ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// The first usable address of an interface that is up: IPv4 first, then global IPv6.
fn first_interface_address() -> Option<IpAddr> {
    use nix::net::if_::InterfaceFlags;
    let addrs: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|ifa| ifa.flags.contains(InterfaceFlags::IFF_UP))
        .filter(|ifa| !ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK))
        .filter_map(|ifa| {
            let addr = ifa.address?;
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    addrs
        .iter()
        .find(|ip| matches!(ip, IpAddr::V4(v4) if !v4.is_link_local()))
        .or_else(|| {
            addrs
                .iter()
                .find(|ip| matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) != 0xfe80))
        })
        .copied()
}
