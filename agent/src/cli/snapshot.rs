//! `quorate snapshot list`: the local snapshot directory (no running agent needed) and, when
//! `[snapshot.s3]` is set, what the store holds.

use anyhow::Context;
use serde::Serialize;

use crate::config::Settings;
use crate::snapshot::list::{self, LocalEntry, RemoteLine, RemoteListing};
use crate::snapshot::remote::RemoteStore;

#[derive(Serialize)]
struct Listing {
    dir: String,
    local: Vec<LocalEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote: Option<RemoteJson>,
}

#[derive(Serialize)]
struct RemoteJson {
    location: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshots: Option<Vec<RemoteLine>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `quorate snapshot list [--json]`. Fails (after printing what it could) when the store
/// cannot be listed.
pub async fn snapshot_list(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let dir = &settings.snapshot.dir;
    let local = list::local(dir).with_context(|| {
        format!(
            "cannot read the snapshot directory {}; run as root or the agent's user",
            dir.display()
        )
    })?;
    let remote = match &settings.snapshot.s3 {
        None => None,
        Some(s3) => {
            let listed = match RemoteStore::new(s3) {
                Ok(store) => store.list().await,
                Err(e) => Err(e),
            };
            Some((s3.location(), listed.map_err(|e| e.describe())))
        }
    };
    if json {
        let listing = Listing {
            dir: dir.display().to_string(),
            local,
            remote: remote.as_ref().map(|(location, r)| RemoteJson {
                location: location.clone(),
                snapshots: r
                    .as_ref()
                    .ok()
                    .map(|entries| entries.iter().map(RemoteLine::from).collect()),
                error: r.as_ref().err().cloned(),
            }),
        };
        println!("{}", serde_json::to_string_pretty(&listing)?);
    } else {
        let view = match &remote {
            None => RemoteListing::Off,
            Some((location, Ok(entries))) => RemoteListing::Listed { location, entries },
            Some((location, Err(error))) => RemoteListing::Failed {
                location,
                error: error.clone(),
            },
        };
        print!("{}", list::render(dir, &local, &view));
    }
    if let Some((_, Err(e))) = remote {
        // The error names the store already ("listing s3://...: ...").
        anyhow::bail!("{e}");
    }
    Ok(())
}
