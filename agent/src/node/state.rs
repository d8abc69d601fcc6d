//! The one owner of this node's persistent state: the trusted CA (and its key when this host
//! holds it), the bootstrap plan, the node certificate and key, and the markers `formed` and
//! `left` in the state directory. Only the controller holds a `NodeState`; every change goes
//! through its small typed API, writes atomically, and republishes the TLS material
//! ([`TlsMaterial`]) that the other tasks read from a `watch` channel instead of the disk.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use super::certs::{self, load_node_cert, NodeCert};
use super::NodeError;
use crate::config::Settings;
use crate::etcd::TlsFiles;
use crate::fsutil;
use crate::pki::{CaHash, CertificateAuthority, PkiStore, TlsMaterial};
use crate::plan::{Plan, PlanStore};
use crate::restore::{RestoreRecord, RestoreStore};

/// Marker: this host's member was healthy in a cluster once.
pub const FORMED_MARKER: &str = "formed";
/// The cluster token of a seed restored from `restore_from` (written once the data is ready).
pub const RESTORED_TOKEN: &str = "restore-from.token";
/// Marker: this host left the cluster with `quorate leave`.
pub const LEFT_MARKER: &str = "left";

/// The node's persistent state and the channel that publishes its TLS material.
pub struct NodeState {
    settings: Arc<Settings>,
    pki: PkiStore,
    plans: PlanStore,
    plan: Option<Plan>,
    restores: RestoreStore,
    restore: RestoreRecord,
    cert: Option<NodeCert>,
    formed: bool,
    left: bool,
    material: watch::Sender<Arc<TlsMaterial>>,
    /// Counts the material published, so that users can tell a change.
    generation: u64,
}

impl NodeState {
    /// Loads the state from disk (installing an operator-supplied CA on the seed, clearing a
    /// `left` marker: a new start joins afresh) and publishes the TLS material. Errors here
    /// stop the agent: they mean a damaged or foreign state directory that needs the operator.
    pub fn load(
        settings: Arc<Settings>,
        material: watch::Sender<Arc<TlsMaterial>>,
    ) -> Result<Self, NodeError> {
        let pki = PkiStore::new(settings.pki_dir());
        pki.ensure_dir()?;
        import_operator_ca(&settings, &pki)?;
        let plans = PlanStore::new(&settings.state_dir);
        let plan = plans.load()?;
        let restores = RestoreStore::new(&settings.state_dir);
        let restore = restores.load()?;
        let formed = settings.state_dir.join(FORMED_MARKER).exists();
        let left_marker = settings.state_dir.join(LEFT_MARKER);
        if left_marker.exists() {
            std::fs::remove_file(&left_marker).map_err(|source| fsutil::FsError {
                op: "remove",
                path: left_marker.clone(),
                source,
            })?;
            tracing::info!("this host left the cluster before; joining it again as a new member");
        }
        let mut state = Self {
            settings,
            pki,
            plans,
            plan,
            restores,
            restore,
            cert: None,
            formed,
            left: false,
            material,
            generation: 0,
        };
        let disk_ca = state.pki.load_ca()?.map(Arc::new);
        state.refresh(disk_ca)?;
        Ok(state)
    }

    /// The TLS material now in force.
    pub fn material(&self) -> Arc<TlsMaterial> {
        self.material.borrow().clone()
    }

