//! Signing a restore plan with this node's key, and verifying one: the signature over the
//! plan's canonical bytes, the signer's certificate chaining to this agent's own CA, being a
//! node certificate (server and client auth, which the issuer gives only to nodes) and naming
//! `decided_by`. A join-token holder can get a client certificate, never a node certificate
//! for a member's name, so it cannot sign a plan that any agent accepts.

use std::time::SystemTime;

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use super::plan::{RestorePlan, SignedPlan};
use super::RestoreError;
use crate::pki::{inspect, verify_issued_by, CaHash};

/// Signs `plan` with the node key `key_pem` (PKCS#8 PEM) and attaches `cert_pem`.
pub fn sign_plan(
    plan: RestorePlan,
    key_pem: &str,
    cert_pem: &str,
) -> Result<SignedPlan, RestoreError> {
    let bad = |m: String| RestoreError::Sign(m);
    let der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| bad(format!("cannot read the node key: {e}")))?;
    let rng = SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        der.secret_pkcs8_der(),
        &rng,
    )
    .map_err(|e| bad(format!("the node key is not ECDSA P-256: {e}")))?;
    let signature = pair
        .sign(&rng, &plan.canonical())
        .map_err(|e| bad(format!("signing failed: {e}")))?;
    Ok(SignedPlan {
        plan,
        signature: hex::encode(signature.as_ref()),
        cert_pem: cert_pem.to_owned(),
    })
}

impl SignedPlan {
    /// Checks the signature, that the signer's certificate is a node certificate of the CA
    /// `ca_pem` naming `decided_by`, and that the plan is for that CA.
    pub fn verify(&self, ca_pem: &str, now: SystemTime) -> Result<(), RestoreError> {
        let refuse = |m: String| RestoreError::BadPlan {
            generation: self.plan.generation,
            decided_by: self.plan.decided_by.clone(),
            reason: m,
        };
        let ca = CaHash::of_cert_pem(ca_pem).map_err(|e| refuse(e.to_string()))?;
        if ca != self.plan.ca_hash {
            return Err(refuse(format!(
                "it is for CA {} but this agent trusts {ca}",
                self.plan.ca_hash
            )));
        }
        verify_issued_by(&self.cert_pem, ca_pem, now)
            .map_err(|e| refuse(format!("its signer's certificate: {e}")))?;
        let info = inspect(&self.cert_pem).map_err(|e| refuse(e.to_string()))?;
        if info.common_name != self.plan.decided_by {
            return Err(refuse(format!(
                "it is signed by {:?}, not by its decider {:?}",
                info.common_name, self.plan.decided_by
            )));
        }
        if !(info.server_auth && info.client_auth) {
            return Err(refuse(
                "its signer's certificate is not a node certificate".into(),
            ));
        }
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| refuse(e.to_string()))?;
        let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| refuse(e.to_string()))?;
        let signature = hex::decode(&self.signature).map_err(|e| refuse(e.to_string()))?;
        cert.verify_signature(
            webpki::ring::ECDSA_P256_SHA256,
            &self.plan.canonical(),
            &signature,
        )
        .map_err(|e| refuse(format!("the signature does not match: {e:?}")))
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::pki::test_support::{ca, node_cert, DAY};
    use crate::pki::{cert_spec, CertProfile, NodeKey};
    use crate::restore::tests::example_plan;

    const ADDR: [IpAddr; 1] = [IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1))];

    fn signed_by(ca: &crate::pki::CertificateAuthority, name: &str) -> SignedPlan {
        let (cert, key) = node_cert(ca, name, &ADDR);
        let mut plan = example_plan(2);
        plan.ca_hash = ca.hash();
        sign_plan(plan, &key.to_pem(), &cert).unwrap()
    }

    #[test]
    fn a_plan_signed_by_its_decider_verifies() {
        let ca = ca("c");
        signed_by(&ca, "a")
            .verify(ca.cert_pem(), SystemTime::now())
            .unwrap();
    }

    #[test]
    fn another_ca_is_refused() {
        let (ours, theirs) = (ca("ours"), ca("theirs"));
        let signed = signed_by(&theirs, "a");
        let err = signed
            .verify(ours.cert_pem(), SystemTime::now())
            .unwrap_err();
        assert!(err.to_string().contains("CA"), "{err}");
        // Even claiming our CA hash does not help: the chain is checked.
        let mut forged = signed.clone();
        forged.plan.ca_hash = ours.hash();
        assert!(forged.verify(ours.cert_pem(), SystemTime::now()).is_err());
    }

    #[test]
    fn a_signer_other_than_decided_by_is_refused() {
        let ca = ca("c");
        let (cert, key) = node_cert(&ca, "b", &ADDR);
        let mut plan = example_plan(2);
        plan.ca_hash = ca.hash();
        let signed = sign_plan(plan, &key.to_pem(), &cert).unwrap();
        let err = signed.verify(ca.cert_pem(), SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("not by its decider"), "{err}");
    }

    #[test]
    fn a_client_certificate_cannot_sign() {
        let ca = ca("c");
        let key = NodeKey::generate().unwrap();
        let profile = CertProfile::Client { name: "a".into() };
        let spec = cert_spec(&profile, SystemTime::now(), DAY);
        let cert = ca.sign_csr(&key.csr_pem("a").unwrap(), &spec).unwrap();
        let mut plan = example_plan(2);
        plan.ca_hash = ca.hash();
        let signed = sign_plan(plan, &key.to_pem(), &cert).unwrap();
        let err = signed.verify(ca.cert_pem(), SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("not a node certificate"), "{err}");
    }

    #[test]
    fn every_tampered_field_breaks_the_signature() {
        let ca = ca("c");
        let signed = signed_by(&ca, "a");
        type Tamper = Box<dyn Fn(&mut RestorePlan)>;
        let tamper: Vec<Tamper> = vec![
            Box::new(|p| p.generation += 1),
            Box::new(|p| p.cluster_token.push('x')),
            Box::new(|p| p.snapshot.sha256 = "00".repeat(32)),
            Box::new(|p| p.members.pop().map(|_| ()).unwrap_or(())),
            Box::new(|p| p.previous.push('0')),
        ];
        for t in tamper {
            let mut forged = signed.clone();
            t(&mut forged.plan);
            let err = forged.verify(ca.cert_pem(), SystemTime::now()).unwrap_err();
            assert!(err.to_string().contains("signature"), "{err}");
        }
    }
}
