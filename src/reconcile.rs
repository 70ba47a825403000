//! What a reload changes: a pure diff between the blocklist the file asks
//! for and the one the kernel enforces.

use std::collections::HashMap;

use crate::addr::Prefix;

/// The difference to apply. Applying adds before removes, so that a rule
/// that stays in the file is never absent from the kernel.
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

/// `desired` is sorted and free of duplicates (as `Config::block` is);
/// `current` maps each enforced rule to its id.
pub fn plan<V>(desired: &[Prefix], current: &HashMap<Prefix, V>) -> Plan {
    let add = desired.iter().filter(|p| !current.contains_key(p)).copied().collect();
    let mut remove: Vec<Prefix> = current.keys().filter(|p| desired.binary_search(p).is_err()).copied().collect();
    remove.sort_unstable();
    Plan { add, remove }
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

    fn current(list: &[&str]) -> HashMap<Prefix, u32> {
        prefixes(list).into_iter().zip(0..).collect()
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
        assert_eq!(plan(&prefixes(&all), &HashMap::<Prefix, u32>::new()).add, prefixes(&all));
    }

    #[test]
    fn a_prefix_and_an_address_inside_it_are_distinct_rules() {
        let p = plan(&prefixes(&["198.51.100.0/24"]), &current(&["198.51.100.7"]));
        assert_eq!(p.add, prefixes(&["198.51.100.0/24"]));
        assert_eq!(p.remove, prefixes(&["198.51.100.7"]));
    }
}
