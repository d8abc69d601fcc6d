//! Operator-defined etcd roles (`[[roles]]` in the members' config): a name, key prefixes and
//! read or read-write access. A client certificate issued with `--role NAME` (or by a client
//! agent with `client.role`) is an etcd user holding that role only.
//!
//! Every member publishes its definition under [`MEMBER_PREFIX`]; the definition is in force
//! only when every current member publishes the same one ([`agree`], pure). Then the issuer
//! makes etcd's roles match it ([`apply`]) and records it as [`APPLIED_KEY`], so a role that
//! leaves the config is deleted. While members disagree (a config rolled out to some hosts),
//! the previous definition stays and every member reports the conflict.

use std::collections::BTreeMap;

use etcd_client::{Client, GetOptions, Permission, PermissionType, RoleRevokePermissionOptions};
use serde::{Deserialize, Serialize};

/// Where each member publishes its definition: `MEMBER_PREFIX<node name>`.
pub const MEMBER_PREFIX: &str = "/quorate/roles/member/";
/// The definition last made etcd's (written by the issuer after [`apply`]).
pub const APPLIED_KEY: &str = "/quorate/roles/applied";

/// One `[[roles]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleDef {
    /// The etcd role's name.
    pub name: String,
    /// Key prefixes the role reaches (`"/app/"` is every key starting with `/app/`).
    pub prefixes: Vec<String>,
    /// `read` or `readwrite`.
    pub access: Access,
    /// Whether client-mode hosts holding the client token may ask for it (`client.role`).
    /// Members' `quorate cert client --role` may always; the client token only gets the roles
    /// that say so (and the default role). Left out of the published JSON when false, so
    /// definitions without it read the same to every version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_agents: bool,
}

/// What a role may do under its prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    ReadWrite,
}

impl Access {
    fn etcd(self) -> PermissionType {
        match self {
            Access::Read => PermissionType::Read,
            Access::ReadWrite => PermissionType::Readwrite,
        }
    }
}

/// The canonical form of a definition: roles by name, prefixes sorted and without duplicates.
pub fn canonical(mut roles: Vec<RoleDef>) -> Vec<RoleDef> {
    for r in &mut roles {
        r.prefixes.sort();
        r.prefixes.dedup();
    }
    roles.sort();
    roles
}

/// Why `name` cannot be a role's name, or None: the characters of a client name, and not
/// etcd's `root` or one of quorate's own (`quorate*`).
pub fn role_name_problem(name: &str) -> Option<&'static str> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        Some("a role name is 1-64 letters, digits, '-', '_' or '.'")
    } else if name.eq_ignore_ascii_case("root") {
        Some("reserved: etcd's administrator role")
    } else if name.to_ascii_lowercase().starts_with("quorate") {
        Some("reserved: names starting with quorate belong to the agents")
    } else {
        None
    }
}

/// Why `prefix` cannot be in a role, or None: it must not reach quorate's own keys.
pub fn prefix_problem(prefix: &str) -> Option<&'static str> {
    const OWN: &str = "/quorate/";
    if prefix.is_empty() {
        Some("an empty prefix is every key, /quorate/ (the agents' keys) included")
    } else if OWN.starts_with(prefix) || prefix.starts_with(OWN) {
        Some("it reaches /quorate/, the agents' keys, which only the agents may read or write")
    } else {
        None
    }
}

/// The etcd permission ranges of a role: one `[prefix, prefix+1)` per prefix.
pub fn permissions(role: &RoleDef) -> Vec<Range> {
    role.prefixes
        .iter()
        .map(|p| Range {
            kind: role.access.etcd() as i32,
            key: p.as_bytes().to_vec(),
            end: prefix_end(p.as_bytes()),
        })
        .collect()
}

/// A permission as etcd stores it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Range {
    kind: i32,
    key: Vec<u8>,
    end: Vec<u8>,
}

impl Range {
    fn of(p: &Permission) -> Self {
        Self {
            kind: p.get_type(),
            key: p.key().to_vec(),
            end: p.range_end().to_vec(),
        }
    }

    fn grant(&self) -> Permission {
        let kind = PermissionType::try_from(self.kind).unwrap_or(PermissionType::Read);
        Permission::new(kind, self.key.clone()).with_range_end(self.end.clone())
    }
}

fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Whether the members' definitions are one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agreement {
    /// Every member publishes this definition.
    Agreed(Vec<RoleDef>),
    /// Every member publishes this definition, and etcd does not have it yet.
    Applying(Vec<RoleDef>),
    /// These members have published nothing yet (starting, or a release before roles).
    Waiting(Vec<String>),
    /// The members publish different definitions: one line per definition, with its members.
    Conflict(Vec<String>),
}

impl Agreement {
    /// The text for status and logs.
    pub fn describe(&self) -> String {
        match self {
            Agreement::Agreed(roles) if roles.is_empty() => "none defined".into(),
            Agreement::Agreed(roles) => format!("{} in force ({})", roles.len(), names(roles)),
            Agreement::Applying(roles) => {
                format!("{} agreed, being applied ({})", roles.len(), names(roles))
            }
            Agreement::Waiting(names) => {
                format!("waiting for {} to publish theirs", names.join(", "))
            }
            Agreement::Conflict(lines) => format!(
                "CONFLICT, the members' [[roles]] differ ({}); the previous roles stay until \
                 every member has the same [[roles]]",
                lines.join("; ")
            ),
        }
    }
}

