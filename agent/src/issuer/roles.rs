//! The issuer's half of `[[roles]]` (see [`crate::etcd::roles`]): when every started member
//! publishes the same definition and it differs from the one applied, etcd's roles are made to
//! match it. A conflict changes nothing here; every member reports it (`node::roles`).

use etcd_client::Client;

use crate::etcd::roles::{self, Agreement};

/// Compares the members' definitions and applies an agreed one that is not applied yet.
pub async fn reconcile(client: &mut Client) -> Result<(), etcd_client::Error> {
    let members: Vec<String> = client
        .member_list()
        .await?
        .members()
        .iter()
        .map(|m| m.name().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    let published = roles::published(client).await?;
    let applied = roles::applied(client).await?;
    if let Agreement::Applying(def) = roles::agree_applied(&members, &published, applied.as_deref())
    {
        roles::apply(client, &def, applied.as_deref().unwrap_or_default()).await?;
    }
    Ok(())
}
