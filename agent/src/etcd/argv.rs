//! etcd's command line, rendered purely from the launch description so that it is golden-tested
//! and identical on every host: the flags of the production guides (mutual TLS on client and
//! peer traffic), `--initial-cluster` from the plan, `--initial-cluster-state` decided by the
//! caller from what is on disk, and the day-2 flags (compaction, space quota, plain-HTTP
//! metrics) without which etcd keeps every revision until it hits its quota.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::version::{corruption_check_flags, Version};
use crate::config::https_url;

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster (only for a plan member whose data dir holds no member yet).
    New,
    /// Join or resume an existing cluster.
    Existing,
}

impl fmt::Display for ClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClusterState::New => "new",
            ClusterState::Existing => "existing",
        })
    }
}

/// Certificate files etcd uses for both client and peer TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// The revocation list, when this host has one: etcd then refuses revoked certificates
    /// on client and peer connections (it reads the file at every new connection).
    pub crl: Option<PathBuf>,
}

/// Everything needed to start the local etcd member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdLaunch {
    pub name: String,
    pub data_dir: PathBuf,
    pub advertise: IpAddr,
    /// Also listen for clients on this loopback address.
    pub localhost: Option<IpAddr>,
    pub client_port: u16,
    pub peer_port: u16,
    pub initial_cluster: String,
    pub state: ClusterState,
    pub cluster_token: String,
    pub tls: TlsFiles,
    /// Everything after the cluster and TLS flags.
    pub tuning: EtcdTuning,
}

/// The flags rendered after the cluster and TLS ones: quorate's day-2 settings, then the
/// operator's `etcd.extra_args` verbatim. They travel as one value from the settings to the
/// launch. `Default` renders nothing, i.e. etcd's own defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTuning {
    /// Periodic compaction keeping this much history (`etcd.compaction_retention`); `None`
    /// leaves compaction off.
    pub compaction_retention: Option<Duration>,
    /// `--quota-backend-bytes` (`etcd.quota`); `None` leaves etcd's default.
    pub quota_backend_bytes: Option<u64>,
    /// Plain-HTTP metrics listener (`etcd.metrics_listen`); `None`: none.
    pub metrics_listen: Option<SocketAddr>,
    /// Turn on etcd's cheap corruption detection (`etcd.corruption_check`), with the flags of
    /// [`Self::version`] (see [`super::version::corruption_check_flags`]).
    pub corruption_check: bool,
    /// The version of the etcd binary the flags are rendered for. The supervisor sets it from
    /// `etcd --version` before every start, so a binary replaced under a running agent gets
    /// its own flags.
    pub version: Version,
    /// The operator's `etcd.extra_args`, appended last.
    pub operator: Vec<String>,
}

impl EtcdTuning {
    fn render(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(retention) = self.compaction_retention.filter(|d| !d.is_zero()) {
            args.push("--auto-compaction-mode=periodic".to_owned());
            args.push(format!(
                "--auto-compaction-retention={}",
                go_duration(retention)
            ));
        }
        if let Some(bytes) = self.quota_backend_bytes {
            args.push(format!("--quota-backend-bytes={bytes}"));
        }
        if let Some(addr) = self.metrics_listen {
            args.push(format!("--listen-metrics-urls=http://{addr}"));
        }
        if self.corruption_check {
            args.extend(corruption_check_flags(self.version));
        }
        args.extend(self.operator.iter().cloned());
        args
    }
}

/// A duration as Go's `time.ParseDuration` reads it ("1h", "30m", "2h30m", "5s", "1m500ms"):
/// etcd 3.4 to 3.6 parse `--auto-compaction-retention` that way unless it is a bare integer,
/// which they read as hours.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let parts = [
        (secs / 3600, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (u64::from(d.subsec_millis()), "ms"),
        (u64::from(d.subsec_micros() % 1000), "us"),
        (u64::from(d.subsec_nanos() % 1000), "ns"),
    ];
    let text: String = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".to_owned()
    } else {
        text
    }
}

