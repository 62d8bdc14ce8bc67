//! CreateAcl, DeleteAcl (to the controller leader; a node passes them on, and they are
//! answered with a `TopicResponse` once applied) and ListAcls (answered by any node from
//! its view of the controller's metadata). The binding travels as the controller stores
//! it (`shardlog_replicator::controller::acls::AclBinding`); the controller validates it.

pub use shardlog_replicator::controller::acls::{
    AclBinding, Operation, PatternType, Permission, ResourceType,
};

/// Request meta of CreateAcl and DeleteAcl; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AclRequest {
    /// The binding to add, or to remove (an equal one).
    pub binding: AclBinding,
}

/// Request meta of ListAcls; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ListAclsRequest {
    /// Only the bindings of this user name (without `User:`); `None`: every binding.
    pub principal: Option<String>,
}

/// Response meta of ListAcls; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ListAclsResponse {
    /// `ErrorCode`.
    pub error: u16,
    /// The bindings, by principal.
    pub bindings: Vec<AclBinding>,
}
