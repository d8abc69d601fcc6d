//! Restore onto brand-new hosts: the seed, configured with `restore_from`, forms the cluster
//! from a snapshot instead of empty. It restores the snapshot as a one-member cluster (its own
//! name and peer URL, a new cluster token), starts that etcd once on loopback on free ports to
//! recover the CA sealed in `/quorate/ca` (with the join token's key, which the operator keeps,
//! or with the CA seal secret: this host's copy, or the manifest's, sealed with the token),
//! and removes the snapshot's issuer lock. Then the seed decides a one-member
//! plan with that token and the other hosts join as learners through the ordinary growth path.
//! The one-off etcd serves TLS with a throwaway CA of its own and is read with a client
//! certificate named `root`: etcd maps it to its root user when the snapshot's cluster had
//! authentication on, and ignores it otherwise. This host's name becomes an etcd user with the
//! root role there (the snapshot knows the old hosts' names only). A CA that cannot be unsealed stops here with the
//! reason, unless `restore_new_ca` is set: then a new CA replaces it in etcd (every client
//! certificate must be reissued). This helper etcd is not the supervised member: it runs for
//! seconds, on other ports, before the controller starts etcd for real.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use super::inspect::inspect_snapshot;
use super::local_etcd_version;
use super::run::restore_data;
use super::source::Prepared;
use super::RestoreError;
use crate::config::Settings;
use crate::etcd::client::{connect, ClientTls};
use crate::etcd::restore::RestoreArgs;
use crate::issuer::seal_secret::{self, SealSecret, SealedCopy};
use crate::issuer::{SealedCa, UnsealError, CA_KEY, ISSUER_KEY};
use crate::pki::{cert_spec, CertProfile, CertificateAuthority, NodeKey};
use crate::token::KeyPurpose;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The CA recovered from the snapshot (or created, with `restore_new_ca`).
pub struct SeedRestore {
    pub ca: CertificateAuthority,
    /// A new CA replaced the snapshot's.
    pub new_ca: bool,
}

/// Restores `snapshot` into the (absent) etcd data dir of this seed with `token`, and recovers
/// the CA from it.
pub async fn restore_seed(
    s: &Settings,
    snapshot: &Prepared,
    token: &str,
) -> Result<SeedRestore, RestoreError> {
    let version = local_etcd_version(&s.etcd.binary).await?;
    let (checked, manifest) = (snapshot.path.clone(), snapshot.manifest.clone());
    tokio::task::spawn_blocking(move || {
        inspect_snapshot(&checked, manifest.as_ref(), version, None)
    })
    .await
    .map_err(|e| RestoreError::Refused(e.to_string()))??;
    let data_dir = s.etcd_data_dir();
    let peer_url = s.peer_url();
    let initial = format!("{}={peer_url}", s.name);
    restore_data(
        &s.etcd.binary,
        &s.state_dir,
        &RestoreArgs {
            snapshot: &snapshot.path,
            name: &s.name,
            peer_url: &peer_url,
            initial_cluster: &initial,
            cluster_token: token,
            data_dir: &data_dir,
        },
    )
    .await?;
    let copy = snapshot
        .manifest
        .as_ref()
        .and_then(|m| m.ca_seal_secret.clone());
    recover_ca(s, &data_dir, copy).await
}

fn free_port() -> Result<u16, RestoreError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| RestoreError::Command(format!("no free loopback port: {e}")))
}

