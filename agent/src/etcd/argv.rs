//! etcd's command line, rendered purely from the launch description so that it is golden-tested
//! and identical on every host: the flags of the production guides (mutual TLS on client and
//! peer traffic), `--initial-cluster` from the plan, and `--initial-cluster-state` decided by
//! the caller from what is on disk.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

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
    pub extra_args: Vec<String>,
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
    args.extend(l.extra_args.iter().cloned());
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
            },
            extra_args: vec![],
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
--log-outputs=stderr";
        assert_eq!(render_args(&launch(ClusterState::New)).join("\n"), expected);
    }

    #[test]
    fn existing_and_extra_args() {
        let mut l = launch(ClusterState::Existing);
        l.extra_args = vec!["--quota-backend-bytes=8589934592".into()];
        let args = render_args(&l);
        assert!(args.contains(&"--initial-cluster-state=existing".to_string()));
        assert_eq!(args.last().unwrap(), "--quota-backend-bytes=8589934592");
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