    /// Grows by one whenever new material is published.
    pub fn material_generation(&self) -> u64 {
        self.generation
    }

    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }

    /// The restore plan record (`restore.json`).
    pub fn restore(&self) -> &RestoreRecord {
        &self.restore
    }

    /// Where restore snapshots are kept.
    pub fn restore_store(&self) -> &RestoreStore {
        &self.restores
    }

    /// Persists the restore record (the store refuses a generation not newer than the applied
    /// one) and holds it.
    pub fn save_restore(&mut self, record: RestoreRecord) -> Result<(), NodeError> {
        self.restores.save(&record)?;
        self.restore = record;
        Ok(())
    }

    /// This node's key (PKCS#8 PEM) and certificate (PEM), to sign a restore plan.
    pub fn node_identity(&self) -> Result<(String, String), NodeError> {
        let key_path = self.pki.node_key_path();
        let key = std::fs::read_to_string(&key_path).map_err(|source| fsutil::FsError {
            op: "read",
            path: key_path,
            source,
        })?;
        let cert = self.pki.load_node_cert()?.ok_or_else(|| {
            NodeError::Restore(crate::restore::RestoreError::Sign(
                "this node has no certificate yet".into(),
            ))
        })?;
        Ok((key, cert))
    }

    /// Installs the CA recovered from a snapshot (restore onto new hosts).
    pub fn install_ca(&mut self, ca: CertificateAuthority) -> Result<CaHash, NodeError> {
        self.pki.save_ca(&ca)?;
        let hash = ca.hash();
        self.refresh(Some(Arc::new(ca)))?;
        Ok(hash)
    }

    /// The cluster token the seed restored its snapshot with (`restore-from.token`), once the
    /// restore onto new hosts has prepared the data.
    pub fn restored_token(&self) -> Option<String> {
        fsutil::read_optional(&self.settings.state_dir.join(RESTORED_TOKEN))
            .ok()
            .flatten()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    }

    /// Records the token of a prepared restore onto new hosts.
    pub fn save_restored_token(&mut self, token: &str) -> Result<(), NodeError> {
        let path = self.settings.state_dir.join(RESTORED_TOKEN);
        fsutil::atomic_write(&path, token.as_bytes(), fsutil::MODE_PUBLIC)?;
        Ok(())
    }

    /// The cluster CA certificate (PEM) this node trusts.
    pub fn ca_cert_pem(&self) -> Result<Option<String>, NodeError> {
        Ok(self.pki.load_ca_cert()?)
    }

    pub fn ca_hash(&self) -> Option<CaHash> {
        self.material.borrow().ca_hash
    }

    /// The CA key on this host's disk.
    pub fn disk_ca(&self) -> Option<Arc<CertificateAuthority>> {
        self.material.borrow().disk_ca.clone()
    }

    /// The node certificate on disk and what is wrong with it.
    pub fn cert(&self) -> Option<&NodeCert> {
        self.cert.as_ref()
    }

    /// This host's member was healthy in a cluster once.
    pub fn formed(&self) -> bool {
        self.formed
    }

    /// This host left the cluster (`quorate leave`) during this run.
    pub fn left(&self) -> bool {
        self.left
    }

    /// Where etcd finds the certificate files.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.pki.node_cert_path(),
            key: self.pki.node_key_path(),
            ca: self.pki.ca_cert_path(),
            crl: Some(self.pki.crl_path()).filter(|p| p.exists()),
        }
    }

    /// Seed: creates the cluster CA (once; the store refuses to replace a different CA).
    pub fn create_ca(&mut self, now: SystemTime) -> Result<CaHash, NodeError> {
        let label: [u8; 4] = rand::random();
        let ca = CertificateAuthority::generate(
            &format!("quorate cluster CA {}", hex::encode(label)),
            now,
            self.settings.pki.ca_validity,
        )?;
        self.pki.save_ca(&ca)?;
        let hash = ca.hash();
        self.refresh(Some(Arc::new(ca)))?;
        Ok(hash)
    }

    /// Persists the plan (write-once: the store refuses a different one) and holds it.
    pub fn save_plan(&mut self, plan: Plan) -> Result<(), NodeError> {
        self.plans.save(&plan)?;
        self.plan = Some(plan);
        Ok(())
    }

    /// Signs this node's certificate with `ca` (this host is the issuer).
    pub fn issue_own_cert(&mut self, ca: &CertificateAuthority) -> Result<(), NodeError> {
        certs::issue_own(&self.settings, &self.pki, ca)?;
        self.refresh(self.disk_ca())
    }

    /// Gets this node's certificate from the issuer at `issuer`, trusting the CA on disk or,
    /// before there is one, the CA with hash `ca`.
    pub async fn request_cert(&mut self, issuer: SocketAddr, ca: CaHash) -> Result<(), NodeError> {
        certs::request_own(&self.settings, &self.pki, issuer, ca).await?;
        self.refresh(self.disk_ca())
    }

    /// Records that this host's member has been healthy in a cluster.
    pub fn mark_formed(&mut self) {
        if self.formed {
            return;
        }
        let path = self.settings.state_dir.join(FORMED_MARKER);
        match fsutil::atomic_write(&path, b"", fsutil::MODE_PUBLIC) {
            Ok(()) => self.formed = true,
            Err(e) => tracing::warn!(error = %e, "cannot record that the cluster formed"),
        }
    }

    /// Records that this host left the cluster; the next start clears it and joins afresh.
    pub fn mark_left(&mut self) -> Result<(), NodeError> {
        let path = self.settings.state_dir.join(LEFT_MARKER);
        fsutil::atomic_write(&path, b"", fsutil::MODE_PUBLIC)?;
        self.left = true;
        Ok(())
    }

    /// Deletes the node certificate's file once it was revoked (after `quorate leave`): this
    /// run keeps what it loaded, and the next start asks for a new certificate.
    pub fn retire_node_cert(&self) -> Result<(), NodeError> {
        let pki = PkiStore::new(self.settings.pki_dir());
        match std::fs::remove_file(pki.node_cert_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::fsutil::FsError::new("remove", &pki.node_cert_path(), e).into()),
        }
    }

    /// Moves the etcd data dir aside (never deletes it) to `etcd.<why>-<unix time>`; returns
    /// where it went, or `None` when there was no data dir.
    pub fn move_data_aside(&self, why: &str, unix_now: u64) -> Result<Option<PathBuf>, NodeError> {
        let data = self.settings.etcd_data_dir();
        if !data.exists() {
            return Ok(None);
        }
        let aside = self
            .settings
            .state_dir
            .join(format!("etcd.{why}-{unix_now}"));
        std::fs::rename(&data, &aside).map_err(|source| fsutil::FsError {
            op: "move aside",
            path: data.clone(),
            source,
        })?;
        Ok(Some(aside))
    }

    /// Re-reads the PKI directory after a change and publishes the new material.
    fn refresh(&mut self, disk_ca: Option<Arc<CertificateAuthority>>) -> Result<(), NodeError> {
        let ca_pem = self.pki.load_ca_cert()?;
        self.cert = load_node_cert(&self.pki, ca_pem.as_deref(), self.settings.advertise)?;
        let usable = self.cert.as_ref().is_some_and(|c| c.problem.is_none());
        let material = TlsMaterial::read(&self.pki, disk_ca, usable)?;
        self.material.send_replace(Arc::new(material));
        self.generation += 1;
        Ok(())
    }
}

