use super::*;
use crate::gossip::directory::DirectoryMember;

fn hash(n: u8) -> CaHash {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
        .parse()
        .unwrap()
}

fn directory(ca: Option<CaHash>) -> Directory {
    Directory {
        id: 1,
        answered_by: "n1".into(),
        ca_hash: ca,
        issuer_api: Some("127.0.0.1:7946".parse().unwrap()),
        members: vec![DirectoryMember {
            name: "n1".into(),
            client_urls: vec!["https://127.0.0.1:2379".into()],
            gossip_addr: None,
        }],
    }
}

fn held(ca: CaHash, not_before: SystemTime, not_after: SystemTime) -> Held {
    Held {
        cert_pem: String::new(),
        ca_pem: String::new(),
        ca_hash: ca,
        info: CertInfo {
            common_name: "omni".into(),
            dns_names: vec![],
            ips: vec![],
            not_before,
            not_after,
            serial_hex: "01".into(),
            is_ca: false,
            server_auth: false,
            client_auth: true,
        },
    }
}

#[test]
fn a_certificate_is_wanted_first_at_two_thirds_and_for_a_new_ca() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let h = held(hash(1), t0, t0 + Duration::from_secs(30));
    assert_eq!(want(None, Some(hash(1)), t0), Some(Want::First));
    assert_eq!(
        want(Some(&h), Some(hash(1)), t0 + Duration::from_secs(19)),
        None
    );
    assert_eq!(want(Some(&h), None, t0 + Duration::from_secs(19)), None);
    assert_eq!(
        want(Some(&h), Some(hash(1)), t0 + Duration::from_secs(20)),
        Some(Want::Renewal)
    );
    assert_eq!(
        want(Some(&h), Some(hash(1)), t0 + Duration::from_secs(60)),
        Some(Want::Renewal),
        "expired"
    );
    assert_eq!(want(Some(&h), Some(hash(2)), t0), Some(Want::NewCa));
}

#[test]
fn the_issuer_must_prove_the_pinned_or_the_reported_ca() {
    assert_eq!(expected_ca(None, &directory(Some(hash(1)))), Ok(hash(1)));
    assert_eq!(
        expected_ca(Some(hash(1)), &directory(Some(hash(1)))),
        Ok(hash(1))
    );
    assert_eq!(expected_ca(Some(hash(1)), &directory(None)), Ok(hash(1)));
    let e = expected_ca(Some(hash(1)), &directory(Some(hash(2)))).unwrap_err();
    assert!(e.contains("pins") && e.contains("refusing"), "{e}");
    let e = expected_ca(None, &directory(None)).unwrap_err();
    assert!(e.contains("n1 does not know the cluster CA"), "{e}");
}
