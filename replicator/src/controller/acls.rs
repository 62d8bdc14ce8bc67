//! Access control lists: who may do what to which resource, kept in the controller's
//! replicated metadata so every node authorizes against the same bindings.
//!
//! A binding ([`AclBinding`]) names a principal (a user name, or `*` for every user), a
//! resource pattern (a topic or group by literal name or by prefix, or the cluster), an
//! operation and allow or deny. [`Acls::allows`] decides a request, Kafka's way:
//!
//! - a deny that matches wins over any allow;
//! - nothing is allowed that no allow matches;
//! - an allow of read, write, delete or alter also allows describe (Kafka's implied
//!   operations); a deny implies nothing beyond itself (a deny of `all` denies all).
//!
//! Bindings are indexed by principal name, so a decision looks at the principal's own
//! bindings and the wildcard's only, and allocates nothing.

use std::collections::BTreeMap;

/// Most bindings the metadata holds.
pub const MAX_ACLS: usize = 10_000;
/// Longest principal name (without `User:`).
pub const MAX_PRINCIPAL_NAME: usize = 255;
/// Longest resource name or prefix (a topic's limit is 249, a group's is set here).
pub const MAX_RESOURCE_NAME: usize = 255;
/// The principal name that matches every user.
pub const WILDCARD_PRINCIPAL: &str = "*";
/// The literal resource name that matches every resource of its kind (Kafka's `*`).
pub const WILDCARD_RESOURCE: &str = "*";

/// The bound types (and their rkyv archives, whose resolvers carry no docs).
mod wire {
    #![allow(missing_docs)]

    /// What an ACL protects.
    #[derive(
        Clone,
        Copy,
        Debug,
        PartialEq,
        Eq,
        PartialOrd,
        Ord,
        Hash,
        rkyv::Archive,
        rkyv::Serialize,
        rkyv::Deserialize,
    )]
    pub enum ResourceType {
        /// A topic.
        Topic,
        /// A consumer group.
        Group,
        /// The cluster itself (creating topics, admin requests).
        Cluster,
    }

    /// How a binding's resource name matches.
    #[derive(
        Clone,
        Copy,
        Debug,
        PartialEq,
        Eq,
        PartialOrd,
        Ord,
        Hash,
        rkyv::Archive,
        rkyv::Serialize,
        rkyv::Deserialize,
    )]
    pub enum PatternType {
        /// The name itself (`*`: every resource of the type).
        Literal,
        /// Every name that starts with it.
        Prefixed,
    }

    /// What a request does to a resource.
    #[derive(
        Clone,
        Copy,
        Debug,
        PartialEq,
        Eq,
        PartialOrd,
        Ord,
        Hash,
        rkyv::Archive,
        rkyv::Serialize,
        rkyv::Deserialize,
    )]
    pub enum Operation {
        /// Every operation.
        All,
        /// Fetch from a topic; join or commit in a group.
        Read,
        /// Produce to a topic.
        Write,
        /// Create a topic.
        Create,
        /// Delete a topic.
        Delete,
        /// See a topic, a group or the cluster (metadata, offsets, configs).
        Describe,
        /// Change a topic's configuration; admin changes to the cluster.
        Alter,
    }

    /// Allow or deny.
    #[derive(
        Clone,
        Copy,
        Debug,
        PartialEq,
        Eq,
        PartialOrd,
        Ord,
        Hash,
        rkyv::Archive,
        rkyv::Serialize,
        rkyv::Deserialize,
    )]
    pub enum Permission {
        /// The binding allows the operation.
        Allow,
        /// The binding denies it, whatever allows it.
        Deny,
    }

    /// One ACL.
    #[derive(
        Clone,
        Debug,
        PartialEq,
        Eq,
        PartialOrd,
        Ord,
        Hash,
        rkyv::Archive,
        rkyv::Serialize,
        rkyv::Deserialize,
    )]
    pub struct AclBinding {
        /// The user name (without `User:`), or `*` for every user.
        pub principal: String,
        /// What kind of resource.
        pub resource_type: ResourceType,
        /// How `name` matches.
        pub pattern: PatternType,
        /// The resource name or prefix; empty for the cluster.
        pub name: String,
        /// The operation.
        pub operation: Operation,
        /// Allow or deny.
        pub permission: Permission,
    }
}

