//! Authorization: whether a connection's principal may do an operation on a resource.
//!
//! The ACLs themselves are replicated controller metadata
//! (`shardlog_replicator::controller::acls`); every shard reads them from its newest
//! cluster view, so an ACL added on the controller leader applies on every node as soon
//! as the node's view shows it. This file adds what is the node's own: whether
//! authorization is on (`--authorization`), the superusers (`--superusers`), and the
//! principal of a connection that has not authenticated (`User:ANONYMOUS`).
//!
//! Checks are cheap on the hot path: with authorization off a check is one branch; with
//! it on, a check clones the view's `Arc` and looks the principal's bindings up by name
//! (a borrowed `&str`), allocating nothing unless it refuses.

use std::sync::Arc;

use shardlog_replicator::controller::acls::{Acls, Operation, Resource, ResourceType};

use super::Session;
use crate::server::cluster::ClusterView;
use crate::server::ops::OpError;
use crate::server::shard::Shard;

/// The principal name of a connection that has not authenticated.
pub(crate) const ANONYMOUS: &str = "ANONYMOUS";

/// The node's authorization settings.
#[derive(Clone, Debug, Default)]
pub(crate) struct Authorizer {
    /// Whether requests are checked at all (`--authorization on`).
    enabled: bool,
    /// User names allowed everything.
    superusers: Vec<String>,
}

impl Authorizer {
    pub(crate) fn new(enabled: bool, superusers: Vec<String>) -> Authorizer {
        Authorizer {
            enabled,
            superusers,
        }
    }

    /// The decision, given the ACLs (`None`: the node has no cluster view yet, so none
    /// is known and only superusers pass) and the user name.
    fn decide(
        &self,
        acls: Option<&Acls>,
        user: &str,
        operation: Operation,
        resource: Resource<'_>,
    ) -> bool {
        !self.enabled
            || self.superusers.iter().any(|s| s == user)
            || acls.is_some_and(|acls| acls.allows(user, operation, resource))
    }
}

/// One request's access checks: the authorizer, the connection's session, and the view
/// the ACLs come from (taken once per request, so a request is judged by one set).
pub(crate) struct Access<'a> {
    authorizer: &'a Authorizer,
    session: &'a Session,
    view: Option<Arc<ClusterView>>,
}

