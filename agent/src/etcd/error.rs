//! What went wrong talking to etcd, classified once. etcd-client hands back a tonic status (or a
//! transport error) whose text is a long chain; callers need to know what happened: nobody
//! listening, a timeout, or one of etcd's documented refusals. This module is the only place
//! that looks inside those errors: transport failures by the types in the error's source chain
//! (I/O error kinds, rustls, tonic's connect and timeout markers), server refusals by etcd's
//! error strings, which etcd's own Go client matches exactly the same way
//! (`api/v3rpc/rpctypes/error.go`). Everyone else matches on [`EtcdError`] variants.

use std::error::Error as StdError;
use std::io;

use tonic::Code;

/// Why one request to etcd failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// No connection to the member: nothing listens, connecting timed out, or TLS failed.
    #[error("{0}")]
    Unreachable(ConnectFailure),
    /// The request got no answer in time (client deadline, or etcd's "request timed out").
    #[error("request timed out")]
    Timeout,
    /// "etcdserver: not leader".
    #[error("the member is not the leader")]
    NotLeader,
    /// "etcdserver: no leader".
    #[error("the cluster has no leader (no quorum?)")]
    NoLeader,
    /// "etcdserver: leader changed".
    #[error("the leader changed during the request")]
    LeaderChanged,
    /// "etcdserver: can only promote a learner member which is in sync with leader".
    #[error("the learner has not caught up with the leader yet")]
    LearnerNotReady,
    /// "etcdserver: can only promote a learner member" (the member is a voter already).
    #[error("the member is not a learner (already a voting member?)")]
    NotALearner,
    /// "etcdserver: too many learner members in cluster".
    #[error("another member is joining as a learner; etcd allows one at a time")]
    TooManyLearners,
    /// "etcdserver: unhealthy cluster".
    #[error(
        "the cluster is not ready for a membership change (etcd waits until the leader has been \
         connected to every voting member for 5 s)"
    )]
    UnhealthyCluster,
    /// "etcdserver: mvcc: database space exceeded".
    #[error(
        "etcd's database is full (NOSPACE alarm): compact and defragment it, then run \
         `etcdctl alarm disarm`"
    )]
    NoSpace,
    /// "etcdserver: member not found".
    #[error("no such member")]
    MemberNotFound,
    /// "etcdserver: requested lease not found".
    #[error("the lease has expired or does not exist")]
    LeaseNotFound,
    /// "etcdserver: rpc not supported for learner".
    #[error("a learner cannot serve this request")]
    NotSupportedForLearner,
    /// Any other gRPC status, with etcd's own message.
    #[error("{message} (gRPC {code:?})")]
    Other { code: Code, message: String },
    /// An error of the client itself (bad endpoint URL, TLS configuration), not of etcd.
    #[error("{0}")]
    Client(String),
}

/// Why no connection to a member could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectFailure {
    #[error("connection refused (etcd is not listening)")]
    Refused,
    #[error("connecting timed out (host down, or traffic dropped on the way?)")]
    TimedOut,
    /// The TLS handshake failed (wrong CA, expired or rejected certificate); rustls's reason.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// Any other connection failure (network unreachable, connection reset); the OS's reason.
    #[error("cannot connect: {0}")]
    Other(String),
}

impl EtcdError {
    /// Classifies an etcd-client error.
    pub fn classify(e: &etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        let chain_start: Option<&(dyn StdError + 'static)> = match e {
            E::GRpcStatus(status) => Some(status),
            E::TransportError(t) => Some(t),
            E::IoError(io) => Some(io),
            _ => None,
        };
        if let Some(kind) = chain_start.and_then(transport_failure) {
            return kind;
        }
        match e {
            E::GRpcStatus(status) => from_status(status.code(), status.message()),
            // etcd-client's own words when a keep-alive answers with a zero TTL.
            E::LeaseKeepAliveError(m) if m == "lease not found" => EtcdError::LeaseNotFound,
            other => EtcdError::Client(other.to_string()),
        }
    }