pub use wire::{AclBinding, Operation, PatternType, Permission, ResourceType};

impl Operation {
    /// Every operation, by name, for parsing and display.
    pub const NAMES: [(&'static str, Operation); 7] = [
        ("all", Operation::All),
        ("read", Operation::Read),
        ("write", Operation::Write),
        ("create", Operation::Create),
        ("delete", Operation::Delete),
        ("describe", Operation::Describe),
        ("alter", Operation::Alter),
    ];

    /// The lower-case name.
    #[must_use]
    pub fn name(self) -> &'static str {
        Operation::NAMES
            .iter()
            .find(|(_, op)| *op == self)
            .map_or("?", |(name, _)| name)
    }

    /// The operation named `name` (case-insensitive).
    #[must_use]
    pub fn parse(name: &str) -> Option<Operation> {
        Operation::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, op)| *op)
    }

    /// Whether an allow of `self` allows `wanted`: the same, `all`, or describe implied
    /// by read, write, delete or alter (Kafka's implied operations).
    fn allow_covers(self, wanted: Operation) -> bool {
        self == wanted
            || self == Operation::All
            || (wanted == Operation::Describe
                && matches!(
                    self,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ))
    }

    /// Whether a deny of `self` denies `wanted`: the same or `all`, nothing implied.
    fn deny_covers(self, wanted: Operation) -> bool {
        self == wanted || self == Operation::All
    }
}

/// The resource a request acts on, borrowed from the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource<'a> {
    /// A topic by name.
    Topic(&'a str),
    /// A group by id.
    Group(&'a str),
    /// The cluster.
    Cluster,
}

impl AclBinding {
    /// Checks the binding's bounds: names not empty, not too long, printable ASCII
    /// without spaces (so `list` prints them unambiguously); the cluster has no name.
    pub fn validate(&self) -> Result<(), &'static str> {
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if self.principal.is_empty() || self.principal.len() > MAX_PRINCIPAL_NAME {
            return Err("principal name: 1 to 255 bytes");
        }
        if !printable(&self.principal) {
            return Err("principal name: printable ASCII without spaces");
        }
        match self.resource_type {
            ResourceType::Cluster => {
                if !self.name.is_empty() || self.pattern != PatternType::Literal {
                    return Err("the cluster resource has no name or prefix");
                }
            }
            ResourceType::Topic | ResourceType::Group => {
                if self.name.is_empty() || self.name.len() > MAX_RESOURCE_NAME {
                    return Err("resource name: 1 to 255 bytes");
                }
                if !printable(&self.name) {
                    return Err("resource name: printable ASCII without spaces");
                }
            }
        }
        Ok(())
    }

    /// Whether the binding's resource pattern covers `resource`.
    #[must_use]
    pub fn matches(&self, resource: Resource<'_>) -> bool {
        let (kind, name) = match resource {
            Resource::Topic(name) => (ResourceType::Topic, name),
            Resource::Group(name) => (ResourceType::Group, name),
            Resource::Cluster => (ResourceType::Cluster, ""),
        };
        if kind != self.resource_type {
            return false;
        }
        match (kind, self.pattern) {
            (ResourceType::Cluster, _) => true,
            (_, PatternType::Literal) => self.name == name || self.name == WILDCARD_RESOURCE,
            (_, PatternType::Prefixed) => name.starts_with(self.name.as_str()),
        }
    }
}