impl<'a> Access<'a> {
    /// The checks of a request on `shard` from the connection of `session`.
    pub(crate) fn new(shard: &'a Shard, session: &'a Session) -> Access<'a> {
        let authorizer = &shard.node.authorizer;
        let view = authorizer.enabled.then(|| shard.cluster.view()).flatten();
        Access {
            authorizer,
            session,
            view,
        }
    }

    /// Whether requests are checked at all (authorization on).
    pub(crate) fn is_enforced(&self) -> bool {
        self.authorizer.enabled
    }

    /// Whether the connection may do `operation` on `resource`.
    pub(crate) fn allows(&self, operation: Operation, resource: Resource<'_>) -> bool {
        if !self.authorizer.enabled {
            return true;
        }
        let principal = self.session.principal.borrow();
        let user = principal.as_ref().map_or(ANONYMOUS, |p| p.0.as_str());
        let acls = self.view.as_ref().map(|v| v.metadata.acls());
        self.authorizer.decide(acls, user, operation, resource)
    }

    /// `Ok` if the connection may do `operation` on `resource`, else the error that says
    /// who may not do what.
    pub(crate) fn check(
        &self,
        operation: Operation,
        resource: Resource<'_>,
    ) -> Result<(), OpError> {
        if self.allows(operation, resource) {
            Ok(())
        } else {
            Err(self.refusal(operation, resource))
        }
    }

    /// Whether the connection may do `operation` on some topic, or on the cluster: what
    /// an idempotent producer's `InitProducerId` needs (Kafka's `IdempotentWrite` on the
    /// cluster, or since KIP-679 write on any topic; here write on the cluster or on any
    /// topic).
    pub(crate) fn allows_on_cluster_or_any_topic(&self, operation: Operation) -> bool {
        if self.allows(operation, Resource::Cluster) {
            return true;
        }
        let principal = self.session.principal.borrow();
        let user = principal.as_ref().map_or(ANONYMOUS, |p| p.0.as_str());
        self.view
            .as_ref()
            .is_some_and(|v| v.metadata.acls().allows_on_any_topic(user, operation))
    }

    /// The error for a refused `operation` on `resource`.
    pub(crate) fn refusal(&self, operation: Operation, resource: Resource<'_>) -> OpError {
        let principal = self.session.principal();
        let user = principal.as_ref().map_or(ANONYMOUS, |p| p.0.as_str());
        let (kind, what) = match resource {
            Resource::Topic(name) => (ResourceType::Topic, format!("topic {name}")),
            Resource::Group(name) => (ResourceType::Group, format!("group {name}")),
            Resource::Cluster => (ResourceType::Cluster, "the cluster".to_owned()),
        };
        let message = format!(
            "User:{user} is not authorized to {} {what} (no ACL allows it, or one denies it)",
            operation.name()
        );
        OpError::Unauthorized(kind, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shardlog_replicator::controller::acls::{AclBinding, PatternType, Permission};

    fn any_operation() -> impl Strategy<Value = Operation> {
        prop::sample::select(Operation::NAMES.map(|(_, op)| op).to_vec())
    }

    fn any_binding() -> impl Strategy<Value = AclBinding> {
        let principal = prop::sample::select(vec!["alice", "root", "*"]);
        let kind = prop::sample::select(vec![
            ResourceType::Topic,
            ResourceType::Group,
            ResourceType::Cluster,
        ]);
        let permission = prop::sample::select(vec![Permission::Allow, Permission::Deny]);
        (principal, kind, any_operation(), permission).prop_map(|(p, kind, op, perm)| AclBinding {
            principal: p.into(),
            resource_type: kind,
            pattern: PatternType::Literal,
            name: if kind == ResourceType::Cluster {
                String::new()
            } else {
                "a".into()
            },
            operation: op,
            permission: perm,
        })
    }

    fn any_resource() -> impl Strategy<Value = Resource<'static>> {
        prop::sample::select(vec![
            Resource::Topic("a"),
            Resource::Group("a"),
            Resource::Cluster,
        ])
    }

    proptest! {
        /// A superuser is allowed everything whatever the ACLs say (denies included);
        /// with authorization off everyone is; a user no ACL names is allowed nothing;
        /// before the node knows any ACL only superusers pass.
        #[test]
        fn superusers_always_and_strangers_never(
            bindings in prop::collection::vec(any_binding(), 0..16),
            operation in any_operation(),
            resource in any_resource(),
        ) {
            let mut acls = Acls::default();
            for b in &bindings {
                let _ = acls.add(b);
            }
            let on = Authorizer::new(true, vec!["root".into()]);
            prop_assert!(on.decide(Some(&acls), "root", operation, resource));
            prop_assert!(on.decide(None, "root", operation, resource));
            let wildcard_allows = bindings.iter().any(|b| {
                b.principal == "*" && b.permission == Permission::Allow
            });
            if !wildcard_allows {
                prop_assert!(!on.decide(Some(&acls), "stranger", operation, resource));
            }
            prop_assert!(!on.decide(None, "alice", operation, resource));
            let off = Authorizer::new(false, Vec::new());
            prop_assert!(off.decide(Some(&acls), "stranger", operation, resource));
            prop_assert!(off.decide(None, "stranger", operation, resource));
        }
    }

    #[test]
    fn anonymous_is_judged_by_its_own_acls() {
        let mut acls = Acls::default();
        let read_a = AclBinding {
            principal: ANONYMOUS.into(),
            resource_type: ResourceType::Topic,
            pattern: PatternType::Literal,
            name: "a".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        };
        acls.add(&read_a).unwrap();
        let on = Authorizer::new(true, Vec::new());
        assert!(on.decide(
            Some(&acls),
            ANONYMOUS,
            Operation::Read,
            Resource::Topic("a")
        ));
        assert!(!on.decide(
            Some(&acls),
            ANONYMOUS,
            Operation::Write,
            Resource::Topic("a")
        ));
        assert!(!on.decide(
            Some(&acls),
            ANONYMOUS,
            Operation::Read,
            Resource::Topic("b")
        ));
    }
}
