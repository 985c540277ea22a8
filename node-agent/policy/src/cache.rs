//! The selector cache — which identities each selector in use selects, kept current one
//! identity at a time — and the local identities of the CIDRs policies name.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cilium_identity::{Label, LabelSet, ReservedIdentity};
use ipnet::IpNet;

use crate::rules::{Peer, Rule};
use crate::selector::Selector;

/// Node-local identities (CIDRs) start here, as Cilium's local scope (`1 << 24`).
pub const LOCAL_IDENTITY_BASE: u32 = 1 << 24;

/// The reserved identities and their `reserved:<name>` labels.
pub fn reserved_identities() -> BTreeMap<u32, LabelSet> {
    let reserved = |r: ReservedIdentity| Label::new("reserved", r.name(), "");
    let mut identities: BTreeMap<u32, LabelSet> = ReservedIdentity::ALL
        .iter()
        .map(|r| (r.id().0, [reserved(*r)].into_iter().collect()))
        .collect();
    // As Cilium: `kube-apiserver` (7) is an apiserver on another node, so it is a remote
    // node too (a `remote-node` rule still admits that node).
    if let Some(labels) = identities.get_mut(&ReservedIdentity::KubeApiserver.id().0) {
        labels.insert(reserved(ReservedIdentity::RemoteNode));
    }
    identities
}

/// [`reserved_identities`] for a node that does or does not run a kube-apiserver endpoint
/// itself: where it does, the host identity carries `reserved:kube-apiserver` too (Cilium
/// labels the host rather than giving its address identity 7).
pub fn reserved_identities_on(apiserver_on_host: bool) -> BTreeMap<u32, LabelSet> {
    let mut identities = reserved_identities();
    if apiserver_on_host && let Some(labels) = identities.get_mut(&ReservedIdentity::Host.id().0) {
        labels.insert(Label::new(
            "reserved",
            ReservedIdentity::KubeApiserver.name(),
            "",
        ));
    }
    identities
}

#[derive(Debug, Default)]
pub struct SelectorCache {
    identities: BTreeMap<u32, LabelSet>,
    selections: HashMap<Selector, BTreeSet<u32>>,
}

impl SelectorCache {
    pub fn identities(&self) -> &BTreeMap<u32, LabelSet> {
        &self.identities
    }

    /// Brings the known identities to `current`, updating every cached selection for each
    /// identity that came, went or changed labels; returns how many did.
    pub fn update_identities(&mut self, current: BTreeMap<u32, LabelSet>) -> usize {
        let mut changed = 0;
        let gone: Vec<u32> = self
            .identities
            .keys()
            .filter(|id| !current.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            self.identities.remove(&id);
            for selected in self.selections.values_mut() {
                selected.remove(&id);
            }
            changed += 1;
        }
        for (id, labels) in current {
            if self.identities.get(&id) == Some(&labels) {
                continue;
            }
            for (selector, selected) in &mut self.selections {
                if selector.matches(&labels) {
                    selected.insert(id);
                } else {
                    selected.remove(&id);
                }
            }
            self.identities.insert(id, labels);
            changed += 1;
        }
        changed
    }

    /// The identities `selector` selects (computed once, then kept current).
    pub fn selected(&mut self, selector: &Selector) -> &BTreeSet<u32> {
        let identities = &self.identities;
        self.selections.entry(selector.clone()).or_insert_with(|| {
            identities
                .iter()
                .filter(|(_, labels)| selector.matches(labels))
                .map(|(id, _)| *id)
                .collect()
        })
    }

    /// Forgets selectors no rule uses any more.
    pub fn retain(&mut self, keep: impl Fn(&Selector) -> bool) {
        self.selections.retain(|selector, _| keep(selector));
    }

    /// Every cached selector and the identities it selects.
    pub fn selections(&self) -> impl Iterator<Item = (&Selector, &BTreeSet<u32>)> {
        self.selections.iter()
    }

    pub fn selector_count(&self) -> usize {
        self.selections.len()
    }
}

