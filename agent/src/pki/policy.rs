//! What goes into a certificate, decided purely from the node's identity and the clock.
//! The CA signs exactly this and ignores whatever a CSR asks for, so a node cannot obtain a
//! name or address it was not given; renewal timing lives here too so it can be tested
//! without waiting.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far `not_before` is moved into the past, so that hosts whose clocks lag a little
/// behind the issuer accept a fresh certificate.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// 9999-12-31T23:59:59Z, the latest time X.509 can express.
const MAX_X509_TIME: Duration = Duration::from_secs(253_402_300_799);

/// Who a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertProfile {
    /// A cluster member: serves and dials peers, reachable by name, its addresses and loopback.
    Node { name: String, addrs: Vec<IpAddr> },
    /// A client (an operator tool, an application): client authentication only.
    Client { name: String },
}

/// The complete content of a certificate to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    pub common_name: String,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub server_auth: bool,
    pub client_auth: bool,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Decides the certificate for `profile`, valid from a little before `now` for `validity`.
pub fn cert_spec(profile: &CertProfile, now: SystemTime, validity: Duration) -> CertSpec {
    let (not_before, not_after) = validity_window(now, validity);
    match profile {
        CertProfile::Node { name, addrs } => {
            let mut dns_names = Vec::new();
            if is_dns_name(name) && name != "localhost" {
                dns_names.push(name.clone());
            }
            dns_names.push("localhost".to_owned());
            let loopback = [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ];
            let mut ips: Vec<IpAddr> = Vec::new();
            for ip in addrs.iter().chain(&loopback) {
                if !ips.contains(ip) {
                    ips.push(*ip);
                }
            }
            CertSpec {
                common_name: name.clone(),
                dns_names,
                ips,
                server_auth: true,
                client_auth: true,
                not_before,
                not_after,
            }
        }
        CertProfile::Client { name } => CertSpec {
            common_name: name.clone(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            server_auth: false,
            client_auth: true,
            not_before,
            not_after,
        },
    }
}

/// `now` minus the clock-skew allowance to `now + validity`, capped at what X.509 can express.
/// The allowance is [`CLOCK_SKEW_ALLOWANCE`], or a tenth of the lifetime for short-lived
/// certificates, so that the renewal point (two thirds into the lifetime) always lies after
/// the issuance.
pub(crate) fn validity_window(now: SystemTime, validity: Duration) -> (SystemTime, SystemTime) {
    let allowance = CLOCK_SKEW_ALLOWANCE.min(validity / 10);
    let not_before = now.checked_sub(allowance).unwrap_or(UNIX_EPOCH);
    let latest = UNIX_EPOCH + MAX_X509_TIME;
    let not_after = now.checked_add(validity).map_or(latest, |t| t.min(latest));
    (not_before, not_after)
}

/// When a certificate with this window was signed: the inverse of [`validity_window`] (its
/// notBefore plus the back-dating its lifetime got).
pub fn signed_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let window = not_after.duration_since(not_before).unwrap_or_default();
    // window = validity + min(ALLOWANCE, validity / 10)
    let allowance = if window >= CLOCK_SKEW_ALLOWANCE * 11 {
        CLOCK_SKEW_ALLOWANCE
    } else {
        window / 11
    };
    not_before + allowance
}

/// Whether `name` may go into a DNS SAN: dot-separated labels of 1 to 63 letters, digits and
/// hyphens (not at either end), at most 253 characters, and not an IP address.
pub fn is_dns_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    (1..=253).contains(&name.len())
        && name.parse::<IpAddr>().is_err()
        && name.split('.').all(label_ok)
}

/// When a certificate should be renewed: two thirds into its lifetime (at `not_before` when the
/// bounds are inverted).
pub fn renewal_time(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    match not_after.duration_since(not_before) {
        Ok(lifetime) => not_before
            .checked_add(lifetime / 3 * 2)
            .unwrap_or(not_after),
        Err(_) => not_before,
    }
}