impl std::fmt::Display for AclBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let permission = match self.permission {
            Permission::Allow => "allow",
            Permission::Deny => "deny",
        };
        let resource = match (self.resource_type, self.pattern) {
            (ResourceType::Cluster, _) => "cluster".to_owned(),
            (ResourceType::Topic, PatternType::Literal) => format!("topic {}", self.name),
            (ResourceType::Topic, PatternType::Prefixed) => format!("topic prefix {}", self.name),
            (ResourceType::Group, PatternType::Literal) => format!("group {}", self.name),
            (ResourceType::Group, PatternType::Prefixed) => format!("group prefix {}", self.name),
        };
        write!(
            f,
            "User:{} {permission} {} on {resource}",
            self.principal,
            self.operation.name()
        )
    }
}

/// Why an ACL change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// The binding breaks a bound.
    #[error("invalid ACL: {0}")]
    Invalid(&'static str),
    /// The metadata holds [`MAX_ACLS`] bindings already.
    #[error("{MAX_ACLS} ACLs exist already")]
    TooMany,
    /// Adding a binding that exists, or removing one that does not.
    #[error("no change")]
    NoChange,
}

/// Every binding, indexed by principal name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acls {
    by_principal: BTreeMap<String, Vec<AclBinding>>,
    count: usize,
}

impl Acls {
    /// Adds a binding (validated; at most [`MAX_ACLS`]).
    pub fn add(&mut self, binding: &AclBinding) -> Result<(), AclError> {
        binding.validate().map_err(AclError::Invalid)?;
        let own = self.by_principal.get(&binding.principal);
        if own.is_some_and(|own| own.contains(binding)) {
            return Err(AclError::NoChange);
        }
        if self.count >= MAX_ACLS {
            return Err(AclError::TooMany);
        }
        self.by_principal
            .entry(binding.principal.clone())
            .or_default()
            .push(binding.clone());
        self.count += 1;
        Ok(())
    }

    /// Removes a binding equal to `binding`.
    pub fn remove(&mut self, binding: &AclBinding) -> Result<(), AclError> {
        let own = self
            .by_principal
            .get_mut(&binding.principal)
            .ok_or(AclError::NoChange)?;
        let index = own
            .iter()
            .position(|b| b == binding)
            .ok_or(AclError::NoChange)?;
        own.remove(index);
        if own.is_empty() {
            self.by_principal.remove(&binding.principal);
        }
        self.count -= 1;
        Ok(())
    }

    /// How many bindings there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every binding, by principal, in the order added.
    pub fn iter(&self) -> impl Iterator<Item = &AclBinding> {
        self.by_principal.values().flatten()
    }

    /// Whether the bindings let user `principal` (a name, without `User:`) do `operation`
    /// on `resource`: see the module docs. Superusers are the caller's business.
    #[must_use]
    pub fn allows(&self, principal: &str, operation: Operation, resource: Resource<'_>) -> bool {
        let own = self.by_principal.get(principal);
        let wildcard = self.by_principal.get(WILDCARD_PRINCIPAL);
        let candidates = || {
            own.into_iter()
                .chain(wildcard)
                .flatten()
                .filter(|b| b.matches(resource))
        };
        let denied = candidates()
            .any(|b| b.permission == Permission::Deny && b.operation.deny_covers(operation));
        !denied
            && candidates()
                .any(|b| b.permission == Permission::Allow && b.operation.allow_covers(operation))
    }

