//! The operator's central allocator: label set ↔ number within the cluster's scope. Pure:
//! the operator restores it from the existing CiliumIdentities, then asks for numbers.

use std::collections::BTreeMap;

use crate::labels::LabelSet;
use crate::numeric::{ClusterScope, NumericIdentity};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error(
        "no more identities available in cluster {cluster_id}'s range {first}..={last} ({capacity} in use)"
    )]
    Exhausted {
        cluster_id: u8,
        first: NumericIdentity,
        last: NumericIdentity,
        capacity: usize,
    },
    #[error("identity {id} is outside cluster {cluster_id}'s range {first}..={last}")]
    OutOfScope {
        id: NumericIdentity,
        cluster_id: u8,
        first: NumericIdentity,
        last: NumericIdentity,
    },
    #[error("identity {id} is already held by other labels ({holder})")]
    Taken { id: NumericIdentity, holder: String },
    #[error("labels {labels} already have identity {existing}; {duplicate} is a duplicate")]
    Duplicate {
        labels: String,
        existing: NumericIdentity,
        duplicate: NumericIdentity,
    },
}

/// Which number each label set holds.
#[derive(Debug, Clone)]
pub struct IdentityPool {
    scope: ClusterScope,
    by_labels: BTreeMap<LabelSet, NumericIdentity>,
    by_id: BTreeMap<NumericIdentity, LabelSet>,
    /// Where the search for a free number starts: numbers are handed out in increasing
    /// order and a freed number is reused only after the range has been gone through, so
    /// a number just deleted is not at once given to other labels.
    next: NumericIdentity,
}

impl IdentityPool {
    pub fn new(scope: ClusterScope) -> Self {
        Self {
            scope,
            by_labels: BTreeMap::new(),
            by_id: BTreeMap::new(),
            next: scope.first(),
        }
    }

    /// Records an existing identity. Callers restore oldest first, so of two numbers for
    /// one label set the older stays and the newer is reported as a duplicate.
    pub fn restore(&mut self, id: NumericIdentity, labels: LabelSet) -> Result<(), PoolError> {
        if !self.scope.contains(id) {
            return Err(PoolError::OutOfScope {
                id,
                cluster_id: self.scope.cluster_id(),
                first: self.scope.first(),
                last: self.scope.last(),
            });
        }
        if let Some(holder) = self.by_id.get(&id) {
            if *holder == labels {
                return Ok(());
            }
            return Err(PoolError::Taken {
                id,
                holder: holder.kvstore_string(),
            });
        }
        if let Some(existing) = self.by_labels.get(&labels) {
            return Err(PoolError::Duplicate {
                labels: labels.kvstore_string(),
                existing: *existing,
                duplicate: id,
            });
        }
        self.by_labels.insert(labels.clone(), id);
        self.by_id.insert(id, labels);
        if id >= self.next {
            self.next = NumericIdentity(id.0.saturating_add(1));
        }
        Ok(())
    }

    pub fn lookup(&self, labels: &LabelSet) -> Option<NumericIdentity> {
        self.by_labels.get(labels).copied()
    }

    pub fn labels_of(&self, id: NumericIdentity) -> Option<&LabelSet> {
        self.by_id.get(&id)
    }

    /// The number of `labels`: the one it holds, or a free one now reserved for it.
    pub fn allocate(&mut self, labels: &LabelSet) -> Result<NumericIdentity, PoolError> {
        if let Some(id) = self.lookup(labels) {
            return Ok(id);
        }
        let id = self.free_number().ok_or(PoolError::Exhausted {
            cluster_id: self.scope.cluster_id(),
            first: self.scope.first(),
            last: self.scope.last(),
            capacity: self.scope.capacity(),
        })?;
        self.by_labels.insert(labels.clone(), id);
        self.by_id.insert(id, labels.clone());
        self.next = NumericIdentity(id.0 + 1);
        Ok(id)
    }

    fn free_number(&self) -> Option<NumericIdentity> {
        let (first, last) = (self.scope.first().0, self.scope.last().0);
        let start = self.next.0.clamp(first, last + 1);
        (start..=last)
            .chain(first..start)
            .map(NumericIdentity)
            .find(|id| !self.by_id.contains_key(id))
    }

    /// Frees `id` (its CiliumIdentity was deleted).
    pub fn release(&mut self, id: NumericIdentity) {
        if let Some(labels) = self.by_id.remove(&id) {
            self.by_labels.remove(&labels);
        }
    }

