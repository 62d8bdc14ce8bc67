//! DrainNode (decommission a node, or take it back) and RebalanceReplicas (even out replica
//! counts over the nodes). Both go to the controller leader (a node passes them on) and
//! are answered with a `TopicResponse` once the controller took them: a drain once it is
//! applied (the moves follow, by the controller leader's placement rounds), a rebalance
//! once its moves are proposed (`message` says how many).

/// Request meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DrainNodeRequest {
    /// The node id.
    pub node: u32,
    /// True: decommission it (its replicas move away, it receives none); false: take it
    /// back.
    pub draining: bool,
}

/// Request meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct RebalanceReplicasRequest {
    /// Only say how many moves a rebalance would make, make none.
    pub dry_run: bool,
}
