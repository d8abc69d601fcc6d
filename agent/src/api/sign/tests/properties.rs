//! Property tests of the signing decision (bounded cases).
use super::*;
use proptest::collection::vec;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Without the right proof, nothing about the body matters: refused as
    /// unauthenticated before any parsing.
    #[test]
    fn a_body_without_its_proof_is_refused_before_parsing(
        body in vec(any::<u8>(), 0..4096),
        proof in any::<String>(),
    ) {
        let v = three_nodes();
        prop_assert_eq!(decide(&ctx(&v), &body, &proof), Err(Refusal::Unauthenticated));
    }

    /// With a valid proof, arbitrary bytes are refused as such (or, if they happen to be
    /// a request, decided as one), never a panic.
    #[test]
    fn authenticated_garbage_is_refused_without_panic(body in vec(any::<u8>(), 0..4096)) {
        let v = three_nodes();
        let result = decide_body(&ctx(&v), &body);
        if result.is_ok() {
            prop_assert!(serde_json::from_slice::<SignRequest>(&body).is_ok());
        }
    }

    /// Well-formed requests with arbitrary names and kinds: a grant only for a valid
    /// client name or the requester's own gossip name.
    #[test]
    fn arbitrary_names_get_a_grant_only_by_the_rules(
        name in any::<String>(),
        node in any::<bool>(),
    ) {
        let v = three_nodes();
        let kind = if node { CertKind::Node } else { CertKind::Client };
        let result = decide_req(&ctx(&v), &request(&name, kind));
        if let Ok(grant) = result {
            prop_assert_eq!(&grant.name, &name);
            match kind {
                CertKind::Node => prop_assert_eq!(name.as_str(), "etcd-2"),
                CertKind::Client => prop_assert!(valid_client_name(&name)),
            }
        }
    }
}
