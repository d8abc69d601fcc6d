//! A cluster under test: N agents on one loopback subnet sharing a token, agent 1 the seed and
//! the others joining it, each with its own state directory under a temporary root.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use quorate::config::ConfigBuilder;
use quorate::token::JoinToken;
use tempfile::TempDir;

use crate::{wait_for, Agent, Subnet};

/// Generous deadline for a cluster to form on a loaded 2-core machine.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// Files of a client certificate made with `quorate cert client`.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Agents on a loopback subnet. Fields drop in order: agents (stopped) before their
/// directories and the subnet lock.
pub struct Cluster {
    pub agents: Vec<Agent>,
    pub root: TempDir,
    pub subnet: Subnet,
    pub token: String,
    expect: u32,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("agent logs at the failure:\n{}", self.logs(60));
        }
        if std::env::var_os("TEST_KEEP_DIRS").is_some() {
            let path = self.root.path().to_path_buf();
            for a in &mut self.agents {
                a.signal_stop();
            }
            for a in &mut self.agents {
                a.wait_stopped(std::time::Duration::from_secs(30));
            }
            let root = std::mem::replace(&mut self.root, tempfile::tempdir().expect("temp dir"));
            let _ = root.keep();
            eprintln!("kept test directory {}", path.display());
        }
    }
}

impl Cluster {
    /// `n` agents (not started), bootstrap_expect = `n`.
    pub fn new(n: usize) -> Self {
        Self::with(n, |_, b| b)
    }

    /// `n` agents, each config passed through `customize(index, builder)`.
    pub fn with(n: usize, customize: impl Fn(usize, ConfigBuilder) -> ConfigBuilder) -> Self {
        let mut c = Self {
            agents: Vec::new(),
            subnet: Subnet::allocate(),
            root: tempfile::Builder::new()
                .prefix("quorate-test-")
                .tempdir()
                .expect("temp dir"),
            token: JoinToken::generate().expose().to_owned(),
            expect: n as u32,
        };
        for _ in 0..n {
            c.add_agent(&customize);
        }
        c
    }

    /// The standard config of agent `i` (0-based): seed if 0, else joining agent 0.
    pub fn config(&self, i: usize) -> ConfigBuilder {
        let addr = self.subnet.host(i as u8 + 1);
        ConfigBuilder::new(&format!("n{}", i + 1), addr)
            .token(&self.token)
            .seed(i == 0)
            .bootstrap_expect(self.expect)
            .join(if i == 0 {
                vec![]
            } else {
                vec![self.subnet.host(1).to_string()]
            })
            .state_dir(self.root.path().join(format!("n{}", i + 1)).join("state"))
            .listen_localhost(false)
            .etcd_binary(crate::etcd_bin())
    }

    /// Adds one more agent (not started); returns its index.
    pub fn add_agent(
        &mut self,
        customize: impl Fn(usize, ConfigBuilder) -> ConfigBuilder,
    ) -> usize {
        let i = self.agents.len();
        let config = customize(i, self.config(i));
        let name = config.clone().build().node_name.expect("node name");
        let agent = Agent::new(
            self.root.path(),
            &name,
            self.subnet.host(i as u8 + 1),
            &config,
        );
        self.agents.push(agent);
        i
    }

    pub fn start_all(&mut self) {
        for a in &mut self.agents {
            a.start();
        }
    }

    /// Stops all agents at once (as a full shutdown would) and waits for each.
    pub fn stop_all(&mut self) {
        for a in &self.agents {
            a.signal_stop();
        }
        for a in &mut self.agents {
            let name = a.name.clone();
            assert!(
                a.wait_stopped(Duration::from_secs(30)),
                "{name} did not stop in time"
            );
        }
    }

    /// Waits until every running agent reports ready.
    pub fn wait_ready(&self, timeout: Duration) {
        wait_for("all agents ready", timeout, || {
            for a in &self.agents {
                assert!(!a.exited(), "{} exited; log:\n{}", a.name, a.log_tail(30));
                a.ready()?;
            }
            Ok(())
        });
    }

    /// Gets a client certificate named `name` through agent `via`.
    pub fn client_cert(&self, via: usize, name: &str) -> ClientCert {
        self.try_client_cert(via, name, &[])
            .unwrap_or_else(|e| panic!("quorate cert client failed: {e}"))
    }

