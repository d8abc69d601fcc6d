//! The agent API: certificate signing over TLS, authenticated by a proof of the join token.
//! See [`server`] for the issuer side, [`sign`] for what it grants or refuses, and [`client`]
//! for the requester side.

pub mod client;
pub mod proof;
pub mod server;
pub mod sign;
pub mod wire;

pub use client::{request_certificate, ApiClientError, CsrRequest, ServerTrust};
pub use server::{ApiMaterial, ApiServer};
pub use wire::{CertKind, SignRequest, SignResponse};
