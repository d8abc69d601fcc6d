//! Who signs certificates once the cluster exists, and where the CA key lives so that losing
//! the seed does not lose the ability to issue: sealed in etcd ([`sealed`]), used by the one
//! agent that holds the issuer lease ([`task`]).

pub mod crl;
pub mod issued;
pub mod reseal;
pub mod restored;
pub mod roles;
pub mod seal_secret;
pub mod sealed;
mod task;

pub use sealed::{SealedCa, UnsealError};
pub use task::{IssuerError, IssuerTask, CA_KEY, ISSUER_KEY};
