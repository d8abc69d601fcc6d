//! `quorate cert client NAME --out DIR`: makes a key pair here, has the cluster CA sign a
//! client-only certificate for it through the issuer's API (proving the join token), and writes
//! ca.pem, NAME.pem and NAME-key.pem (0600). The key never leaves this host.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

use super::local::fetch_report;
use crate::api::{request_certificate, CertKind, CsrRequest, ServerTrust};
use crate::config::Settings;
use crate::fsutil;
use crate::pki::{NodeKey, PkiStore};
use crate::token::KeyPurpose;

/// Runs the command.
pub async fn client_cert(
    settings: &Settings,
    name: &str,
    out: &Path,
    force: bool,
) -> anyhow::Result<()> {
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
    let trust = match PkiStore::new(settings.pki_dir()).load_ca_cert() {
        Ok(Some(pem)) => ServerTrust::Ca(pem),
        _ => ServerTrust::Pinned(ca_hash),
    };
    let key = NodeKey::generate()?;
    let key_pem = key.to_pem();
    let csr = key.csr_pem(name)?;
    let signed = request_certificate(
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
        },
        Duration::from_secs(15),
    )
    .await?;
    fsutil::ensure_dir(out, 0o755).or_else(|e| {
        // An existing directory owned by someone else is fine as long as we can write in it.
        if out.is_dir() {
            Ok(())
        } else {
            Err(e)
        }
    })?;
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
