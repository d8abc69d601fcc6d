//! The manual procedure, as a script would do it at its fastest: certificates made in advance
//! (as with cfssl), etcd started with static flags, membership changed with the etcd API
//! (`member add --learner`, retrying `member promote`, `member remove`). Used as the baseline
//! next to quorate.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use etcd_client::{Client, MemberAddOptions};
use quorate::etcd::client::{connect, ClientTls};
use quorate::etcd::{probe, render_args, ClusterState, EtcdLaunch, TlsFiles};
use quorate::pki::{cert_spec, CertProfile, CertificateAuthority, NodeKey};
use quorate_tests::Subnet;

pub const TIMEOUT: Duration = Duration::from_secs(60);
const POLL_TIMEOUT: Duration = Duration::from_millis(300);

/// One etcd member of the manual cluster.
pub struct Member {
    pub name: String,
    pub launch: EtcdLaunch,
    pub tls: ClientTls,
    child: Option<Child>,
}

/// Etcd members with pre-made certificates on a loopback subnet.
pub struct ManualCluster {
    pub members: Vec<Member>,
    _dir: tempfile::TempDir,
    _net: Subnet,
}

impl ManualCluster {
    /// Certificates and launches for `n` members (none started); the first `initial` form
    /// the initial cluster.
    pub fn prepare(n: usize, initial: usize) -> Self {
        let net = Subnet::allocate();
        let dir = tempfile::tempdir().expect("temp dir");
        let now = SystemTime::now();
        let ca = CertificateAuthority::generate("bench CA", now, Duration::from_secs(86400))
            .expect("CA");
        let names: Vec<String> = (1..=n).map(|i| format!("m{i}")).collect();
        let initial_cluster: Vec<String> = (0..initial)
            .map(|i| format!("{}=https://{}:2380", names[i], net.host(i as u8 + 1)))
            .collect();
        let members = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let addr = net.host(i as u8 + 1);
                let d: PathBuf = dir.path().join(name);
                std::fs::create_dir_all(&d).expect("dir");
                let key = NodeKey::generate().expect("key");
                let spec = cert_spec(
                    &CertProfile::Node {
                        name: name.clone(),
                        addrs: vec![addr],
                    },
                    now,
                    Duration::from_secs(86400),
                );
                let cert = ca
                    .sign_csr(&key.csr_pem(name).expect("csr"), &spec)
                    .expect("sign");
                let tls = ClientTls {
                    ca: ca.cert_pem().to_owned(),
                    cert,
                    key: key.to_pem(),
                };
                for (file, text) in [
                    ("node.pem", &tls.cert),
                    ("node-key.pem", &tls.key),
                    ("ca.pem", &tls.ca),
                ] {
                    std::fs::write(d.join(file), text).expect("write");
                }
                Member {
                    name: name.clone(),
                    tls,
                    child: None,
                    launch: EtcdLaunch {
                        name: name.clone(),
                        data_dir: d.join("data"),
                        advertise: addr,
                        localhost: None,
                        client_port: 2379,
                        peer_port: 2380,
                        initial_cluster: initial_cluster.join(","),
                        state: ClusterState::New,
                        cluster_token: "bench".into(),
                        tls: TlsFiles {
                            cert: d.join("node.pem"),
                            key: d.join("node-key.pem"),
                            ca: d.join("ca.pem"),
                            crl: None,
                        },
                        tuning: Default::default(),
                    },
                }
            })
            .collect();
        Self {
            members,
            _dir: dir,
            _net: net,
        }
    }

    pub fn start(&mut self, i: usize) {
        self.start_with(i, std::path::Path::new("etcd"));
    }

    /// Starts member `i` with the etcd binary `etcd`.
    pub fn start_with(&mut self, i: usize, etcd: &std::path::Path) {
        let m = &mut self.members[i];
        m.child = Some(
            Command::new(etcd)
                .args(render_args(&m.launch))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start etcd"),
        );
    }

    /// SIGTERM (as `systemctl stop` does), then waits until it has exited.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    /// SIGKILL, and with `wipe`, the data directory is lost too.
    pub fn kill(&mut self, i: usize, wipe: bool) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if wipe {
            let _ = std::fs::remove_dir_all(&self.members[i].launch.data_dir);
        }
    }

    pub fn url(&self, i: usize) -> String {
        self.members[i].launch.local_client_url()
    }

    /// A client on member `i`.
    pub async fn client(&self, i: usize) -> Client {
        connect(&[self.url(i)], &self.members[i].tls, Duration::from_secs(3))
            .await
            .expect("connect")
    }

    /// Waits until each of `members` answers a status request and a quorum read.
    pub async fn wait_healthy(&self, members: &[usize], since: Instant) {
        let waits = members.iter().map(|&i| {
            let url = self.url(i);
            let tls = self.members[i].tls.clone();
            tokio::spawn(async move {
                loop {
                    assert!(
                        since.elapsed() < TIMEOUT,
                        "manual member not healthy in {TIMEOUT:?}"
                    );
                    let attempt = async {
                        let mut c = connect(std::slice::from_ref(&url), &tls, POLL_TIMEOUT)
                            .await
                            .ok()?;
                        Some(probe::probe(&mut c).await.healthy())
                    };
                    if let Ok(Some(true)) = tokio::time::timeout(POLL_TIMEOUT, attempt).await {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        });
        for w in waits.collect::<Vec<_>>() {
            w.await.expect("health poll");
        }
    }

    /// `member add --learner` for member `i` through member 0, then start it with the
    /// `--initial-cluster` etcd answered, then `member promote` until etcd accepts.
    pub async fn add_learner_and_promote(&mut self, i: usize, since: Instant) {
        let mut c = self.client(0).await;
        let peer = format!("https://{}:2380", self.members[i].launch.advertise);
        let resp = c
            .member_add(
                [peer.as_str()],
                Some(MemberAddOptions::new().with_is_learner()),
            )
            .await
            .expect("member add");
        let id = resp.member().expect("new member").id();
        let initial: Vec<String> = resp
            .member_list()
            .iter()
            .flat_map(|m| {
                let name = if m.id() == id {
                    self.members[i].name.clone()
                } else {
                    m.name().to_owned()
                };
                m.peer_urls()
                    .iter()
                    .map(move |u| format!("{name}={u}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        self.members[i].launch.initial_cluster = initial.join(",");
        self.members[i].launch.state = ClusterState::Existing;
        self.start(i);
        loop {
            assert!(
                since.elapsed() < TIMEOUT,
                "promotion did not succeed in {TIMEOUT:?}"
            );
            match c.member_promote(id).await {
                Ok(_) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// `member remove` of member `i`'s entry, through member 0, retried while the cluster
    /// has no leader (the removed member may have been the leader).
    pub async fn remove(&self, i: usize, since: Instant) {
        let mut c = self.client(0).await;
        let list = c.member_list().await.expect("member list");
        let id = list
            .members()
            .iter()
            .find(|m| m.name() == self.members[i].name)
            .expect("member to remove")
            .id();
        while let Err(e) = c.member_remove(id).await {
            assert!(since.elapsed() < TIMEOUT, "member remove: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ManualCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let _ = c.wait();
            }
        }
    }
}
