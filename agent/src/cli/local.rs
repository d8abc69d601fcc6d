//! Commands that read the local agent: `config check`, `status`, `env`; and those that ask it
//! over the control socket: `leave`, `defrag`.

use anyhow::{bail, Context};

use super::http;
use crate::config::{Settings, Validated};
use crate::defrag::DefragStatus;
use crate::pki::PkiStore;
use crate::report::StatusReport;

/// `quorate config check`: prints what the configuration resolves to, and its warnings.
pub fn config_check(v: &Validated, path: Option<&std::path::Path>) {
    let s = &v.settings;
    println!(
        "configuration OK{}",
        path.map(|p| format!(" ({})", p.display()))
            .unwrap_or_default()
    );
    println!("  node name:        {}", s.name);
    if let Some(c) = &s.client {
        let join: Vec<String> = s.join.iter().map(ToString::to_string).collect();
        println!("  mode:             client (no etcd here; never a member)");
        println!("  join:             {}", join.join(", "));
        println!("  client name:      {}", c.name);
        println!("  files:            {}", c.dir.display());
        println!(
            "  on_change:        {}",
            c.on_change.as_deref().unwrap_or("-")
        );
        println!("  state dir:        {}", s.state_dir.display());
        println!("  health:           http://{}", s.health_listen);
        for w in &v.warnings {
            println!("warning: {w}");
        }
        return;
    }
    println!("  advertise:        {}", s.advertise);
    println!("  bind:             {}", s.bind);
    println!("  seed:             {}", s.seed);
    println!("  bootstrap_expect: {}", s.bootstrap_expect);
    let join: Vec<String> = s.join.iter().map(ToString::to_string).collect();
    println!(
        "  join:             {}",
        if join.is_empty() {
            "-".into()
        } else {
            join.join(", ")
        }
    );
    println!("  state dir:        {}", s.state_dir.display());
    println!(
        "  join token:       {}",
        match crate::keyring::resolve(&s.config_token, &s.state_dir) {
            Ok((ring, crate::keyring::Origin::Config)) => {
                format!("{} (the config's)", ring.primary().fingerprint())
            }
            Ok((ring, _)) => format!(
                "{} (rotated: kept in {})",
                ring.primary().fingerprint(),
                crate::keyring::path(&s.state_dir).display()
            ),
            Err(e) => format!("{} (the config's; {e})", s.config_token.fingerprint()),
        }
    );
    println!(
        "  etcd:             {} ({}.{}.{})",
        s.etcd.binary.display(),
        s.etcd.version.0,
        s.etcd.version.1,
        s.etcd.version.2
    );
    println!("  peer URL:         {}", s.peer_url());
    println!("  client URL:       {}", s.client_url());
    println!(
        "  gossip/API:       {}/udp, {}/tcp",
        s.gossip_bind(),
        s.api_bind()
    );
    println!("  health:           http://{}", s.health_listen);
    let x = &s.etcd.tuning;
    println!(
        "  etcd compaction:  {}",
        x.compaction_retention
            .map(|d| format!("periodic, keeps {}", humantime::format_duration(d)))
            .unwrap_or_else(|| "off".into())
    );
    println!(
        "  etcd quota:       {}",
        x.quota_backend_bytes
            .map(|b| format!("{} ({b} bytes)", crate::config::format_size(b)))
            .unwrap_or_else(|| "etcd's default".into())
    );
    println!(
        "  etcd metrics:     {}",
        x.metrics_listen
            .map(|a| format!("http://{a}/metrics"))
            .unwrap_or_else(|| "off".into())
    );
    if !x.operator.is_empty() {
        println!("  etcd extra args:  {}", x.operator.join(" "));
    }
    for w in &v.warnings {
        println!("warning: {w}");
    }
}

/// Fetches the local agent's status report.
pub async fn fetch_report(settings: &Settings) -> anyhow::Result<StatusReport> {
    let (code, body) = http::get(settings.health_listen, "/status")
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the local agent at http://{}/status: {e}. Is it running? \
                 (systemctl status quorate)",
                settings.health_listen
            )
        })?;
    if code != 200 {
        bail!("the local agent answered {code}: {body}");
    }
    serde_json::from_str(&body).context("the local agent's status report is not readable")
}

/// The defragmentation task's status, from the control socket (None when the socket cannot be
/// reached, e.g. without the rights for it).
async fn fetch_maintenance(settings: &Settings) -> Option<DefragStatus> {
    match crate::control::get_request(&settings.state_dir, "/v1/maintenance").await {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// `quorate status`.
pub async fn status(settings: &Settings, json: bool) -> anyhow::Result<()> {
    if settings.client.is_some() {
        return client_status(settings, json).await;
    }
    let mut report = fetch_report(settings).await?;
    if report.maintenance.is_none() {
        report.maintenance = fetch_maintenance(settings).await;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

/// `quorate status` on a client-mode host.
async fn client_status(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let (code, body) = http::get(settings.health_listen, "/status")
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the local client agent at http://{}/status: {e}. Is it running? \
                 (systemctl status quorate-client)",
                settings.health_listen
            )
        })?;
    if code != 200 {
        bail!("the local agent answered {code}: {body}");
    }
    let status: crate::client::ClientStatus =
        serde_json::from_str(&body).context("the local agent's status is not a client's")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(())
}

/// `quorate leave`.
pub async fn leave(settings: &Settings, force: bool) -> anyhow::Result<()> {
    control_post(
        settings,
        "/v1/leave",
        force,
        crate::control::REQUEST_TIMEOUT,
    )
    .await
}

/// `quorate defrag`.
pub async fn defrag(settings: &Settings, force: bool) -> anyhow::Result<()> {
    control_post(
        settings,
        "/v1/defrag",
        force,
        crate::control::DEFRAG_REQUEST_TIMEOUT,
    )
    .await
}

/// POSTs a command to the control socket; prints the answer or fails with it.
async fn control_post(
    settings: &Settings,
    path: &str,
    force: bool,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let path = if force {
        format!("{path}?force=true")
    } else {
        path.to_owned()
    };
    post_and_print(settings, &path, timeout).await
}

/// POSTs `path` to the local agent's control socket and prints its answer; a refusal is the
/// command's error.
pub(super) async fn post_and_print(
    settings: &Settings,
    path: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let (code, body) = crate::control::post_request(&settings.state_dir, path, timeout)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    if code == 200 {
        println!("{}", body.trim_end());
        Ok(())
    } else {
        bail!("{}", body.trim_end())
    }
}

/// `quorate env`: ETCDCTL_* for the local member, using this node's certificate.
pub async fn env(settings: &Settings) -> anyhow::Result<()> {
    let pki = PkiStore::new(settings.pki_dir());
    let mut endpoints: Vec<String> = match fetch_report(settings).await {
        Ok(r) => r
            .etcd
            .members
            .iter()
            .flat_map(|m| m.client_urls.iter().cloned())
            .collect(),
        Err(_) => Vec::new(),
    };
    if endpoints.is_empty() {
        endpoints.push(settings.client_url());
    }
    println!("export ETCDCTL_API=3");
    println!("export ETCDCTL_ENDPOINTS={}", endpoints.join(","));
    println!("export ETCDCTL_CACERT={}", pki.ca_cert_path().display());
    println!("export ETCDCTL_CERT={}", pki.node_cert_path().display());
    println!("export ETCDCTL_KEY={}", pki.node_key_path().display());
    Ok(())
}