fn names(roles: &[RoleDef]) -> String {
    roles
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`agree`], and whether an agreed definition is the one `applied` (pure).
pub fn agree_applied(
    members: &[String],
    published: &BTreeMap<String, Vec<RoleDef>>,
    applied: Option<&[RoleDef]>,
) -> Agreement {
    match agree(members, published) {
        Agreement::Agreed(def) if applied != Some(def.as_slice()) => Agreement::Applying(def),
        other => other,
    }
}

/// Compares the definitions `published` (by member name) of the `members` (pure).
pub fn agree(members: &[String], published: &BTreeMap<String, Vec<RoleDef>>) -> Agreement {
    let mut missing = Vec::new();
    let mut by_def: BTreeMap<Vec<RoleDef>, Vec<String>> = BTreeMap::new();
    let mut members = members.to_vec();
    members.sort();
    for m in &members {
        match published.get(m) {
            None => missing.push(m.clone()),
            Some(def) => by_def
                .entry(canonical(def.clone()))
                .or_default()
                .push(m.clone()),
        }
    }
    if by_def.len() > 1 {
        return Agreement::Conflict(
            by_def
                .iter()
                .map(|(def, members)| format!("{}: {}", members.join(", "), summary(def)))
                .collect(),
        );
    }
    if !missing.is_empty() {
        return Agreement::Waiting(missing);
    }
    Agreement::Agreed(by_def.into_keys().next().unwrap_or_default())
}

fn summary(def: &[RoleDef]) -> String {
    if def.is_empty() {
        return "no roles".into();
    }
    format!("roles {} ({})", names(def), fingerprint(def))
}

/// A short fingerprint of a definition (the first 8 hex digits of its JSON's SHA-256).
pub fn fingerprint(def: &[RoleDef]) -> String {
    let json = serde_json::to_vec(def).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, &json);
    digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Publishes `def` as this member's (`name`).
pub async fn publish(
    client: &mut Client,
    name: &str,
    def: &[RoleDef],
) -> Result<(), etcd_client::Error> {
    let value = serde_json::to_vec(def).unwrap_or_default();
    client
        .put(format!("{MEMBER_PREFIX}{name}"), value, None)
        .await?;
    Ok(())
}

/// Every member's published definition (entries that do not parse are left out).
pub async fn published(
    client: &mut Client,
) -> Result<BTreeMap<String, Vec<RoleDef>>, etcd_client::Error> {
    let got = client
        .get(MEMBER_PREFIX, Some(GetOptions::new().with_prefix()))
        .await?;
    Ok(got
        .kvs()
        .iter()
        .filter_map(|kv| {
            let name = kv.key_str().ok()?.strip_prefix(MEMBER_PREFIX)?.to_owned();
            Some((name, serde_json::from_slice(kv.value()).ok()?))
        })
        .collect())
}

/// The definition last applied (None when none was).
pub async fn applied(client: &mut Client) -> Result<Option<Vec<RoleDef>>, etcd_client::Error> {
    let got = client.get(APPLIED_KEY, None).await?;
    Ok(got
        .kvs()
        .first()
        .and_then(|kv| serde_json::from_slice(kv.value()).ok()))
}

/// Makes etcd's roles `def`: creates the missing ones, adds and revokes permissions until
/// each role has exactly its ranges, deletes the roles of `previous` that `def` no longer has
/// (their users lose them), then records `def` as applied. Users keep their roles otherwise.
pub async fn apply(
    client: &mut Client,
    def: &[RoleDef],
    previous: &[RoleDef],
) -> Result<(), etcd_client::Error> {
    let existing = client.role_list().await?;
    for role in def {
        if !existing.roles().iter().any(|r| r == &role.name) {
            client.role_add(role.name.as_str()).await?;
        }
        let have: Vec<Range> = client
            .role_get(role.name.as_str())
            .await?
            .permissions()
            .iter()
            .map(Range::of)
            .collect();
        let want = permissions(role);
        for extra in have.iter().filter(|r| !want.contains(r)) {
            let options = RoleRevokePermissionOptions::new().with_range_end(extra.end.clone());
            client
                .role_revoke_permission(role.name.as_str(), extra.key.clone(), Some(options))
                .await?;
        }
        for missing in want.iter().filter(|r| !have.contains(r)) {
            client
                .role_grant_permission(role.name.as_str(), missing.grant())
                .await?;
        }
    }
    for gone in previous
        .iter()
        .filter(|p| !def.iter().any(|r| r.name == p.name))
    {
        if existing.roles().iter().any(|r| r == &gone.name) {
            client.role_delete(gone.name.as_str()).await?;
        }
    }
    client
        .put(
            APPLIED_KEY,
            serde_json::to_vec(def).unwrap_or_default(),
            None,
        )
        .await?;
    tracing::info!(roles = %Agreement::Agreed(def.to_vec()).describe(), "etcd roles updated");
    Ok(())
}

#[cfg(test)]
mod tests;
