//! etcd authentication. etcd maps a client certificate's common name to the etcd user of that
//! name, so every identity quorate hands out is a user without a password (certificate only):
//! - each agent's node name holds the `root` role (snapshots, defragmentation, membership and
//!   `/quorate/` need it), and so does the user `root`, which etcd requires before it enables
//!   authentication;
//! - every client certificate's name holds [`CLIENT_ROLE`]: read and write everything outside
//!   `/quorate/`.
//!
//! The issuer creates the users: for every member and for the registry's client certificates
//! before it enables authentication, and for each new certificate before handing it out.
//! Everything here is idempotent.

use etcd_client::{Client, Permission, UserAddOptions};

/// etcd's administrator role, and the user etcd requires to hold it.
pub const ROOT: &str = "root";
/// The role of every client certificate: everything outside `/quorate/`.
pub const CLIENT_ROLE: &str = "quorate-client";

/// The key ranges of [`CLIENT_ROLE`]: `["\0", "/quorate/")` and `["/quorate0", end)`. (An empty
/// start key matches nothing on 3.4 and is refused by 3.5: it must be `"\0"`.)
pub fn client_permissions() -> [Permission; 2] {
    [
        Permission::read_write(vec![0u8]).with_range_end("/quorate/"),
        Permission::read_write("/quorate0").with_from_key(),
    ]
}

/// Makes `name` a certificate-only user holding `role`.
pub async fn ensure_user(
    client: &mut Client,
    name: &str,
    role: &str,
) -> Result<(), etcd_client::Error> {
    let exists = user_exists(client, name).await?;
    grant_user(client, name, role, exists).await
}

/// Whether etcd has a user `name`.
pub async fn user_exists(client: &mut Client, name: &str) -> Result<bool, etcd_client::Error> {
    Ok(client.user_list().await?.users().iter().any(|u| u == name))
}

/// [`ensure_user`] when whether the user `exists` is known already (from one user list).
pub async fn grant_user(
    client: &mut Client,
    name: &str,
    role: &str,
    exists: bool,
) -> Result<(), etcd_client::Error> {
    if !exists {
        client
            .user_add(name, "", Some(UserAddOptions::new().with_no_pwd()))
            .await?;
        tracing::info!(user = name, role, "added an etcd user");
    }
    // Granting a role the user holds already is accepted and changes nothing.
    client.user_grant_role(name, role).await?;
    Ok(())
}

/// Makes `name` a certificate-only user holding `role` and no other role (a client name
/// reissued with another role loses the old one).
pub async fn set_only_role(
    client: &mut Client,
    name: &str,
    role: &str,
) -> Result<(), etcd_client::Error> {
    ensure_user(client, name, role).await?;
    let held = client.user_get(name).await?;
    for other in held.roles().iter().filter(|r| *r != role) {
        client.user_revoke_role(name, other.as_str()).await?;
    }
    Ok(())
}

/// The first role other than root that the existing user `name` holds: a name client
/// certificates were issued under.
pub async fn client_role_of(
    client: &mut Client,
    name: &str,
) -> Result<Option<String>, etcd_client::Error> {
    let held = client.user_get(name).await?;
    Ok(held.roles().iter().find(|r| *r != ROOT).cloned())
}

/// Makes sure the roles exist: `root`, and [`CLIENT_ROLE`] with its ranges.
pub async fn ensure_roles(client: &mut Client) -> Result<(), etcd_client::Error> {
    let roles = client.role_list().await?;
    let have = |r: &str| roles.roles().iter().any(|x| x == r);
    if !have(ROOT) {
        client.role_add(ROOT).await?;
    }
    if !have(CLIENT_ROLE) {
        client.role_add(CLIENT_ROLE).await?;
        for p in client_permissions() {
            client.role_grant_permission(CLIENT_ROLE, p).await?;
        }
    }
    Ok(())
}

/// The roles, and users for `root` and `agents` (root role) and `clients` (name and role: a
/// client keeps exactly that role). With `only_missing`, names that are users already are
/// left as they are (one request in all when nothing is missing); otherwise every grant is
/// made again. A client whose role etcd does not have (not applied yet, or gone from the
/// members' `[[roles]]`) is left out until it has.
pub async fn ensure_users(
    client: &mut Client,
    agents: &[String],
    clients: &[(String, String)],
    only_missing: bool,
) -> Result<(), etcd_client::Error> {
    let users = client.user_list().await?;
    let exists = |name: &str| users.users().iter().any(|u| u == name);
    let wanted_agents: Vec<&str> = std::iter::once(ROOT)
        .chain(agents.iter().map(String::as_str))
        .filter(|n| !n.is_empty())
        .filter(|n| !(only_missing && exists(n)))
        .collect();
    let wanted_clients: Vec<&(String, String)> = clients
        .iter()
        .filter(|(n, _)| !(only_missing && exists(n)))
        .collect();
    if wanted_agents.is_empty() && wanted_clients.is_empty() {
        return Ok(());
    }
    ensure_roles(client).await?;
    for name in wanted_agents {
        grant_user(client, name, ROOT, exists(name)).await?;
    }
    let roles = client.role_list().await?;
    for (name, role) in wanted_clients {
        if roles.roles().iter().any(|r| r == role) {
            set_only_role(client, name, role).await?;
        } else {
            tracing::debug!(user = %name, role = %role, "etcd user waits for its role");
        }
    }
    Ok(())
}