    /// `quorate cert client NAME` through agent `via` with `extra` arguments (`--role R`);
    /// the command's output when it fails.
    pub fn try_client_cert(
        &self,
        via: usize,
        name: &str,
        extra: &[&str],
    ) -> Result<ClientCert, String> {
        let out = self.root.path().join(format!("client-{name}"));
        let mut args = vec![
            "cert",
            "client",
            name,
            "--force",
            "--out",
            out.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra);
        let o = self.agents[via].cli(&args);
        if !o.status.success() {
            return Err(format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Ok(ClientCert {
            ca: out.join("ca.pem"),
            cert: out.join(format!("{name}.pem")),
            key: out.join(format!("{name}-key.pem")),
        })
    }

    /// Agent `i`'s own identity (its node certificate, the agents' etcd identity): what a
    /// test uses for what only the agents may do, such as reading `/quorate/`, snapshots,
    /// compaction and member status, as `quorate env` gives it to an operator on a member.
    pub fn agent_cert(&self, i: usize) -> ClientCert {
        let pki = self.agents[i].state_dir().join("pki");
        ClientCert {
            ca: pki.join("ca.pem"),
            cert: pki.join("node.pem"),
            key: pki.join("node-key.pem"),
        }
    }

    /// The CA seal secret's fingerprint in etcd, read through agent `via` as the agents'
    /// identity (None when there is none or it cannot be read).
    pub fn seal_id(&self, via: usize) -> Option<String> {
        let o = self.etcdctl(
            via,
            Some(&self.agent_cert(via)),
            &["get", "/quorate/seal/id", "--print-value-only"],
        );
        let id = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        (o.status.success() && !id.is_empty()).then_some(id)
    }

    /// The sealed CA stored in etcd, read through agent `via` as the agents' identity.
    pub fn stored_ca(&self, via: usize) -> Option<quorate::issuer::SealedCa> {
        let o = self.etcdctl(
            via,
            Some(&self.agent_cert(via)),
            &["get", quorate::issuer::CA_KEY, "--print-value-only"],
        );
        let text = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        quorate::issuer::SealedCa::from_json(text.as_bytes()).ok()
    }

    /// etcd's users, read through agent `via` with its own (root) certificate.
    pub fn etcd_users(&self, via: usize) -> Vec<String> {
        let users = self.etcdctl_ok(via, &self.agent_cert(via), &["user", "list"]);
        users.lines().map(|u| u.trim().to_owned()).collect()
    }

    /// Waits until etcd has no user `name` (read through agent `via`).
    pub fn wait_no_etcd_user(&self, via: usize, name: &str) {
        crate::wait_for(&format!("{name}'s etcd user deleted"), FORM_TIMEOUT, || {
            let users = self.etcd_users(via);
            if users.iter().any(|u| u == name) {
                Err(users.join(" "))
            } else {
                Ok(())
            }
        });
    }

    /// Every key a writer had acknowledged under `prefix` is there (read through agent 0).
    pub fn assert_none_lost(&self, cert: &ClientCert, prefix: &str, acked: &[String]) {
        let keys = self.etcdctl_ok(0, cert, &["get", prefix, "--prefix", "--keys-only"]);
        let present: std::collections::HashSet<&str> =
            keys.lines().filter(|l| !l.is_empty()).collect();
        let lost: Vec<&String> = acked
            .iter()
            .filter(|k| !present.contains(k.as_str()))
            .collect();
        assert!(lost.is_empty(), "acknowledged keys lost: {lost:?}");
    }

    /// Waits until the CA in etcd is sealed with the CA seal secret etcd records, which every
    /// voter then holds (`issuer::reseal`); returns that secret. Checks that the join token's
    /// key opens it no longer, even with the fingerprint stripped, and that the secret does.
    pub fn wait_ca_sealed_with_secret(
        &self,
        via: usize,
        timeout: std::time::Duration,
    ) -> quorate::issuer::seal_secret::SealSecret {
        let (sealed, id) = crate::wait_for(
            "the CA in etcd sealed with the seal secret",
            timeout,
            || {
                let sealed = self.stored_ca(via).ok_or("no readable CA in etcd")?;
                let id = self.seal_id(via).ok_or("no seal secret fingerprint")?;
                match &sealed.seal_id {
                    Some(s) if *s == id => Ok((sealed, id)),
                    other => Err(format!(
                        "sealed with {other:?}, the cluster's secret is {id}"
                    )),
                }
            },
        );
        let secret = (0..self.agents.len())
            .filter_map(|i| self.seal_secret(i))
            .find(|s| s.id() == id)
            .expect("no agent holds the secret the CA is sealed with");
        let token = JoinToken::parse(&self.token).unwrap();
        let token_key = token.derive(quorate::token::KeyPurpose::CaSeal);
        let opened = sealed
            .open(&token_key, Some(&secret))
            .expect("the secret opens the CA");
        assert!(
            sealed.open(&token_key, None).is_err(),
            "the join token alone opens the CA"
        );
        let mut stripped = sealed.clone();
        stripped.seal_id = None;
        assert!(
            stripped.open(&token_key, None).is_err(),
            "the join token opens the CA with the fingerprint stripped"
        );
        assert_eq!(opened.cert_pem(), sealed.cert_pem);
        secret
    }

    /// The CA seal secret agent `i` holds, if any.
    pub fn seal_secret(&self, i: usize) -> Option<quorate::issuer::seal_secret::SealSecret> {
        quorate::issuer::seal_secret::load(&self.agents[i].state_dir().join("pki"))
    }

    /// The client URL of agent `i`.
    pub fn client_url(&self, i: usize) -> String {
        quorate::config::https_url(self.agents[i].addr, 2379)
    }

    /// Runs etcdctl against agent `i`'s member, with `cert` (or no client certificate).
    pub fn etcdctl(&self, i: usize, cert: Option<&ClientCert>, args: &[&str]) -> Output {
        let mut cmd = Command::new(crate::etcdctl_bin());
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.client_url(i)))
            .arg("--command-timeout=5s")
            .arg("--dial-timeout=3s");
        match cert {
            Some(c) => {
                cmd.arg(format!("--cacert={}", c.ca.display()))
                    .arg(format!("--cert={}", c.cert.display()))
                    .arg(format!("--key={}", c.key.display()));
            }
            None => {
                // Trust the CA but present no client certificate.
                let ca = self.agents[i].state_dir().join("pki/ca.pem");
                cmd.arg(format!("--cacert={}", ca.display()));
            }
        }
        cmd.args(args).output().expect("run etcdctl")
    }