/// On the seed, installs the operator-supplied CA (pki.ca_cert_file / ca_key_file) into the
/// PKI directory, unless the same CA is already there. A different CA already there is an
/// error: the seed of a running cluster cannot switch CAs.
fn import_operator_ca(settings: &Settings, pki: &PkiStore) -> Result<(), NodeError> {
    let (Some(cert_path), Some(key_path)) = (&settings.pki.ca_cert_file, &settings.pki.ca_key_file)
    else {
        return Ok(());
    };
    let read = |path: &std::path::PathBuf| {
        std::fs::read_to_string(path).map_err(|e| NodeError::OperatorCa {
            path: path.clone(),
            message: e.to_string(),
        })
    };
    let ca = CertificateAuthority::from_pem(&read(cert_path)?, &read(key_path)?).map_err(|e| {
        NodeError::OperatorCa {
            path: cert_path.clone(),
            message: e.to_string(),
        }
    })?;
    match pki.load_ca()? {
        Some(existing) if existing.hash() == ca.hash() => Ok(()),
        Some(existing) => Err(NodeError::OperatorCa {
            path: cert_path.clone(),
            message: format!(
                "this node already uses CA {}; the configured CA is {}",
                existing.hash(),
                ca.hash()
            ),
        }),
        None => {
            pki.save_ca(&ca)?;
            tracing::info!(ca_hash = %ca.hash(), "installed the operator-supplied CA");
            Ok(())
        }
    }
}
