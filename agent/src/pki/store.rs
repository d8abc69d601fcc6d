//! The pki directory on disk. This is the only pki file that does IO; every write goes through
//! [`atomic_write`], keys with mode 0600, and the CA certificate is never silently replaced by
//! another CA's (that would move the node into a different cluster).

use std::path::{Path, PathBuf};

use crate::fsutil::{atomic_write, ensure_dir, read_optional, MODE_DIR, MODE_PRIVATE, MODE_PUBLIC};

use super::{CaHash, CertificateAuthority, NodeKey, PkiError, Result};

/// The pki directory: `ca.pem`, `ca-key.pem` (issuer only), `node.pem`, `node-key.pem`.
#[derive(Debug, Clone)]
pub struct PkiStore {
    dir: PathBuf,
}

impl PkiStore {
    /// The default location.
    pub const DEFAULT_DIR: &'static str = "/var/lib/quorate/pki";

    /// A store rooted at `dir` (nothing is created yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `ca.pem`.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `ca-key.pem`.
    pub fn ca_key_path(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }

    /// `node.pem`.
    pub fn node_cert_path(&self) -> PathBuf {
        self.dir.join("node.pem")
    }

    /// `node-key.pem`.
    pub fn node_key_path(&self) -> PathBuf {
        self.dir.join("node-key.pem")
    }

    /// `crl.pem`, the revocation list etcd reads.
    pub fn crl_path(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }

    /// The revocation list on disk, if any.
    pub fn load_crl(&self) -> Result<Option<String>> {
        Ok(read_optional(&self.crl_path())?)
    }

    /// Replaces the revocation list (public: it lists serials, no secret).
    pub fn save_crl(&self, pem: &str) -> Result<()> {
        Ok(atomic_write(&self.crl_path(), pem.as_bytes(), MODE_PUBLIC)?)
    }

    /// Creates the directory with mode 0700.
    pub fn ensure_dir(&self) -> Result<()> {
        Ok(ensure_dir(&self.dir, MODE_DIR)?)
    }

    /// The CA with its key; `None` on nodes that are not the issuer (no `ca-key.pem`).
    pub fn load_ca(&self) -> Result<Option<CertificateAuthority>> {
        let key_path = self.ca_key_path();
        let Some(key_pem) = read_optional(&key_path)? else {
            return Ok(None);
        };
        let cert_path = self.ca_cert_path();
        let cert_pem = read_optional(&cert_path)?.ok_or_else(|| PkiError::Incomplete {
            path: cert_path.clone(),
            other: key_path.clone(),
        })?;
        CertificateAuthority::from_pem(&cert_pem, &key_pem)
            .map(Some)
            .map_err(|e| match e {
                PkiError::BadKey { .. } => in_file(&key_path, e),
                _ => in_file(&cert_path, e),
            })
    }

    /// Writes the CA certificate (0644) and key (0600); the key first, so that a `ca.pem`
    /// never exists on the issuer without its key.
    pub fn save_ca(&self, ca: &CertificateAuthority) -> Result<()> {
        self.check_same_ca(ca.hash())?;
        atomic_write(&self.ca_key_path(), ca.key_pem().as_bytes(), MODE_PRIVATE)?;
        self.save_ca_cert(ca.cert_pem())
    }

    /// The CA certificate, if present.
    pub fn load_ca_cert(&self) -> Result<Option<String>> {
        Ok(read_optional(&self.ca_cert_path())?)
    }

    /// Writes the CA certificate (0644); refuses to replace a different CA.
    pub fn save_ca_cert(&self, cert_pem: &str) -> Result<()> {
        let path = self.ca_cert_path();
        let hash = CaHash::of_cert_pem(cert_pem)?;
        self.check_same_ca(hash)?;
        Ok(atomic_write(&path, cert_pem.as_bytes(), MODE_PUBLIC)?)
    }

