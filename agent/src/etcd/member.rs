//! One etcd member, as the probe and the membership decisions see it, converted from
//! etcd-client's member in one place. The ID is a number in code; it is hex only where people
//! read it (in /status and `quorate status`, as etcdctl shows it).

use serde::{Deserialize, Serialize};

/// One member as etcd lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Serialized as hex, like etcdctl prints it.
    #[serde(with = "hex_id")]
    pub id: u64,
    /// Empty while the member has never started.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl From<&etcd_client::Member> for Member {
    fn from(m: &etcd_client::Member) -> Self {
        Self {
            id: m.id(),
            name: m.name().to_owned(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            is_learner: m.is_learner(),
        }
    }
}

/// A member and whether it answered a health check just now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHealth {
    pub member: Member,
    pub healthy: bool,
}

#[cfg(test)]
impl MemberHealth {
    /// A member at `ip` for other modules' tests.
    pub fn example(id: u64, name: &str, ip: &str, is_learner: bool, healthy: bool) -> Self {
        Self {
            member: Member {
                id,
                name: name.into(),
                peer_urls: vec![format!("https://{ip}:2380")],
                client_urls: vec![format!("https://{ip}:2379")],
                is_learner,
            },
            healthy,
        }
    }
}

/// serde helper: a member ID as a hex string.
mod hex_id {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{id:x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        u64::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_hex_in_json() {
        let m = Member {
            id: 0x8e9e05c52164694d,
            name: "a".into(),
            peer_urls: vec!["https://10.0.0.1:2380".into()],
            client_urls: vec![],
            is_learner: false,
        };
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["id"], "8e9e05c52164694d");
        let back: Member = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
        assert!(serde_json::from_str::<Member>(
            r#"{"id":"xyz","name":"","peer_urls":[],"client_urls":[],"is_learner":false}"#
        )
        .is_err());
    }
}