    /// The request did not get to a member that could answer it: another endpoint may.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, EtcdError::Unreachable(_) | EtcdError::Timeout)
    }
}

impl From<etcd_client::Error> for EtcdError {
    fn from(e: etcd_client::Error) -> Self {
        EtcdError::classify(&e)
    }
}

/// etcd's documented error strings (rpctypes), by the variant they mean. Matched exactly: "can
/// only promote a learner member" is a prefix of the learner-not-ready message.
const ETCD_ERRORS: &[(&str, EtcdError)] = &[
    ("etcdserver: not leader", EtcdError::NotLeader),
    ("etcdserver: no leader", EtcdError::NoLeader),
    ("etcdserver: leader changed", EtcdError::LeaderChanged),
    ("etcdserver: request timed out", EtcdError::Timeout),
    (
        "etcdserver: request timed out, possibly due to previous leader failure",
        EtcdError::Timeout,
    ),
    (
        "etcdserver: request timed out, possibly due to connection lost",
        EtcdError::Timeout,
    ),
    (
        "etcdserver: request timed out, leader transfer took too long",
        EtcdError::Timeout,
    ),
    (
        "etcdserver: can only promote a learner member which is in sync with leader",
        EtcdError::LearnerNotReady,
    ),
    (
        "etcdserver: can only promote a learner member",
        EtcdError::NotALearner,
    ),
    (
        "etcdserver: too many learner members in cluster",
        EtcdError::TooManyLearners,
    ),
    ("etcdserver: unhealthy cluster", EtcdError::UnhealthyCluster),
    (
        "etcdserver: mvcc: database space exceeded",
        EtcdError::NoSpace,
    ),
    ("etcdserver: member not found", EtcdError::MemberNotFound),
    (
        "etcdserver: requested lease not found",
        EtcdError::LeaseNotFound,
    ),
    (
        "etcdserver: rpc not supported for learner",
        EtcdError::NotSupportedForLearner,
    ),
];

/// A gRPC status that carries no transport failure: one of etcd's refusals, or another status.
fn from_status(code: Code, message: &str) -> EtcdError {
    if let Some((_, kind)) = ETCD_ERRORS.iter().find(|(m, _)| *m == message) {
        return kind.clone();
    }
    match code {
        Code::DeadlineExceeded => EtcdError::Timeout,
        _ => EtcdError::Other {
            code,
            message: message.to_owned(),
        },
    }
}

/// Looks through the source chain for why no answer came: a refused or timed-out connection,
/// a TLS failure, tonic's request deadline. `None` when the failure is not a transport one.
fn transport_failure(top: &(dyn StdError + 'static)) -> Option<EtcdError> {
    let mut connecting = false;
    let mut innermost = top;
    let mut next = Some(top);
    while let Some(err) = next {
        if err.is::<tonic::TimeoutExpired>() {
            return Some(EtcdError::Timeout);
        }
        if err.is::<tonic::ConnectError>() {
            connecting = true;
        }
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(EtcdError::Unreachable(ConnectFailure::Tls(tls.to_string())));
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            // tokio-rustls reports a failed handshake as an I/O error around the rustls error,
            // and io::Error::source skips that inner error.
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(EtcdError::Unreachable(ConnectFailure::Tls(tls.to_string())));
            }
            if let Some(failure) = io_failure(io) {
                return Some(EtcdError::Unreachable(failure));
            }
        }
        innermost = err;
        next = err.source();
    }
    connecting.then(|| EtcdError::Unreachable(ConnectFailure::Other(innermost.to_string())))
}

fn io_failure(e: &io::Error) -> Option<ConnectFailure> {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => Some(ConnectFailure::Refused),
        K::TimedOut => Some(ConnectFailure::TimedOut),
        K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::BrokenPipe
        | K::UnexpectedEof
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::AddrNotAvailable => Some(ConnectFailure::Other(e.to_string())),
        _ => None,
    }
}