    /// Like [`Cluster::etcdctl`], panicking with the output on failure; returns stdout.
    pub fn etcdctl_ok(&self, i: usize, cert: &ClientCert, args: &[&str]) -> String {
        let o = self.etcdctl(i, Some(cert), args);
        assert!(
            o.status.success(),
            "etcdctl {args:?} via {} failed: {}{}",
            self.agents[i].name,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Logs of all agents, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        self.agents
            .iter()
            .map(|a| format!("----- {} -----\n{}", a.name, a.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Cluster {
    /// `n` agents, host `i` in network namespace `lab.ns(i)` with address `lab.addr(i)`.
    pub fn in_netns(lab: &crate::NetnsLab, n: usize) -> Self {
        let mut c = Self::with(n, |i, b| {
            let addr = lab.addr(i);
            b.advertise(addr).with(|cfg| {
                cfg.join = if i == 0 {
                    vec![]
                } else {
                    vec![lab.addr(0).to_string()]
                };
            })
        });
        for (i, a) in c.agents.iter_mut().enumerate() {
            a.addr = lab.addr(i);
            a.netns = Some(lab.ns(i));
        }
        c
    }
}

impl Cluster {
    /// Starts every agent and waits until all are ready.
    pub fn start_and_wait(&mut self) {
        self.start_all();
        self.wait_ready(FORM_TIMEOUT);
    }

    /// Writes `n` keys `prefix/i` = `v{i}` through the members in turn.
    pub fn put_keys(&self, cert: &ClientCert, prefix: &str, n: usize) {
        let members = self.agents.len();
        for i in 0..n {
            self.etcdctl_ok(
                i % members,
                cert,
                &["put", &format!("{prefix}/{i}"), &format!("v{i}")],
            );
        }
    }

    /// Checks, through agent `via`, that the keys of [`Cluster::put_keys`] are all there.
    pub fn check_keys(&self, via: usize, cert: &ClientCert, prefix: &str, n: usize) {
        for i in 0..n {
            let v = self.etcdctl_ok(
                via,
                cert,
                &["get", &format!("{prefix}/{i}"), "--print-value-only"],
            );
            assert_eq!(
                v.trim(),
                format!("v{i}"),
                "{prefix}/{i} through {}",
                self.agents[via].name
            );
        }
    }

    /// Waits until agent `i` is ready and sees exactly `members` members, all voters.
    pub fn wait_voters(&self, i: usize, members: usize, timeout: Duration) {
        wait_for(
            &format!(
                "{} ready with {members} voting members",
                self.agents[i].name
            ),
            timeout,
            || {
                self.agents[i].ready()?;
                let s = self.agents[i].status()?;
                if s.etcd.members.len() == members && s.etcd.members.iter().all(|m| !m.is_learner) {
                    Ok(())
                } else {
                    Err(format!("members {:?}", s.etcd.members))
                }
            },
        );
    }
}

impl Cluster {
    /// Retries an etcdctl command through agent `i` until it succeeds (for the moments right
    /// after a member was lost, while the others elect a new leader); returns stdout.
    pub fn etcdctl_eventually(&self, i: usize, cert: &ClientCert, args: &[&str]) -> String {
        wait_for(
            &format!("etcdctl {args:?} via {}", self.agents[i].name),
            FORM_TIMEOUT,
            || {
                let o = self.etcdctl(i, Some(cert), args);
                if o.status.success() {
                    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
                } else {
                    Err(String::from_utf8_lossy(&o.stderr).into_owned())
                }
            },
        )
    }
}
