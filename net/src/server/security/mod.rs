//! Who a client connection is. A [`Session`] belongs to one connection on one shard: its
//! read loop and every request it begins share it. A connection starts without a
//! principal; a client certificate (mutual TLS) or a SASL exchange gives it one.

pub(crate) mod acl;
pub(crate) mod sasl;
pub(crate) mod tls;
pub(crate) mod users;

use std::cell::RefCell;

/// An authenticated identity: the user a SASL exchange proved, or the name a client
/// certificate maps to. ACLs name principals.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Principal(pub(crate) String);

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "User:{}", self.0)
    }
}

/// What a client connection has proven so far.
#[derive(Debug, Default)]
pub(crate) struct Session {
    /// Set once the connection authenticated.
    principal: RefCell<Option<Principal>>,
    /// Whether the connection runs over TLS (PLAIN is offered only then).
    tls: bool,
    /// The SASL exchange's state.
    sasl: sasl::Sasl,
}

impl Session {
    /// A connection as accepted: `tls` if it runs over TLS, `principal` if its client
    /// certificate already named one.
    pub(crate) fn new(tls: bool, principal: Option<Principal>) -> Session {
        Session {
            principal: RefCell::new(principal),
            tls,
            sasl: sasl::Sasl::default(),
        }
    }

    /// Who the connection proved to be, if anyone yet.
    pub(crate) fn principal(&self) -> Option<Principal> {
        self.principal.borrow().clone()
    }

    /// Whether the connection proved who it is (no copy of the name: asked per request).
    pub(crate) fn is_authenticated(&self) -> bool {
        self.principal.borrow().is_some()
    }

    /// Records who the connection proved to be.
    pub(crate) fn authenticated(&self, principal: Principal) {
        *self.principal.borrow_mut() = Some(principal);
    }

    /// Whether the connection runs over TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls
    }
}
