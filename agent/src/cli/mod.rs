//! The `quorate` command line: `run` starts the agent; the other commands are small clients
//! of the local agent (its health endpoint and its files) or of the issuer's API.

mod cert;
mod http;
mod local;
pub mod progress;
mod restore;
mod rolling;
mod save;
mod snapshot;
mod token;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use cert::{client_cert, revoke};
pub use local::{config_check, defrag, env, leave, status};
pub use restore::restore;
pub use rolling::{agent_restart, etcd_restart};
pub use save::snapshot_save;
pub use snapshot::snapshot_list;
pub use token::{client_token_create, token_rotate, token_show};

/// quorate: forms and keeps a mutual-TLS etcd cluster by itself.
#[derive(Debug, Parser)]
#[command(name = "quorate", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (default /etc/quorate/quorate.toml).
    #[arg(long, global = true, env = "QUORATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (what the systemd unit starts).
    Run,
    /// Show this node's status: phase, plan, gossip members, etcd, certificate.
    Status {
        /// Print the JSON report instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Join token commands.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Certificate commands.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Print ETCDCTL_* variables for talking to the local member with this node's certificate.
    Env,
    /// Remove this host's member from the cluster (refused if that would cost quorum), stop
    /// etcd and keep the host out until the agent is started again.
    Leave {
        /// Leave even if the cluster loses quorum or cannot be reached.
        #[arg(long)]
        force: bool,
    },
    /// Defragment every etcd member, one at a time, the leader last; refused while a voter is
    /// down. Prints each member's database size before and after.
    Defrag {
        /// Defragment the reachable members even while a voter is down.
        #[arg(long)]
        force: bool,
    },
    /// Restore the whole cluster from a snapshot: every member replaces its data with it
    /// (moving the old data aside) and the cluster starts again with a new cluster ID. Run on
    /// one voting member's host; without --yes it only says what would happen.
    Restore {
        /// A snapshot file on this host (.db, or .db.age with snapshot.encryption_key_file),
        /// or s3://BUCKET/KEY in the store of [snapshot.s3] (see quorate snapshot list).
        source: String,
        /// Really do it.
        #[arg(long)]
        yes: bool,
    },
    /// Restart this agent on the quorate binary now installed, one host at a time: the agent
    /// waits until it holds the member-down lock and every voter is healthy, then re-executes
    /// its binary (its etcd restarts with it). Returns at once. The package runs it after an
    /// upgrade, so upgrading every host at the same moment never takes two members down.
    Restart,
    /// etcd commands.
    Etcd {
        #[command(subcommand)]
        command: EtcdCommand,
    },
    /// Snapshot commands.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum EtcdCommand {
    /// Restart every etcd member on its current binary and flags, one at a time, each only
    /// while every voter is healthy (for a flag change that needs a restart).
    Restart {
        /// One member at a time (required: restarting all at once stops the cluster).
        #[arg(long)]
        rolling: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List the local snapshots (verified against their manifests) and, with [snapshot.s3],
    /// the store's. Needs no running agent.
    List {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Take a verified snapshot now (as the scheduled ones: same lock, naming, manifest and
    /// encryption). Without --out it is kept in the snapshot directory.
    Save {
        /// Write it to FILE instead (by this process, with your permissions).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and show what it resolves to.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random join token.
    Generate,
    /// On a member: print this cluster's join token in its pinned form,
    /// qrt1:sha256:<CA hash>:<token>. A new host given that form trusts only this cluster's
    /// CA, with no ca_hash in its config. Prints the secret: root or the service user only.
    Show {
        /// Print the client token instead (see `token create --client`).
        #[arg(long)]
        client: bool,
    },
    /// On a member: make the cluster's client token, which admits client-mode hosts only
    /// (client certificates; never a node certificate, membership or the CA), and print it in
    /// its pinned form. Members keep it in etcd, sealed with the join token.
    Create {
        /// Required: the join token is made with `token generate`, before the cluster exists.
        #[arg(long, required = true)]
        client: bool,
        /// Replace the existing client token: hosts holding the old one can no longer get
        /// certificates once the members read the new one (seconds).
        #[arg(long)]
        replace: bool,
    },
    /// On a member: install a new join token cluster-wide with no restart (the old one stays
    /// accepted until every member uses the new one) and print it in its pinned form. Rotate
    /// when a join token may have leaked; `quorate status` shows the rotation's progress.
    Rotate {
        /// Rotate to the token in this file (made with `token generate`) instead of a new
        /// random one.
        #[arg(long, value_name = "FILE")]
        token_file: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Get a client certificate (for etcdctl, Omni, kube-apiserver) signed by the cluster CA.
    Client {
        /// The client name (certificate CN).
        name: String,
        /// Directory to write ca.pem, NAME.pem and NAME-key.pem to.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// The etcd role NAME gets (one of the members' [[roles]]); without it, read and
        /// write everything outside /quorate/. NAME holds that role only afterwards, also
        /// with certificates issued to it before.
        #[arg(long)]
        role: Option<String>,
    },
    /// Revoke a certificate of this cluster by its serial number (hex, as `openssl x509
    /// -noout -serial` prints it), or every certificate issued under a name: every member's
    /// etcd then refuses new connections with them.
    Revoke {
        /// The certificate's serial number.
        #[arg(long, required_unless_present = "name", conflicts_with = "name")]
        serial: Option<String>,
        /// Every unexpired certificate issued under this name (node or client).
        #[arg(long)]
        name: Option<String>,
    },
}