/// A failed operation on the cluster as a whole (tried on its members one at a time).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no etcd endpoint of the cluster is known yet")]
    NoEndpoints,
    #[error("no certificate to talk to etcd with")]
    NoCertificate,
    /// No endpoint answered; the last one tried and why.
    #[error("cannot reach the cluster at {endpoints} for {op}: {endpoint}: {error}")]
    Unreachable {
        op: &'static str,
        endpoints: String,
        endpoint: String,
        error: EtcdError,
    },
    /// A member answered and refused (another member would say the same).
    #[error("etcd at {endpoint} refused {op}: {error}")]
    Refused {
        op: &'static str,
        endpoint: String,
        error: EtcdError,
    },
}

impl ClusterError {
    /// etcd's answer while a learner has not caught up with the leader yet.
    pub fn is_learner_not_ready(&self) -> bool {
        matches!(
            self,
            ClusterError::Refused {
                error: EtcdError::LearnerNotReady,
                ..
            }
        )
    }

    /// A refusal that passes by itself: etcd accepts membership changes only once the leader
    /// has been connected to every voter for 5 s, one learner at a time, and promotes a
    /// learner only once it has caught up.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClusterError::Refused {
                error: EtcdError::UnhealthyCluster
                    | EtcdError::TooManyLearners
                    | EtcdError::LearnerNotReady,
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    fn status(code: Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(Status::new(code, message))
    }