impl EtcdLaunch {
    /// The URL this agent uses to reach its own member.
    pub fn local_client_url(&self) -> String {
        https_url(self.localhost.unwrap_or(self.advertise), self.client_port)
    }
}

/// The argument vector (without the program name).
pub fn render_args(l: &EtcdLaunch) -> Vec<String> {
    let peer = https_url(l.advertise, l.peer_port);
    let client = https_url(l.advertise, l.client_port);
    let mut listen_client = vec![client.clone()];
    if let Some(lo) = l.localhost.filter(|lo| *lo != l.advertise) {
        listen_client.push(https_url(lo, l.client_port));
    }
    let path = |p: &PathBuf| p.display().to_string();
    let mut args = vec![
        format!("--name={}", l.name),
        format!("--data-dir={}", path(&l.data_dir)),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--listen-client-urls={}", listen_client.join(",")),
        format!("--advertise-client-urls={client}"),
        format!("--initial-cluster={}", l.initial_cluster),
        format!("--initial-cluster-state={}", l.state),
        format!("--initial-cluster-token={}", l.cluster_token),
        format!("--cert-file={}", path(&l.tls.cert)),
        format!("--key-file={}", path(&l.tls.key)),
        format!("--trusted-ca-file={}", path(&l.tls.ca)),
        "--client-cert-auth=true".to_owned(),
        format!("--peer-cert-file={}", path(&l.tls.cert)),
        format!("--peer-key-file={}", path(&l.tls.key)),
        format!("--peer-trusted-ca-file={}", path(&l.tls.ca)),
        "--peer-client-cert-auth=true".to_owned(),
        "--logger=zap".to_owned(),
        "--log-outputs=stderr".to_owned(),
    ];
    if let Some(crl) = &l.tls.crl {
        args.push(format!("--client-crl-file={}", path(crl)));
        args.push(format!("--peer-crl-file={}", path(crl)));
    }
    args.extend(l.tuning.render());
    args
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn launch(state: ClusterState) -> EtcdLaunch {
        EtcdLaunch {
            name: "a".into(),
            data_dir: "/var/lib/quorate/etcd".into(),
            advertise: "10.0.0.1".parse().unwrap(),
            localhost: Some("127.0.0.1".parse().unwrap()),
            client_port: 2379,
            peer_port: 2380,
            initial_cluster:
                "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380".into(),
            state,
            cluster_token: "quorate-0011223344556677".into(),
            tls: TlsFiles {
                cert: "/var/lib/quorate/pki/node.pem".into(),
                key: "/var/lib/quorate/pki/node-key.pem".into(),
                ca: "/var/lib/quorate/pki/ca.pem".into(),
                crl: None,
            },
            tuning: EtcdTuning {
                compaction_retention: Some(Duration::from_secs(3600)),
                quota_backend_bytes: Some(2 << 30),
                metrics_listen: Some("127.0.0.1:2381".parse().unwrap()),
                corruption_check: true,
                version: (3, 4, 23),
                operator: vec![],
            },
        }
    }

    #[test]
    fn golden_new_member() {
        let expected = "\
--name=a
--data-dir=/var/lib/quorate/etcd
--listen-peer-urls=https://10.0.0.1:2380
--initial-advertise-peer-urls=https://10.0.0.1:2380
--listen-client-urls=https://10.0.0.1:2379,https://127.0.0.1:2379
--advertise-client-urls=https://10.0.0.1:2379
--initial-cluster=a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380
--initial-cluster-state=new
--initial-cluster-token=quorate-0011223344556677
--cert-file=/var/lib/quorate/pki/node.pem
--key-file=/var/lib/quorate/pki/node-key.pem
--trusted-ca-file=/var/lib/quorate/pki/ca.pem
--client-cert-auth=true
--peer-cert-file=/var/lib/quorate/pki/node.pem
--peer-key-file=/var/lib/quorate/pki/node-key.pem
--peer-trusted-ca-file=/var/lib/quorate/pki/ca.pem
--peer-client-cert-auth=true
--logger=zap
--log-outputs=stderr
--auto-compaction-mode=periodic
--auto-compaction-retention=1h
--quota-backend-bytes=2147483648
--listen-metrics-urls=http://127.0.0.1:2381";
        assert_eq!(render_args(&launch(ClusterState::New)).join("\n"), expected);
    }

    #[test]
    fn existing_and_extra_args() {
        let mut l = launch(ClusterState::Existing);
        l.tuning.operator = vec!["--snapshot-count=50000".into()];
        let args = render_args(&l);
        assert!(args.contains(&"--initial-cluster-state=existing".to_string()));
        assert_eq!(args.last().unwrap(), "--snapshot-count=50000");
    }

    /// Compaction off, etcd's quota and no metrics listener: none of the day-2 flags.
    #[test]
    fn golden_day2_flags_off() {
        let mut l = launch(ClusterState::New);
        l.tuning = EtcdTuning {
            compaction_retention: None,
            quota_backend_bytes: None,
            metrics_listen: None,
            corruption_check: false,
            version: (3, 4, 23),
            operator: vec!["--snapshot-count=50000".into()],
        };
        let args = render_args(&l);
        let tail = &args[args.len() - 3..];
        assert_eq!(
            tail.join("\n"),
            "--logger=zap\n--log-outputs=stderr\n--snapshot-count=50000"
        );
        l.tuning.compaction_retention = Some(Duration::ZERO);
        assert!(!render_args(&l).iter().any(|a| a.contains("compaction")));
    }

    #[test]
    fn golden_day2_flags_custom() {
        let mut l = launch(ClusterState::New);
        l.tuning = EtcdTuning {
            compaction_retention: Some(Duration::from_secs(2 * 3600 + 30 * 60)),
            quota_backend_bytes: Some(64 << 20),
            metrics_listen: Some("[::1]:9381".parse().unwrap()),
            corruption_check: false,
            version: (3, 4, 23),
            operator: vec![],
        };
        let args = render_args(&l);
        assert_eq!(
            args[args.len() - 4..].join("\n"),
            "\
--auto-compaction-mode=periodic
--auto-compaction-retention=2h30m
--quota-backend-bytes=67108864
--listen-metrics-urls=http://[::1]:9381"
        );
    }

    #[test]
    fn go_durations() {
        let d = |s: u64| go_duration(Duration::from_secs(s));
        assert_eq!(d(3600), "1h");
        assert_eq!(d(30 * 60), "30m");
        assert_eq!(d(5), "5s");
        assert_eq!(d(2 * 3600 + 30 * 60), "2h30m");
        assert_eq!(d(3600 + 5), "1h5s");
        assert_eq!(d(49 * 3600), "49h");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(go_duration(Duration::from_nanos(1_001)), "1us1ns");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn without_localhost_or_when_advertising_loopback() {
        let mut l = launch(ClusterState::New);
        l.localhost = None;
        assert!(render_args(&l).contains(&"--listen-client-urls=https://10.0.0.1:2379".to_string()));
        assert_eq!(l.local_client_url(), "https://10.0.0.1:2379");
        l.advertise = "127.0.0.1".parse().unwrap();
        l.localhost = Some("127.0.0.1".parse().unwrap());
        assert!(
            render_args(&l).contains(&"--listen-client-urls=https://127.0.0.1:2379".to_string())
        );
    }

    #[test]
    fn ipv6_is_bracketed() {
        let mut l = launch(ClusterState::New);
        l.advertise = "fd00::1".parse().unwrap();
        l.localhost = Some("::1".parse().unwrap());
        let args = render_args(&l);
        assert!(args.contains(&"--listen-peer-urls=https://[fd00::1]:2380".to_string()));
        assert!(args.contains(
            &"--listen-client-urls=https://[fd00::1]:2379,https://[::1]:2379".to_string()
        ));
        assert_eq!(l.local_client_url(), "https://[::1]:2379");
    }
}
