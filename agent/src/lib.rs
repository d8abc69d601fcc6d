//! quorate: a node agent that forms and keeps a mutual-TLS etcd cluster by itself.
//!
//! See docs/architecture.md for the tasks and phases; each module's header says its concern.

pub mod aead;
pub mod agent;
pub mod api;
pub mod cli;
pub mod client;
pub mod client_token;
pub mod clock;
pub mod config;
pub mod control;
pub mod defrag;
pub mod etcd;
pub mod fsutil;
pub mod gossip;
pub mod health;
pub mod http1;
pub mod issuer;
pub mod jobs;
pub mod keyring;
pub mod liveness;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod phase;
pub mod pki;
pub mod plan;
pub mod report;
pub mod restore;
pub mod rolling;
pub mod rotation;
pub mod snapshot;
pub mod token;