    /// Whether user `principal` may do `operation` on some topic (any topic an allow
    /// names by literal or prefix, unless a deny covers that very pattern): what an
    /// idempotent producer's `InitProducerId` needs, as in Kafka since KIP-679.
    #[must_use]
    pub fn allows_on_any_topic(&self, principal: &str, operation: Operation) -> bool {
        let own = self.by_principal.get(principal);
        let wildcard = self.by_principal.get(WILDCARD_PRINCIPAL);
        let bindings = || own.into_iter().chain(wildcard).flatten();
        bindings().any(|allow| {
            allow.permission == Permission::Allow
                && allow.resource_type == ResourceType::Topic
                && allow.operation.allow_covers(operation)
                && self.allows(principal, operation, Resource::Topic(&allow.name))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn binding(
        principal: &str,
        resource: (ResourceType, PatternType, &str),
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            principal: principal.into(),
            resource_type: resource.0,
            pattern: resource.1,
            name: resource.2.into(),
            operation,
            permission,
        }
    }

    fn topic(name: &str) -> (ResourceType, PatternType, &str) {
        (ResourceType::Topic, PatternType::Literal, name)
    }

    #[test]
    fn nothing_is_allowed_without_an_acl() {
        let acls = Acls::default();
        assert!(!acls.allows("alice", Operation::Read, Resource::Topic("a")));
        assert!(!acls.allows("alice", Operation::Describe, Resource::Cluster));
    }

    #[test]
    fn read_allows_read_and_describe_only() {
        let mut acls = Acls::default();
        let read_a = binding("alice", topic("a"), Operation::Read, Permission::Allow);
        acls.add(&read_a).unwrap();
        assert!(acls.allows("alice", Operation::Read, Resource::Topic("a")));
        assert!(acls.allows("alice", Operation::Describe, Resource::Topic("a")));
        assert!(!acls.allows("alice", Operation::Write, Resource::Topic("a")));
        assert!(!acls.allows("alice", Operation::Read, Resource::Topic("b")));
        assert!(!acls.allows("alice", Operation::Read, Resource::Group("a")));
        assert!(!acls.allows("bob", Operation::Read, Resource::Topic("a")));
        assert!(acls.allows_on_any_topic("alice", Operation::Read));
        assert!(!acls.allows_on_any_topic("alice", Operation::Write));
    }

    #[test]
    fn prefix_wildcards_and_deny() {
        let mut acls = Acls::default();
        let prefixed = (ResourceType::Topic, PatternType::Prefixed, "logs-");
        acls.add(&binding("*", prefixed, Operation::All, Permission::Allow))
            .unwrap();
        acls.add(&binding(
            "bob",
            topic("logs-secret"),
            Operation::Read,
            Permission::Deny,
        ))
        .unwrap();
        assert!(acls.allows("alice", Operation::Write, Resource::Topic("logs-x")));
        assert!(!acls.allows("alice", Operation::Write, Resource::Topic("logs")));
        assert!(acls.allows("bob", Operation::Read, Resource::Topic("logs-x")));
        assert!(!acls.allows("bob", Operation::Read, Resource::Topic("logs-secret")));
        // A deny of read implies no deny of describe.
        assert!(acls.allows("bob", Operation::Describe, Resource::Topic("logs-secret")));
        let every = topic(WILDCARD_RESOURCE);
        acls.add(&binding(
            "carol",
            every,
            Operation::Describe,
            Permission::Allow,
        ))
        .unwrap();
        assert!(acls.allows("carol", Operation::Describe, Resource::Topic("z")));
        assert!(!acls.allows("carol", Operation::Describe, Resource::Group("z")));
        // A deny on the one topic an allow names leaves no topic to write.
        let mut acls = Acls::default();
        acls.add(&binding(
            "dave",
            topic("t"),
            Operation::Write,
            Permission::Allow,
        ))
        .unwrap();
        assert!(acls.allows_on_any_topic("dave", Operation::Write));
        acls.add(&binding(
            "dave",
            topic("t"),
            Operation::All,
            Permission::Deny,
        ))
        .unwrap();
        assert!(!acls.allows_on_any_topic("dave", Operation::Write));
    }

    #[test]
    fn add_remove_and_bounds() {
        let mut acls = Acls::default();
        let b = binding("alice", topic("a"), Operation::Read, Permission::Allow);
        acls.add(&b).unwrap();
        assert_eq!(acls.add(&b), Err(AclError::NoChange));
        assert_eq!(acls.len(), 1);
        acls.remove(&b).unwrap();
        assert_eq!(acls.remove(&b), Err(AclError::NoChange));
        assert!(acls.is_empty());
        let long = "x".repeat(MAX_RESOURCE_NAME + 1);
        let bad = [
            binding("", topic("a"), Operation::Read, Permission::Allow),
            binding("a b", topic("a"), Operation::Read, Permission::Allow),
            binding("alice", topic(""), Operation::Read, Permission::Allow),
            binding("alice", topic(&long), Operation::Read, Permission::Allow),
            binding(
                "alice",
                (ResourceType::Cluster, PatternType::Literal, "c"),
                Operation::Alter,
                Permission::Allow,
            ),
        ];
        for b in &bad {
            assert!(matches!(acls.add(b), Err(AclError::Invalid(_))), "{b:?}");
        }
        for i in 0..MAX_ACLS {
            let name = format!("t{i}");
            acls.add(&binding(
                "alice",
                topic(&name),
                Operation::Read,
                Permission::Allow,
            ))
            .unwrap();
        }
        let one_more = binding("bob", topic("a"), Operation::Read, Permission::Allow);
        assert_eq!(acls.add(&one_more), Err(AclError::TooMany));
    }

    fn any_operation() -> impl Strategy<Value = Operation> {
        prop::sample::select(Operation::NAMES.map(|(_, op)| op).to_vec())
    }

    fn any_binding() -> impl Strategy<Value = AclBinding> {
        let principal = prop::sample::select(vec!["alice", "bob", "*"]);
        let resource = prop::sample::select(vec![
            (ResourceType::Topic, PatternType::Literal, "a"),
            (ResourceType::Topic, PatternType::Literal, "*"),
            (ResourceType::Topic, PatternType::Prefixed, "a"),
            (ResourceType::Topic, PatternType::Prefixed, "b"),
            (ResourceType::Group, PatternType::Literal, "a"),
            (ResourceType::Cluster, PatternType::Literal, ""),
        ]);
        let permission = prop::sample::select(vec![Permission::Allow, Permission::Deny]);
        (principal, resource, any_operation(), permission)
            .prop_map(|(p, r, op, perm)| binding(p, r, op, perm))
    }

    fn any_resource() -> impl Strategy<Value = Resource<'static>> {
        prop::sample::select(vec![
            Resource::Topic("a"),
            Resource::Topic("ab"),
            Resource::Topic("b"),
            Resource::Group("a"),
            Resource::Cluster,
        ])
    }

    proptest! {
        /// Whatever else is bound, a matching deny wins; an allow is needed; adding a
        /// deny never allows more; and the answer is the naive scan's.
        #[test]
        fn deny_wins_and_no_allow_is_denied(
            bindings in prop::collection::vec(any_binding(), 0..24),
            user in prop::sample::select(vec!["alice", "bob", "carol"]),
            operation in any_operation(),
            resource in any_resource(),
        ) {
            let mut acls = Acls::default();
            for b in &bindings {
                let _ = acls.add(b);
            }
            let applies = |b: &&AclBinding| {
                (b.principal == user || b.principal == "*") && b.matches(resource)
            };
            let deny = bindings.iter().filter(applies).any(|b| {
                b.permission == Permission::Deny && b.operation.deny_covers(operation)
            });
            let allow = bindings.iter().filter(applies).any(|b| {
                b.permission == Permission::Allow && b.operation.allow_covers(operation)
            });
            let allowed = acls.allows(user, operation, resource);
            prop_assert_eq!(allowed, allow && !deny);
            if deny {
                prop_assert!(!allowed);
            }
            if !allow {
                prop_assert!(!allowed);
            }
            // Adding a deny of everything for the user takes every permission away.
            let (kind, pattern, name) = match resource {
                Resource::Topic(n) => (ResourceType::Topic, PatternType::Literal, n),
                Resource::Group(n) => (ResourceType::Group, PatternType::Literal, n),
                Resource::Cluster => (ResourceType::Cluster, PatternType::Literal, ""),
            };
            let _ = acls.add(&binding(user, (kind, pattern, name), Operation::All, Permission::Deny));
            prop_assert!(!acls.allows(user, operation, resource));
        }
    }
}
