//! The agent API: certificate signing over TLS, authenticated by a proof of the join token.
//! See [`server`] for the issuer side and [`client`] for the requester side.

pub mod client;
pub mod proof;
pub mod server;
pub mod wire;

pub use client::{request_certificate, ApiClientError, CsrRequest, ServerTrust};
pub use server::{ApiMaterial, ApiServer};
pub use wire::{CertKind, SignRequest, SignResponse};
