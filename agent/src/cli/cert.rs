//! `quorate cert client NAME --out DIR`: makes a key pair here, has the cluster CA sign a
//! client-only certificate for it through the issuer's API (proving the join token), and writes
//! ca.pem, NAME.pem and NAME-key.pem (0600). The key never leaves this host.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

use super::local::fetch_report;
use crate::api::{request_certificate, ApiClientError, CertKind, CsrRequest, ServerTrust};
use crate::config::Settings;
use crate::fsutil;
use crate::pki::{CaHash, NodeKey, PkiStore};
use crate::token::KeyPurpose;

/// What the issuer's TLS certificate is checked against, never what the local health endpoint
/// says: the CA certificate on disk (root and the service user can read it), else the
/// operator's `ca_hash`; without either the command stops (fails closed).
fn trust(settings: &Settings) -> anyhow::Result<ServerTrust> {
    let pki = PkiStore::new(settings.pki_dir());
    let why = match pki.load_ca_cert() {
        Ok(Some(pem)) => return Ok(ServerTrust::Ca(pem)),
        Ok(None) => "it does not exist yet".to_owned(),
        Err(e) => e.to_string(),
    };
    match settings.ca_pin {
        Some(pin) => Ok(ServerTrust::Pinned(pin)),
        None => bail!(
            "cannot verify the issuer: the CA certificate {} cannot be read ({why}) and the \
             config has no ca_hash. Run this as root or the service user, or set ca_hash = \
             \"sha256:...\" (quorate status shows the hash)",
            pki.ca_cert_path().display()
        ),
    }
}

/// Runs the command.
pub async fn client_cert(
    settings: &Settings,
    name: &str,
    out: &Path,
    force: bool,
    role: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(problem) = role.and_then(crate::etcd::roles::role_name_problem) {
        bail!("--role {:?}: {problem}", role.unwrap_or_default());
    }
    let report = fetch_report(settings).await?;
    let Some(ca_hash) = report.ca_hash else {
        bail!(
            "this node does not know the cluster CA yet ({}); try again once it has joined",
            report.message
        );
    };
    let issuer = if report.issuer {
        settings.api_advertise()
    } else {
        report.issuer_api().context(
            "no live issuer is known to this node; the seed (or the current issuer) must be running",
        )?
    };
    let cert_path = out.join(format!("{name}.pem"));
    let key_path = out.join(format!("{name}-key.pem"));
    let ca_path = out.join("ca.pem");
    if !force {
        for p in [&cert_path, &key_path] {
            if p.exists() {
                bail!("{} exists; use --force to replace it", p.display());
            }
        }
    }
    let trust = trust(settings)?;
    let expected = match &trust {
        ServerTrust::Ca(pem) => CaHash::of_cert_pem(pem)?,
        ServerTrust::Pinned(pin) => *pin,
    };
    if expected != ca_hash {
        bail!(
            "the local agent reports CA {ca_hash}, but this host trusts {expected}: refusing to \
             ask for a certificate (is something else answering on {}?)",
            settings.health_listen
        );
    }
    let key = NodeKey::generate()?;
    let key_pem = key.to_pem();
    let csr = key.csr_pem(name)?;
    // A 503 (the name's etcd user or role not there yet) is retried for a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let signed = loop {
        let attempt = request_certificate(
            issuer,
            &trust,
            ca_hash,
            &settings.token.derive(KeyPurpose::ApiProof),
            &CsrRequest {
                name,
                kind: CertKind::Client,
                csr_pem: &csr,
                key_pem: &key_pem,
                from: None,
                renewing: None,
                role,
            },
            Duration::from_secs(15),
        )
        .await;
        match attempt {
            Err(e @ ApiClientError::Refused { status: 503, .. })
                if tokio::time::Instant::now() < deadline =>
            {
                eprintln!("waiting: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            other => break other?,
        }
    };
    // An existing directory keeps its mode and owner; a new one is made 0755 (the key file
    // itself is 0600).
    fsutil::create_dir_if_missing(out, 0o755)?;
    fsutil::atomic_write(&key_path, key_pem.as_bytes(), fsutil::MODE_PRIVATE)?;
    fsutil::atomic_write(&cert_path, signed.cert_pem.as_bytes(), fsutil::MODE_PUBLIC)?;
    fsutil::atomic_write(&ca_path, signed.ca_pem.as_bytes(), fsutil::MODE_PUBLIC)?;
    let endpoints: Vec<String> = report
        .etcd
        .members
        .iter()
        .flat_map(|m| m.client_urls.iter().cloned())
        .collect();
    println!(
        "wrote {}, {} and {}",
        ca_path.display(),
        cert_path.display(),
        key_path.display()
    );
    println!("try:");
    println!(
        "  etcdctl --endpoints={} --cacert={} --cert={} --key={} endpoint health",
        if endpoints.is_empty() {
            settings.client_url()
        } else {
            endpoints.join(",")
        },
        ca_path.display(),
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}

/// `quorate cert revoke --serial S`: through the local agent's control socket (root or the
/// service user on a member).
pub async fn revoke(
    settings: &Settings,
    serial: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<()> {
    let path = match (serial, name) {
        (Some(serial), _) => {
            if crate::pki::crl::normalize_serial(serial).is_none() {
                bail!(
                    "{serial:?} is not a certificate serial number: give it in hex, as `openssl \
                     x509 -noout -serial -in CERT` prints it"
                );
            }
            format!("/v1/cert/revoke?serial={}", serial.trim())
        }
        (None, Some(name)) => {
            if crate::api::sign::client_name_problem(name)
                .is_some_and(|p| !p.starts_with("reserved"))
            {
                bail!("{name:?} is not a certificate name (1-64 letters, digits, '-', '_', '.' or '@')");
            }
            format!("/v1/cert/revoke?name={name}")
        }
        (None, None) => bail!("give --serial or --name"),
    };
    super::local::post_and_print(settings, &path, Duration::from_secs(30)).await
}
