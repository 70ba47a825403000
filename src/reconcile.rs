//! What a reload changes: a pure diff between the blocklist the file asks
//! for and the one the kernel enforces.

use std::collections::HashMap;

use crate::addr::Prefix;

/// The difference to apply, each list sorted. Applying adds before
/// removes, so that a rule that stays in the file is never absent from the
/// kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub add: Vec<Prefix>,
    pub remove: Vec<Prefix>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// The rules the kernel enforces, with their ids, sorted by prefix: half
/// the memory of a hash map, and a plan is one merge of two sorted lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules(Vec<(Prefix, u32)>);

impl Rules {
    /// From rules in any order; a prefix listed twice keeps its first id.
    pub fn from_unsorted(mut v: Vec<(Prefix, u32)>) -> Rules {
        v.sort_unstable_by_key(|(p, _)| *p);
        v.dedup_by_key(|(p, _)| *p);
        Rules(v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, p: &Prefix) -> Option<u32> {
        self.0.binary_search_by_key(p, |(q, _)| *q).ok().map(|i| self.0[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Prefix, u32)> {
        self.0.iter()
    }

    /// Adds `added` (sorted, none present yet) and drops `removed` (sorted)
    /// in one merge.
    pub fn merge(&mut self, added: Vec<(Prefix, u32)>, removed: &[Prefix]) {
        if self.0.is_empty() {
            // A new generation: nothing to merge with, nothing to copy.
            self.0 = added;
            return;
        }
        let old = std::mem::take(&mut self.0);
        let mut out = Vec::with_capacity(old.len() + added.len());
        let (mut a, mut r) = (added.iter().peekable(), removed.iter().peekable());
        for item in old {
            while let Some(next) = a.next_if(|(p, _)| *p < item.0) {
                out.push(*next);
            }
            while r.next_if(|p| **p < item.0).is_some() {}
            if r.next_if(|p| **p == item.0).is_none() {
                out.push(item);
            }
        }
        out.extend(a.copied());
        self.0 = out;
    }
}

impl std::ops::Index<&Prefix> for Rules {
    type Output = u32;

    /// The id of a rule that is known to be there (tests, tools).
    fn index(&self, p: &Prefix) -> &u32 {
        let i = self.0.binary_search_by_key(p, |(q, _)| *q).unwrap_or_else(|_| panic!("no rule {p}"));
        &self.0[i].1
    }
}

/// What `plan` needs to know about the enforced rules.
pub trait Enforced {
    fn has(&self, p: &Prefix) -> bool;
    /// The enforced prefixes, in any order.
    fn prefixes(&self) -> Box<dyn Iterator<Item = Prefix> + '_>;

    /// The plan from `self` to `desired` (sorted, no duplicates).
    fn plan_to(&self, desired: &[Prefix]) -> Plan {
        let add = desired.iter().filter(|p| !self.has(p)).copied().collect();
        let mut remove: Vec<Prefix> = self.prefixes().filter(|p| desired.binary_search(p).is_err()).collect();
        remove.sort_unstable();
        Plan { add, remove }
    }
}

impl Enforced for Rules {
    fn has(&self, p: &Prefix) -> bool {
        self.get(p).is_some()
    }
    fn prefixes(&self) -> Box<dyn Iterator<Item = Prefix> + '_> {
        Box::new(self.0.iter().map(|(p, _)| *p))
    }

    /// Both lists are sorted: one merge walk.
    fn plan_to(&self, desired: &[Prefix]) -> Plan {
        let mut plan = Plan::default();
        let (mut i, mut j) = (0, 0);
        while i < desired.len() || j < self.0.len() {
            match (desired.get(i), self.0.get(j).map(|(p, _)| p)) {
                (Some(a), Some(b)) if a == b => {
                    i += 1;
                    j += 1;
                }
                (Some(a), Some(b)) if a < b => {
                    plan.add.push(*a);
                    i += 1;
                }
                (Some(a), None) => {
                    plan.add.push(*a);
                    i += 1;
                }
                (_, Some(b)) => {
                    plan.remove.push(*b);
                    j += 1;
                }
                (None, None) => break,
            }
        }
        plan
    }
}

impl<V> Enforced for HashMap<Prefix, V> {
    fn has(&self, p: &Prefix) -> bool {
        self.contains_key(p)
    }
    fn prefixes(&self) -> Box<dyn Iterator<Item = Prefix> + '_> {
        Box::new(self.keys().copied())
    }
}

/// `desired` is sorted and free of duplicates (as `Config::block` is).
pub fn plan(desired: &[Prefix], current: &(impl Enforced + ?Sized)) -> Plan {
    current.plan_to(desired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(list: &[&str]) -> Vec<Prefix> {
        let mut v: Vec<Prefix> = list.iter().map(|s| s.parse().unwrap()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn current(list: &[&str]) -> Rules {
        Rules::from_unsorted(prefixes(list).into_iter().zip(0..).collect())
    }

    #[test]
    fn only_the_difference_is_planned() {
        let p = plan(
            &prefixes(&["192.0.2.1", "192.0.2.2", "2001:db8::/32"]),
            &current(&["192.0.2.2", "192.0.2.3", "198.51.100.0/24"]),
        );
        assert_eq!(p.add, prefixes(&["192.0.2.1", "2001:db8::/32"]));
        assert_eq!(p.remove, prefixes(&["192.0.2.3", "198.51.100.0/24"]));
    }

    #[test]
    fn same_sets_plan_nothing() {
        let p = plan(&prefixes(&["192.0.2.1", "::ffff:192.0.2.9"]), &current(&["192.0.2.9", "192.0.2.1"]));
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn empty_file_removes_everything_and_empty_kernel_adds_everything() {
        let all = ["192.0.2.1", "2001:db8::1"];
        assert_eq!(plan(&[], &current(&all)).remove, prefixes(&all));
        assert_eq!(plan(&prefixes(&all), &Rules::default()).add, prefixes(&all));
    }

    #[test]
    fn a_prefix_and_an_address_inside_it_are_distinct_rules() {
        let p = plan(&prefixes(&["198.51.100.0/24"]), &current(&["198.51.100.7"]));
        assert_eq!(p.add, prefixes(&["198.51.100.0/24"]));
        assert_eq!(p.remove, prefixes(&["198.51.100.7"]));
    }

    #[test]
    fn a_hash_map_of_rules_plans_the_same() {
        let map: HashMap<Prefix, u32> = prefixes(&["192.0.2.2", "192.0.2.3"]).into_iter().zip(0..).collect();
        let want = prefixes(&["192.0.2.1", "192.0.2.2"]);
        assert_eq!(plan(&want, &map), plan(&want, &current(&["192.0.2.2", "192.0.2.3"])));
    }

    #[test]
    fn merge_keeps_the_list_sorted_and_applies_both_sides() {
        let mut r = current(&["192.0.2.2", "192.0.2.4", "2001:db8::1"]);
        let added: Vec<(Prefix, u32)> =
            prefixes(&["192.0.2.1", "192.0.2.3", "2001:db8::2"]).into_iter().zip(10..).collect();
        r.merge(added, &prefixes(&["192.0.2.4", "2001:db8::1"]));
        let got: Vec<String> = r.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(got, ["192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::2"]);
        assert_eq!(r.get(&"192.0.2.3".parse().unwrap()), Some(11));
        assert_eq!(r.get(&"192.0.2.2".parse().unwrap()), Some(0));
    }
}