    /// A status as tonic builds it from a failed connection (the cause kept as its source).
    fn connect_failure(cause: Box<dyn StdError + Send + Sync>) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(Status::from_error(Box::new(tonic::ConnectError(cause))))
    }

    #[test]
    fn etcd_refusals_by_their_documented_strings() {
        let cases = [
            (
                Code::Unavailable,
                "etcdserver: unhealthy cluster",
                EtcdError::UnhealthyCluster,
            ),
            (
                Code::FailedPrecondition,
                "etcdserver: too many learner members in cluster",
                EtcdError::TooManyLearners,
            ),
            (
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
                EtcdError::LearnerNotReady,
            ),
            (
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member",
                EtcdError::NotALearner,
            ),
            (
                Code::FailedPrecondition,
                "etcdserver: not leader",
                EtcdError::NotLeader,
            ),
            (
                Code::Unavailable,
                "etcdserver: no leader",
                EtcdError::NoLeader,
            ),
            (
                Code::Unavailable,
                "etcdserver: leader changed",
                EtcdError::LeaderChanged,
            ),
            (
                Code::Unavailable,
                "etcdserver: request timed out",
                EtcdError::Timeout,
            ),
            (
                Code::Unavailable,
                "etcdserver: request timed out, possibly due to previous leader failure",
                EtcdError::Timeout,
            ),
            (
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
                EtcdError::NoSpace,
            ),
            (
                Code::NotFound,
                "etcdserver: member not found",
                EtcdError::MemberNotFound,
            ),
            (
                Code::NotFound,
                "etcdserver: requested lease not found",
                EtcdError::LeaseNotFound,
            ),
            (
                Code::Unavailable,
                "etcdserver: rpc not supported for learner",
                EtcdError::NotSupportedForLearner,
            ),
        ];
        for (code, message, want) in cases {
            assert_eq!(
                EtcdError::classify(&status(code, message)),
                want,
                "{message}"
            );
        }
    }

    #[test]
    fn unknown_statuses_keep_etcds_message() {
        let e = EtcdError::classify(&status(
            Code::FailedPrecondition,
            "etcdserver: re-configuration failed due to not enough started members",
        ));
        assert_eq!(
            e,
            EtcdError::Other {
                code: Code::FailedPrecondition,
                message: "etcdserver: re-configuration failed due to not enough started members"
                    .into()
            }
        );
        assert!(e.to_string().contains("not enough started members"), "{e}");
        // A prefix or suffix of a known string is not that error.
        assert!(matches!(
            EtcdError::classify(&status(Code::Unavailable, "etcdserver: unhealthy cluster!")),
            EtcdError::Other { .. }
        ));
        assert_eq!(
            EtcdError::classify(&status(Code::DeadlineExceeded, "context deadline exceeded")),
            EtcdError::Timeout
        );
    }

    #[test]
    fn transport_failures_by_type() {
        let refused = connect_failure(Box::new(io::Error::from(io::ErrorKind::ConnectionRefused)));
        assert_eq!(
            EtcdError::classify(&refused),
            EtcdError::Unreachable(ConnectFailure::Refused)
        );
        let slow = connect_failure(Box::new(io::Error::new(
            io::ErrorKind::TimedOut,
            "deadline has elapsed",
        )));
        assert_eq!(
            EtcdError::classify(&slow),
            EtcdError::Unreachable(ConnectFailure::TimedOut)
        );
        let tls = connect_failure(Box::new(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        )));
        assert!(matches!(
            EtcdError::classify(&tls),
            EtcdError::Unreachable(ConnectFailure::Tls(why)) if why.contains("UnknownIssuer")
        ));
        // A connect failure of another kind (name resolution, say) is still unreachable.
        let other = connect_failure("failed to lookup address information".into());
        assert_eq!(
            EtcdError::classify(&other),
            EtcdError::Unreachable(ConnectFailure::Other(
                "failed to lookup address information".into()
            ))
        );
        let deadline =
            etcd_client::Error::GRpcStatus(Status::from_error(Box::new(tonic::TimeoutExpired(()))));
        assert_eq!(EtcdError::classify(&deadline), EtcdError::Timeout);
        let io = etcd_client::Error::IoError(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(
            EtcdError::classify(&io),
            EtcdError::Unreachable(ConnectFailure::Refused)
        );
        assert!(EtcdError::classify(&refused).is_unreachable());
        assert!(EtcdError::Timeout.is_unreachable());
        assert!(!EtcdError::NoLeader.is_unreachable());
    }

    #[test]
    fn client_errors_are_not_etcds() {
        let e = EtcdError::classify(&etcd_client::Error::InvalidArgs("empty endpoints".into()));
        assert_eq!(
            e,
            EtcdError::Client("invalid arguments: empty endpoints".into())
        );
        assert!(!e.is_unreachable());
    }

    #[test]
    fn operator_messages() {
        assert_eq!(
            EtcdError::Unreachable(ConnectFailure::Refused).to_string(),
            "connection refused (etcd is not listening)"
        );
        let e = ClusterError::Refused {
            op: "member add",
            endpoint: "https://10.0.0.1:2379".into(),
            error: EtcdError::TooManyLearners,
        };
        assert_eq!(
            e.to_string(),
            "etcd at https://10.0.0.1:2379 refused member add: another member is joining as a \
             learner; etcd allows one at a time"
        );
    }

    #[test]
    fn transient_refusals() {
        let refused = |error| ClusterError::Refused {
            op: "member promote",
            endpoint: "e".into(),
            error,
        };
        assert!(refused(EtcdError::LearnerNotReady).is_learner_not_ready());
        assert!(refused(EtcdError::LearnerNotReady).is_transient());
        assert!(refused(EtcdError::UnhealthyCluster).is_transient());
        assert!(refused(EtcdError::TooManyLearners).is_transient());
        assert!(!refused(EtcdError::NotALearner).is_learner_not_ready());
        assert!(!refused(EtcdError::NotALearner).is_transient());
        assert!(!refused(EtcdError::NoLeader).is_transient());
        let unreachable = ClusterError::Unreachable {
            op: "member promote",
            endpoints: "e".into(),
            endpoint: "e".into(),
            error: EtcdError::LearnerNotReady,
        };
        assert!(!unreachable.is_transient() && !unreachable.is_learner_not_ready());
        assert!(!ClusterError::NoEndpoints.is_transient());
    }
}