/// The one-off etcd's TLS, in `dir` (0700): a throwaway CA, a server certificate for
/// 127.0.0.1 and the client identity `root` to read it with.
fn one_off_tls(dir: &Path) -> Result<ClientTls, RestoreError> {
    let sign = |e: crate::pki::PkiError| RestoreError::Sign(e.to_string());
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let ca = CertificateAuthority::generate("quorate restore helper", now, hour).map_err(sign)?;
    let issue = |name: &str, profile: CertProfile| -> Result<(String, String), RestoreError> {
        let key = NodeKey::generate().map_err(sign)?;
        let csr = key.csr_pem(name).map_err(sign)?;
        let cert = ca
            .sign_csr(&csr, &cert_spec(&profile, now, hour))
            .map_err(sign)?;
        Ok((cert, key.to_pem()))
    };
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let server = CertProfile::Node {
        name: "localhost".into(),
        addrs: vec![loopback],
    };
    let (server_cert, server_key) = issue("localhost", server)?;
    let (cert, key) = issue(
        "root",
        CertProfile::Client {
            name: "root".into(),
        },
    )?;
    let write = |name: &str, data: &str| {
        crate::fsutil::atomic_write(&dir.join(name), data.as_bytes(), 0o600)
            .map_err(|e| RestoreError::Command(e.to_string()))
    };
    crate::fsutil::ensure_dir(dir, 0o700).map_err(|e| RestoreError::Command(e.to_string()))?;
    write("ca.pem", ca.cert_pem())?;
    write("server.pem", &server_cert)?;
    write("server-key.pem", &server_key)?;
    Ok(ClientTls {
        ca: ca.cert_pem().to_owned(),
        cert,
        key,
    })
}

/// Starts etcd once on the restored data (loopback, TLS), takes the CA out of it; `copy` is
/// the manifest's copy of the CA seal secret.
async fn recover_ca(
    s: &Settings,
    data_dir: &Path,
    copy: Option<SealedCopy>,
) -> Result<SeedRestore, RestoreError> {
    let (client_port, peer_port) = (free_port()?, free_port()?);
    let url = format!("https://127.0.0.1:{client_port}");
    let tls_dir = s.state_dir.join("restore-tls");
    let tls = one_off_tls(&tls_dir)?;
    let mut child = tokio::process::Command::new(&s.etcd.binary)
        .arg(format!("--name={}", s.name))
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
        .arg(format!(
            "--trusted-ca-file={}",
            tls_dir.join("ca.pem").display()
        ))
        .arg(format!(
            "--cert-file={}",
            tls_dir.join("server.pem").display()
        ))
        .arg(format!(
            "--key-file={}",
            tls_dir.join("server-key.pem").display()
        ))
        .arg("--client-cert-auth=true")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RestoreError::Command(format!("{}: {e}", s.etcd.binary.display())))?;
    let result = read_and_fix_ca(s, &url, &tls, copy).await;
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    let _ = std::fs::remove_dir_all(&tls_dir);
    result
}