    fn check_same_ca(&self, new: CaHash) -> Result<()> {
        let path = self.ca_cert_path();
        if let Some(existing_pem) = read_optional(&path)? {
            let existing = CaHash::of_cert_pem(&existing_pem).map_err(|e| in_file(&path, e))?;
            if existing != new {
                return Err(PkiError::CaMismatch {
                    path,
                    existing,
                    new,
                });
            }
        }
        Ok(())
    }

    /// The node key, generated and saved (0600) on first use.
    pub fn load_or_create_node_key(&self) -> Result<NodeKey> {
        let path = self.node_key_path();
        if let Some(pem) = read_optional(&path)? {
            return NodeKey::from_pem(&pem).map_err(|e| in_file(&path, e));
        }
        let key = NodeKey::generate()?;
        atomic_write(&path, key.to_pem().as_bytes(), MODE_PRIVATE)?;
        tracing::info!(path = %path.display(), "generated node key");
        Ok(key)
    }

    /// The node certificate, if present.
    pub fn load_node_cert(&self) -> Result<Option<String>> {
        Ok(read_optional(&self.node_cert_path())?)
    }

    /// Writes the node certificate (0644).
    pub fn save_node_cert(&self, cert_pem: &str) -> Result<()> {
        Ok(atomic_write(
            &self.node_cert_path(),
            cert_pem.as_bytes(),
            MODE_PUBLIC,
        )?)
    }
}

fn in_file(path: &Path, source: PkiError) -> PkiError {
    PkiError::File {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::pki::test_support;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn store() -> (tempfile::TempDir, PkiStore) {
        let tmp = tempfile::tempdir().unwrap();
        let store = PkiStore::new(tmp.path().join("pki"));
        store.ensure_dir().unwrap();
        (tmp, store)
    }

    #[test]
    fn ca_round_trip_with_modes() {
        let (_tmp, store) = store();
        assert_eq!(mode(store.dir()), 0o700);
        assert!(store.load_ca().unwrap().is_none());
        let ca = test_support::ca("ca");
        store.save_ca(&ca).unwrap();
        store.save_ca(&ca).unwrap();
        assert_eq!(store.load_ca().unwrap().unwrap().hash(), ca.hash());
        assert_eq!(
            store.load_ca_cert().unwrap().as_deref(),
            Some(ca.cert_pem())
        );
        assert_eq!(mode(&store.ca_key_path()), 0o600);
        assert_eq!(mode(&store.ca_cert_path()), 0o644);
    }

    #[test]
    fn refuses_other_ca() {
        let (_tmp, store) = store();
        let (a, b) = (test_support::ca("a"), test_support::ca("b"));
        store.save_ca_cert(a.cert_pem()).unwrap();
        store.save_ca_cert(a.cert_pem()).unwrap();
        let err = store.save_ca_cert(b.cert_pem()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PkiError::CaMismatch { .. }));
        assert!(msg.contains(&a.hash().to_string()) && msg.contains(&b.hash().to_string()));
        assert!(store.save_ca(&b).is_err());
        assert!(!store.ca_key_path().exists());
    }

    #[test]
    fn node_key_created_once_private() {
        let (_tmp, store) = store();
        let key = store.load_or_create_node_key().unwrap();
        assert_eq!(mode(&store.node_key_path()), 0o600);
        assert_eq!(
            store.load_or_create_node_key().unwrap().to_pem(),
            key.to_pem()
        );
        assert!(store.load_node_cert().unwrap().is_none());
        store.save_node_cert("cert").unwrap();
        assert_eq!(store.load_node_cert().unwrap().as_deref(), Some("cert"));
        assert_eq!(mode(&store.node_cert_path()), 0o644);
    }

    #[test]
    fn errors_name_the_path() {
        let (_tmp, store) = store();
        std::fs::write(store.node_key_path(), "garbage").unwrap();
        let err = store.load_or_create_node_key().unwrap_err();
        assert!(err.to_string().contains("node-key.pem"), "{err}");
        std::fs::write(store.ca_key_path(), "garbage").unwrap();
        let err = store.load_ca().unwrap_err();
        assert!(err.to_string().contains("ca.pem is missing"), "{err}");
    }
}