/// The local identity of every CIDR the rules name (each `cidr` and each `except`). Numbers
/// stay with their prefix while any rule names it, so the ipcache and the policy maps never
/// disagree about a prefix that did not change.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CidrIdentities {
    by_prefix: BTreeMap<IpNet, u32>,
}

impl CidrIdentities {
    /// Keeps the numbers of prefixes still named, gives new prefixes the lowest free
    /// numbers, and frees the rest.
    pub fn update(&mut self, rules: &[Rule]) {
        let mut wanted = BTreeSet::new();
        for rule in rules {
            let sections = [
                &rule.ingress,
                &rule.ingress_deny,
                &rule.egress,
                &rule.egress_deny,
            ];
            for section in sections.into_iter().flatten() {
                for peer in &section.peers {
                    if let Peer::Cidr { cidr, except } = peer {
                        wanted.insert(*cidr);
                        wanted.extend(except.iter().copied());
                    }
                }
            }
        }
        self.by_prefix.retain(|prefix, _| wanted.contains(prefix));
        let mut used: BTreeSet<u32> = self.by_prefix.values().copied().collect();
        let mut next = LOCAL_IDENTITY_BASE;
        for prefix in wanted {
            if self.by_prefix.contains_key(&prefix) {
                continue;
            }
            while used.contains(&next) {
                next += 1;
            }
            used.insert(next);
            self.by_prefix.insert(prefix, next);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (IpNet, u32)> + '_ {
        self.by_prefix.iter().map(|(p, id)| (*p, *id))
    }

    /// Labels of a CIDR identity: `cidr:<prefix>` and `reserved:world` (they are outside
    /// the cluster, so `world` selects them).
    pub fn labels(prefix: IpNet) -> LabelSet {
        [
            Label::new("cidr", &prefix.to_string(), ""),
            Label::new("reserved", "world", ""),
        ]
        .into_iter()
        .collect()
    }

    /// Every CIDR identity with its labels, for the selector cache.
    pub fn identities(&self) -> BTreeMap<u32, LabelSet> {
        self.iter().map(|(p, id)| (id, Self::labels(p))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(app: &str) -> LabelSet {
        [Label::k8s("app", app)].into_iter().collect()
    }

    #[test]
    fn selections_follow_identities_incrementally() {
        let mut cache = SelectorCache::default();
        cache.update_identities(BTreeMap::from([(300, labels("db")), (301, labels("web"))]));
        let db = Selector::label(None, "app", "db");
        assert_eq!(cache.selected(&db), &BTreeSet::from([300]));
        // A new identity with the same labels joins; a removed one leaves; a relabelled one
        // moves.
        let changed = cache.update_identities(BTreeMap::from([
            (300, labels("db")),
            (301, labels("db")),
            (302, labels("db")),
        ]));
        assert_eq!(changed, 2);
        assert_eq!(cache.selected(&db), &BTreeSet::from([300, 301, 302]));
        cache.update_identities(BTreeMap::from([(302, labels("db"))]));
        assert_eq!(cache.selected(&db), &BTreeSet::from([302]));
        cache.retain(|_| false);
        assert_eq!(cache.selector_count(), 0);
    }

    #[test]
    fn reserved_identities_have_their_labels() {
        let reserved = reserved_identities();
        assert!(Selector::reserved("world").matches(&reserved[&2]));
        assert!(Selector::reserved("host").matches(&reserved[&1]));
        assert!(!Selector::reserved("host").matches(&reserved[&2]));
        let apiserver = Selector::reserved("kube-apiserver");
        assert!(apiserver.matches(&reserved[&7]));
        assert!(Selector::reserved("remote-node").matches(&reserved[&7]));
        assert!(!apiserver.matches(&reserved[&1]));
        assert!(apiserver.matches(&reserved_identities_on(true)[&1]));
        assert!(Selector::reserved("host").matches(&reserved_identities_on(true)[&1]));
    }
}