async fn read_and_fix_ca(
    s: &Settings,
    url: &str,
    tls: &ClientTls,
    copy: Option<SealedCopy>,
) -> Result<SeedRestore, RestoreError> {
    let fail = |e: etcd_client::Error| {
        RestoreError::Command(format!("reading the restored snapshot with etcd: {e}"))
    };
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let mut client = loop {
        let attempt = async {
            let mut c = connect(&[url.to_owned()], tls, Duration::from_secs(3)).await?;
            c.get(CA_KEY, None).await?;
            Ok::<_, etcd_client::Error>(c)
        };
        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(c)) => break c,
            Ok(Err(e)) if tokio::time::Instant::now() > deadline => return Err(fail(e)),
            _ if tokio::time::Instant::now() > deadline => {
                return Err(RestoreError::Command(
                    "etcd did not start on the restored snapshot".into(),
                ))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    // The snapshot's etcd users are the old cluster's: this host's name may not be one, and
    // with authentication on it would be locked out of its own cluster.
    crate::etcd::auth::ensure_roles(&mut client)
        .await
        .map_err(fail)?;
    crate::etcd::auth::ensure_user(&mut client, &s.name, crate::etcd::auth::ROOT)
        .await
        .map_err(fail)?;
    let key = s.token.derive(KeyPurpose::CaSeal);
    let pki_dir = s.pki_dir();
    // A CA sealed with the CA seal secret opens with this host's copy (the same hosts) or the
    // manifest's (sealed with the token; `quorate snapshot save` and scheduled snapshots).
    let secrets: Vec<SealSecret> = seal_secret::load(&pki_dir)
        .into_iter()
        .chain(copy.and_then(|c| s.token.ring().accepted().find_map(|t| c.open(t))))
        .collect();
    let stored = client.get(CA_KEY, None).await.map_err(fail)?;
    let unsealed = match stored.kvs().first() {
        None => Err(format!("the snapshot holds no sealed CA ({CA_KEY})")),
        Some(kv) => SealedCa::from_json(kv.value())
            .and_then(|sealed| {
                let secret = secrets.iter().find(|x| sealed.sealed_with(&x.id()));
                let ca = sealed.open(&key, secret)?;
                Ok((ca, sealed.seal_id.is_some()))
            })
            .map_err(|e| match e {
                UnsealError::SecretNotHeld { id } => format!(
                    "the CA sealed in the snapshot cannot be unsealed: it is sealed with the CA \
                     seal secret {id}, and neither this host ({}) nor the snapshot's manifest \
                     holds it (a snapshot taken with etcdctl has no manifest). Copy pki/{} from \
                     one of the old cluster's members to {} (mode 0600), or restore a snapshot \
                     quorate took (its .json manifest beside it)",
                    pki_dir.join(seal_secret::FILE).display(),
                    seal_secret::FILE,
                    pki_dir.join(seal_secret::FILE).display(),
                ),
                e => format!(
                    "the CA sealed in the snapshot cannot be unsealed: {e} (the seal key derives \
                     from the join token: use the cluster's original token)"
                ),
            }),
    };
    // Opened with the secret: written back sealed with the token, as a new cluster's CA is;
    // the restored cluster's issuer seals it with its own secret once every voter holds it.
    let unsealed = match unsealed {
        Ok((ca, true)) => {
            client
                .put(CA_KEY, SealedCa::seal(&ca, &key).to_json(), None)
                .await
                .map_err(fail)?;
            Ok(ca)
        }
        Ok((ca, false)) => Ok(ca),
        Err(why) => Err(why),
    };
    let outcome = match unsealed {
        Ok(ca) => SeedRestore { ca, new_ca: false },
        Err(why) if !s.restore_new_ca => {
            return Err(RestoreError::Refused(format!(
                "{why}. Fix: start the seed with the token the snapshot's cluster used, or set \
                 restore_new_ca = true to create a new CA (every client certificate must then \
                 be reissued)"
            )))
        }
        Err(why) => {
            tracing::warn!("{why}; creating a new CA (restore_new_ca)");
            let label: [u8; 4] = rand::random();
            let ca = CertificateAuthority::generate(
                &format!("quorate cluster CA {}", hex::encode(label)),
                SystemTime::now(),
                s.pki.ca_validity,
            )
            .map_err(|e| RestoreError::Sign(e.to_string()))?;
            client
                .put(CA_KEY, SealedCa::seal(&ca, &key).to_json(), None)
                .await
                .map_err(fail)?;
            SeedRestore { ca, new_ca: true }
        }
    };
    // The snapshot's issuer lock belongs to an agent of the old cluster.
    client.delete(ISSUER_KEY, None).await.map_err(fail)?;
    // The snapshot's CA seal secret: when this host does not hold it (new hosts), nobody in the
    // restored cluster does, so its fingerprint goes and the first issuer makes a new one.
    let id = seal_secret::cluster_id(&mut client).await.map_err(fail)?;
    let held = seal_secret::load(&pki_dir);
    if id.is_some() && held.map(|h| h.id()) != id {
        client
            .delete(seal_secret::ID_KEY, None)
            .await
            .map_err(fail)?;
        // The old hosts' records of holding it go too.
        client
            .delete(
                crate::issuer::reseal::HOLDERS_PREFIX,
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await
            .map_err(fail)?;
        tracing::info!("the snapshot's CA seal secret is not held here: a new one will be made");
    }
    Ok(outcome)
}