    pub fn ids(&self) -> impl Iterator<Item = (NumericIdentity, &LabelSet)> {
        self.by_id.iter().map(|(id, labels)| (*id, labels))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn scope(&self) -> ClusterScope {
        self.scope
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Label;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn labels(app: &str) -> LabelSet {
        [Label::k8s("app", app)].into_iter().collect()
    }

    #[test]
    fn the_same_labels_keep_their_number() {
        let mut pool = IdentityPool::new(ClusterScope::new(0));
        let a = pool.allocate(&labels("a")).expect("free");
        let b = pool.allocate(&labels("b")).expect("free");
        assert_eq!(a, NumericIdentity(256));
        assert_eq!(b, NumericIdentity(257));
        assert_eq!(pool.allocate(&labels("a")), Ok(a));
    }

    #[test]
    fn restore_before_allocate_never_reuses_a_held_number() {
        let mut pool = IdentityPool::new(ClusterScope::new(2));
        let held = NumericIdentity(2 << 16 | 300);
        pool.restore(held, labels("old")).expect("in scope");
        assert_eq!(pool.allocate(&labels("old")), Ok(held));
        let new = pool.allocate(&labels("new")).expect("free");
        assert_eq!(new, NumericIdentity(2 << 16 | 301));
    }

    #[test]
    fn restore_reports_duplicates_foreign_numbers_and_taken_numbers() {
        let mut pool = IdentityPool::new(ClusterScope::new(1));
        let first = NumericIdentity(1 << 16 | 256);
        pool.restore(first, labels("a")).expect("ok");
        assert!(matches!(
            pool.restore(NumericIdentity(1 << 16 | 999), labels("a")),
            Err(PoolError::Duplicate { existing, .. }) if existing == first
        ));
        assert!(matches!(
            pool.restore(first, labels("b")),
            Err(PoolError::Taken { .. })
        ));
        assert!(matches!(
            pool.restore(NumericIdentity(500), labels("c")),
            Err(PoolError::OutOfScope { .. })
        ));
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn exhaustion_is_an_error_never_a_wrap_into_another_range() {
        let mut pool = IdentityPool::new(ClusterScope::new(0));
        for n in 0..pool.scope().capacity() {
            let id = pool.allocate(&labels(&n.to_string())).expect("capacity");
            assert!(pool.scope().contains(id));
        }
        let err = pool.allocate(&labels("one-too-many")).expect_err("full");
        assert!(matches!(err, PoolError::Exhausted { .. }));
        assert!(err.to_string().contains("256..=65535"), "{err}");
        pool.release(NumericIdentity(1000));
        assert_eq!(
            pool.allocate(&labels("one-too-many")),
            Ok(NumericIdentity(1000))
        );
    }

    #[test]
    fn a_released_number_is_reused_only_after_the_range_is_gone_through() {
        let mut pool = IdentityPool::new(ClusterScope::new(0));
        let a = pool.allocate(&labels("a")).expect("free");
        pool.release(a);
        let b = pool.allocate(&labels("b")).expect("free");
        assert_ne!(a, b);
    }

    proptest! {
        /// Any sequence of allocations, releases and restarts (restore from what is
        /// held) keeps one number per label set and one label set per number.
        #[test]
        fn numbers_and_label_sets_stay_one_to_one(
            steps in proptest::collection::vec((0u8..3, 0u16..40), 1..200)
        ) {
            let mut pool = IdentityPool::new(ClusterScope::new(7));
            for (op, n) in steps {
                match op {
                    0 => {
                        let id = pool.allocate(&labels(&n.to_string())).expect("room");
                        prop_assert!(pool.scope().contains(id));
                    }
                    1 => {
                        if let Some(id) = pool.lookup(&labels(&n.to_string())) {
                            pool.release(id);
                        }
                    }
                    _ => {
                        let mut restarted = IdentityPool::new(pool.scope());
                        for (id, l) in pool.ids() {
                            restarted.restore(id, l.clone()).expect("consistent");
                        }
                        prop_assert_eq!(restarted.len(), pool.len());
                        pool = restarted;
                    }
                }
                let numbers: BTreeSet<_> = pool.ids().map(|(id, _)| id).collect();
                let sets: BTreeSet<_> = pool.ids().map(|(_, l)| l.clone()).collect();
                prop_assert_eq!(numbers.len(), pool.len());
                prop_assert_eq!(sets.len(), pool.len());
            }
        }
    }
}