/// True once two thirds of the lifetime have passed, and always once the certificate expired.
pub fn renewal_due(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    now >= not_after || now >= renewal_time(not_before, not_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn node(name: &str, addrs: &[&str]) -> CertProfile {
        CertProfile::Node {
            name: name.into(),
            addrs: addrs.iter().map(|a| ip(a)).collect(),
        }
    }

    #[test]
    fn node_spec() {
        let now = at(1_800_000_000);
        let spec = cert_spec(&node("etcd-1", &["10.0.0.5", "fd00::5"]), now, 24 * HOUR);
        assert_eq!(
            spec,
            CertSpec {
                common_name: "etcd-1".into(),
                dns_names: vec!["etcd-1".into(), "localhost".into()],
                ips: vec![ip("10.0.0.5"), ip("fd00::5"), ip("127.0.0.1"), ip("::1")],
                server_auth: true,
                client_auth: true,
                not_before: now - CLOCK_SKEW_ALLOWANCE,
                not_after: now + 24 * HOUR,
            }
        );
    }

    #[test]
    fn node_ips_deduplicated_in_order() {
        let spec = cert_spec(
            &node("n", &["::1", "10.0.0.1", "10.0.0.1", "127.0.0.1"]),
            at(1000),
            HOUR,
        );
        assert_eq!(spec.ips, vec![ip("::1"), ip("10.0.0.1"), ip("127.0.0.1")]);
    }

    #[test]
    fn node_name_not_a_dns_name_is_skipped() {
        for name in ["node_1", "10.0.0.1", "-x", "a..b", "", "über"] {
            let spec = cert_spec(&node(name, &[]), at(1000), HOUR);
            assert_eq!(spec.dns_names, vec!["localhost".to_owned()], "{name}");
            assert_eq!(spec.common_name, name);
        }
        let spec = cert_spec(&node("localhost", &[]), at(1000), HOUR);
        assert_eq!(spec.dns_names, vec!["localhost".to_owned()]);
    }

    #[test]
    fn client_spec() {
        let now = at(1_800_000_000);
        let spec = cert_spec(
            &CertProfile::Client {
                name: "admin".into(),
            },
            now,
            HOUR,
        );
        assert_eq!(spec.common_name, "admin");
        assert!(spec.dns_names.is_empty() && spec.ips.is_empty());
        assert!(spec.client_auth && !spec.server_auth);
        assert_eq!(spec.not_before, now - CLOCK_SKEW_ALLOWANCE);
        for validity in [
            2160 * HOUR,
            Duration::from_secs(3000),
            Duration::from_secs(15),
        ] {
            let (nb, na) = validity_window(now, validity);
            let at = signed_at(nb, na);
            let off = at.max(now).duration_since(at.min(now)).unwrap();
            assert!(
                off <= Duration::from_secs(1),
                "{validity:?}: off by {off:?}"
            );
        }
        assert_eq!(spec.not_after, now + HOUR);
    }

    #[test]
    fn short_lifetimes_are_renewed_after_issuance_not_before() {
        let now = at(1_800_000_000);
        let client = CertProfile::Client { name: "c".into() };
        let spec = cert_spec(&client, now, Duration::from_secs(30));
        assert_eq!(spec.not_before, now - Duration::from_secs(3));
        let renew = renewal_time(spec.not_before, spec.not_after);
        assert!(renew > now + Duration::from_secs(15), "{renew:?}");
        assert!(!renewal_due(spec.not_before, spec.not_after, now));
    }

    #[test]
    fn validity_is_clamped() {
        let client = CertProfile::Client { name: "c".into() };
        let huge = cert_spec(&client, at(1000), Duration::from_secs(u64::MAX));
        assert_eq!(huge.not_after, UNIX_EPOCH + MAX_X509_TIME);
    }

    #[test]
    fn dns_names() {
        for good in [
            "a",
            "etcd-1",
            "node1.example.com",
            "x.y-z.local",
            &"a".repeat(63),
        ] {
            assert!(is_dns_name(good), "{good}");
        }
        let long = ["a"; 127].join(".") + ".bb";
        for bad in [
            "",
            "a_b",
            "a.",
            ".a",
            "a-",
            "-a",
            "1.2.3.4",
            "::1",
            "a b",
            &"a".repeat(64),
            &long,
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }

    #[test]
    fn renewal_at_two_thirds() {
        let (nb, na) = (at(0), at(3000));
        assert_eq!(renewal_time(nb, na), at(2000));
        assert!(!renewal_due(nb, na, at(0)));
        assert!(!renewal_due(nb, na, at(1999)));
        assert!(renewal_due(nb, na, at(2000)));
        assert!(renewal_due(nb, na, at(2999)));
        assert!(renewal_due(nb, na, at(3000)));
        assert!(renewal_due(nb, na, at(9000)));
    }

    #[test]
    fn renewal_with_inverted_or_empty_lifetime() {
        assert_eq!(renewal_time(at(500), at(100)), at(500));
        assert!(renewal_due(at(500), at(100), at(100)));
        assert!(renewal_due(at(500), at(500), at(500)));
        // Before not_before a clock that went backwards does not trigger a renewal.
        assert!(!renewal_due(at(500), at(800), at(400)));
    }
}
