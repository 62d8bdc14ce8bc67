//! The range assignor (Kafka's `RangeAssignor`, protocol name `range`): a pure decision the
//! group's leader makes after JoinGroup. Per topic, the members subscribed to it, sorted
//! by member id, each take a contiguous range of its partitions; with `n` partitions and
//! `m` members, the first `n % m` members take `n / m + 1`, the others `n / m`. The same
//! inputs give the same assignment in any client that implements it, so a Kafka leader
//! and a shardlog leader hand out the same partitions.

use std::collections::BTreeMap;

use super::consumer_protocol::{Assignment, Subscription};

/// The assignor's protocol name.
pub const RANGE: &str = "range";

/// Every member's assignment. `members`: member id -> subscription; `partitions`: topic ->
/// partition count (a topic missing there, unknown to the cluster, is assigned to nobody).
/// Every member gets an entry, empty if it gets nothing.
#[must_use]
pub fn assign(
    members: &BTreeMap<String, Subscription>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, Assignment> {
    let mut assignments: BTreeMap<String, Assignment> = members
        .keys()
        .map(|member| (member.clone(), Assignment::default()))
        .collect();
    for (topic, count) in partitions {
        // BTreeMap order: members sorted by id, as Kafka's assignor sorts them.
        let subscribers: Vec<&String> = members
            .iter()
            .filter(|(_, s)| s.topics.iter().any(|t| t == topic))
            .map(|(member, _)| member)
            .collect();
        let Ok(m) = u32::try_from(subscribers.len()) else {
            continue;
        };
        if m == 0 {
            continue;
        }
        let (each, extra) = (count / m, count % m);
        let mut next = 0u32;
        for (i, member) in (0u32..).zip(subscribers) {
            let take = each + u32::from(i < extra);
            if take > 0
                && let Some(assignment) = assignments.get_mut(member)
            {
                assignment
                    .partitions
                    .insert(topic.clone(), (next..next + take).collect());
            }
            next += take;
        }
    }
    assignments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(list: &[(&str, &[&str])]) -> BTreeMap<String, Subscription> {
        list.iter()
            .map(|(member, topics)| {
                let topics = topics.iter().map(|t| (*t).to_owned()).collect();
                ((*member).to_owned(), Subscription { topics })
            })
            .collect()
    }

    fn shown(assignments: &BTreeMap<String, Assignment>) -> Vec<String> {
        assignments
            .iter()
            .map(|(member, a)| {
                let parts: Vec<String> = a.iter().map(|(t, p)| format!("{t}{p}")).collect();
                format!("{member}:{}", parts.join(","))
            })
            .collect()
    }

    /// Members with their topics, topics with their partition counts, the assignment.
    type Case = (
        &'static [(&'static str, &'static [&'static str])],
        &'static [(&'static str, u32)],
        &'static [&'static str],
    );

    #[test]
    fn table() {
        let cases: &[Case] = &[
            // Four partitions, two members: two each.
            (
                &[("a", &["t"]), ("b", &["t"])],
                &[("t", 4)],
                &["a:t0,t1", "b:t2,t3"],
            ),
            // Three members: the first takes the extra one.
            (
                &[("c", &["t"]), ("a", &["t"]), ("b", &["t"])],
                &[("t", 4)],
                &["a:t0,t1", "b:t2", "c:t3"],
            ),
            // More members than partitions: the last get nothing.
            (
                &[("a", &["t"]), ("b", &["t"]), ("c", &["t"])],
                &[("t", 2)],
                &["a:t0", "b:t1", "c:"],
            ),
            // Per topic, only its subscribers; an unknown topic goes to nobody.
            (
                &[("a", &["t", "u"]), ("b", &["u", "x"])],
                &[("t", 2), ("u", 3)],
                &["a:t0,t1,u0,u1", "b:u2"],
            ),
        ];
        for (list, counts, want) in cases {
            let counts = counts.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect();
            assert_eq!(shown(&assign(&members(list), &counts)), *want, "{list:?}");
        }
    }
}
