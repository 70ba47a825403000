//! What the kernel must enforce, and the one diff that takes it there.
//!
//! Data flows one way: the file becomes a [`crate::config::Config`], the
//! config a [`Desired`] (rules, the settings of the programs, where to
//! hook), and `Desired` against what the kernel holds a [`Plan`]; the
//! kernel side (crate::kernel) applies it and reports what it did. Nothing
//! here knows of files or syslog, nor the kernel side of TOML.

use crate::addr::Prefix;

/// Which ICMP messages are dropped for a blocked address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpPolicy {
    /// Echo request and reply only.
    Echo,
    /// Every ICMP message except neighbour discovery and PMTU signals.
    All,
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native, falling back to generic with a log line.
    Auto,
    Native,
    Generic,
}

/// Which packets become syslog lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogMode {
    All,
    Blocked,
    None,
}

/// What the programs are told besides the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub policy: IcmpPolicy,
    pub log: LogMode,
    /// Event lines per second the daemon forwards; 0 means no limit.
    pub rate_limit: u32,
}

/// Everything the kernel must enforce for one configuration (borrowing
/// the rules from it: a million of them are not copied for a reload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired<'a> {
    /// Sorted, without duplicates.
    pub rules: &'a [Prefix],
    pub settings: Settings,
    /// Interface names, sorted, without duplicates.
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
}

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

/// The one diff, for a reload, for adopting a pinned filter and for the
/// drift `status` reports: `desired` (sorted, no duplicates, as
/// [`Desired::rules`]) against the rules the kernel holds, in one merge walk
/// of the two sorted lists.
pub fn plan(desired: &[Prefix], current: &Rules) -> Plan {
    let mut plan = Plan::default();
    let (mut i, mut j) = (0, 0);
    while i < desired.len() || j < current.0.len() {
        match (desired.get(i), current.0.get(j).map(|(p, _)| p)) {
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
