//! ICMP and ICMPv6 message types by name, as `iptables --icmp-type` and
//! `ip6tables --icmpv6-type` spell them, and the sets of types the `icmp`
//! key selects.
//!
//! A set is a bitmap of the 256 types per family: what the programs test
//! (bpf/icmpguard.h, `v4_types`/`v6_types`). Neighbour discovery and the
//! path-MTU signals are never in a set: dropping them breaks address
//! resolution and path-MTU discovery, so asking for them is an error.

use crate::addr::{Family, PerFamily};

/// 32-bit words of one family's bitmap (IG_TYPE_WORDS of the ABI).
pub const WORDS: usize = 8;

/// The types of one family, as a bitmap (bit t of word t / 32).
pub type Bitmap = [u32; WORDS];

/// Which message types are dropped for a blocked address, per family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TypeSet(pub PerFamily<Bitmap>);

const ECHO_REPLY: u8 = 0;
const DEST_UNREACH: u8 = 3;
const ECHO_REQUEST: u8 = 8;
const V6_PACKET_TOO_BIG: u8 = 2;
const V6_ECHO_REQUEST: u8 = 128;
const V6_ECHO_REPLY: u8 = 129;
/// Neighbour discovery (RFC 4861): router solicitation to redirect.
const V6_ND: std::ops::RangeInclusive<u8> = 133..=137;

impl TypeSet {
    pub fn contains(&self, family: Family, t: u8) -> bool {
        self.0[family][usize::from(t / 32)] & (1 << (t % 32)) != 0
    }

    pub fn insert(&mut self, family: Family, t: u8) {
        self.0[family][usize::from(t / 32)] |= 1 << (t % 32);
    }

    /// Echo request and reply of both families (`icmp = "echo"`).
    pub fn echo() -> TypeSet {
        let mut s = TypeSet::default();
        for (f, t) in [(Family::V4, ECHO_REQUEST), (Family::V4, ECHO_REPLY)] {
            s.insert(f, t);
        }
        for t in [V6_ECHO_REQUEST, V6_ECHO_REPLY] {
            s.insert(Family::V6, t);
        }
        s
    }

    /// Every type that may be dropped (`icmp = "all"`): all but neighbour
    /// discovery and packet-too-big. (Fragmentation-needed is a code of
    /// destination-unreachable: the programs never drop that code.)
    pub fn all() -> TypeSet {
        let mut s = TypeSet::default();
        for t in 0..=255u8 {
            s.insert(Family::V4, t);
            if refusal(Family::V6, t).is_none() {
                s.insert(Family::V6, t);
            }
        }
        s
    }

    /// The types in the set, as the file would name them: a name where the
    /// type has one (a name both families share once), `icmp:N` or
    /// `icmpv6:N` otherwise.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut named = TypeSet::default();
        for (name, v4, v6) in NAMES {
            let in4 = v4.is_none_or(|t| self.contains(Family::V4, t));
            let in6 = v6.is_none_or(|t| self.contains(Family::V6, t) || refusal(Family::V6, t).is_some());
            let fresh = v4.is_some_and(|t| !named.contains(Family::V4, t))
                || v6.is_some_and(|t| !named.contains(Family::V6, t) && refusal(Family::V6, t).is_none());
            if in4 && in6 && fresh {
                out.push((*name).to_string());
                v4.inspect(|t| named.insert(Family::V4, *t));
                v6.inspect(|t| named.insert(Family::V6, *t));
            }
        }
        for family in Family::ALL {
            for t in 0..=255u8 {
                if self.contains(family, t) && !named.contains(family, t) {
                    out.push(format!("{}:{t}", prefix(family)));
                }
            }
        }
        out
    }
}

fn prefix(family: Family) -> &'static str {
    match family {
        Family::V4 => "icmp",
        Family::V6 => "icmpv6",
    }
}

/// Why a type can never be dropped, if it cannot.
pub fn refusal(family: Family, t: u8) -> Option<&'static str> {
    match family {
        Family::V6 if t == V6_PACKET_TOO_BIG => Some(
            "packet-too-big (ICMPv6 2) carries path-MTU discovery; dropping it black-holes connections (RFC 8201), so it is never dropped",
        ),
        Family::V6 if V6_ND.contains(&t) => Some(
            "ICMPv6 133-137 are neighbour discovery (RFC 4861), how IPv6 resolves addresses on the link; they are never dropped",
        ),
        _ => None,
    }
}

/// Names by which the types may be listed: (name, IPv4 type, IPv6 type).
/// A name both families have means both.
const NAMES: &[(&str, Option<u8>, Option<u8>)] = &[
    ("echo-request", Some(ECHO_REQUEST), Some(V6_ECHO_REQUEST)),
    ("echo-reply", Some(ECHO_REPLY), Some(V6_ECHO_REPLY)),
    ("ping", Some(ECHO_REQUEST), Some(V6_ECHO_REQUEST)),
    ("pong", Some(ECHO_REPLY), Some(V6_ECHO_REPLY)),
    ("destination-unreachable", Some(DEST_UNREACH), Some(1)),
    ("source-quench", Some(4), None),
    ("redirect", Some(5), Some(137)),
    ("router-advertisement", Some(9), Some(134)),
    ("router-solicitation", Some(10), Some(133)),
    ("time-exceeded", Some(11), Some(3)),
    ("ttl-exceeded", Some(11), Some(3)),
    ("parameter-problem", Some(12), Some(4)),
    ("timestamp-request", Some(13), None),
    ("timestamp-reply", Some(14), None),
    ("address-mask-request", Some(17), None),
    ("address-mask-reply", Some(18), None),
    ("packet-too-big", None, Some(V6_PACKET_TOO_BIG)),
    ("mld-listener-query", None, Some(130)),
    ("mld-listener-report", None, Some(131)),
    ("mld-listener-done", None, Some(132)),
    ("mld2-listener-report", None, Some(143)),
    ("neighbour-solicitation", None, Some(135)),
    ("neighbor-solicitation", None, Some(135)),
    ("neighbour-advertisement", None, Some(136)),
    ("neighbor-advertisement", None, Some(136)),
];

/// Names iptables gives to codes of a type: icmpguard filters by type.
const CODE_NAMES: &[(&str, &str)] = &[
    ("network-unreachable", "destination-unreachable"),
    ("host-unreachable", "destination-unreachable"),
    ("protocol-unreachable", "destination-unreachable"),
    ("port-unreachable", "destination-unreachable"),
    ("source-route-failed", "destination-unreachable"),
    ("network-unknown", "destination-unreachable"),
    ("host-unknown", "destination-unreachable"),
    ("network-prohibited", "destination-unreachable"),
    ("host-prohibited", "destination-unreachable"),
    ("communication-prohibited", "destination-unreachable"),
    ("no-route", "destination-unreachable"),
    ("address-unreachable", "destination-unreachable"),
    ("network-redirect", "redirect"),
    ("host-redirect", "redirect"),
    ("ttl-zero-during-transit", "time-exceeded"),
    ("ttl-zero-during-reassembly", "time-exceeded"),
    ("ip-header-bad", "parameter-problem"),
    ("required-option-missing", "parameter-problem"),
];

/// What one name of an `icmp` list selects, and what to tell the
/// operator about it.
#[derive(Debug, PartialEq, Eq)]
pub struct Selected {
    pub types: Vec<(Family, u8)>,
    /// Set when part of what the name means is never dropped.
    pub note: Option<String>,
}

/// The types `name` selects: a name of [`NAMES`], `icmp:N` or `icmpv6:N`.
/// Err: why it cannot be listed, with what to write instead.
pub fn select(name: &str) -> Result<Selected, String> {
    if let Some((fam, num)) = name.split_once(':') {
        let family = match fam {
            "icmp" => Family::V4,
            "icmpv6" => Family::V6,
            _ => return Err(unknown(name)),
        };
        let t: u8 =
            num.parse().map_err(|_| format!("\"{name}\": the type after `{fam}:` must be a number from 0 to 255"))?;
        if let Some(why) = refusal(family, t) {
            return Err(format!("\"{name}\" cannot be listed: {why}"));
        }
        return Ok(Selected { types: vec![(family, t)], note: None });
    }
    if name == "fragmentation-needed" {
        return Err("\"fragmentation-needed\" cannot be listed: it carries path-MTU discovery, and dropping it black-holes connections (RFC 1191); it is never dropped (list \"destination-unreachable\" for the other codes)".into());
    }
    if let Some((_, ty)) = CODE_NAMES.iter().find(|(n, _)| *n == name) {
        return Err(format!("\"{name}\" names a code, and icmpguard selects whole types: write \"{ty}\""));
    }
    let Some((_, v4, v6)) = NAMES.iter().find(|(n, _, _)| *n == name) else {
        return Err(unknown(name));
    };
    let mut types = Vec::new();
    types.extend(v4.map(|t| (Family::V4, t)));
    match v6.map(|t| (t, refusal(Family::V6, t))) {
        Some((t, None)) => types.push((Family::V6, t)),
        Some((_, Some(why))) if types.is_empty() => return Err(format!("\"{name}\" cannot be listed: {why}")),
        Some((t, Some(_))) => {
            return Ok(Selected {
                types,
                note: Some(format!(
                    "\"{name}\" selects the IPv4 message only: its ICMPv6 namesake (type {t}) is neighbour discovery, which is never dropped"
                )),
            })
        }
        None => {}
    }
    Ok(Selected { types, note: None })
}

fn unknown(name: &str) -> String {
    format!(
        "unknown ICMP type \"{name}\"; write a name as iptables --icmp-type or ip6tables --icmpv6-type spells it (such as \"echo-request\", \"timestamp-request\", \"destination-unreachable\"), or \"icmp:N\" / \"icmpv6:N\""
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_name_selects_both_families_and_a_number_one() {
        assert_eq!(select("echo-request").unwrap().types, [(Family::V4, 8), (Family::V6, 128)]);
        assert_eq!(select("timestamp-request").unwrap().types, [(Family::V4, 13)]);
        assert_eq!(select("icmpv6:200").unwrap().types, [(Family::V6, 200)]);
        assert_eq!(select("icmp:3").unwrap().types, [(Family::V4, 3)]);
    }

    #[test]
    fn pmtu_and_neighbour_discovery_are_refused_with_the_reason() {
        for name in ["packet-too-big", "icmpv6:2", "fragmentation-needed", "neighbour-solicitation", "icmpv6:135"] {
            let e = select(name).unwrap_err();
            assert!(e.contains("path-MTU") || e.contains("neighbour discovery"), "{name}: {e}");
        }
        let r = select("redirect").unwrap();
        assert_eq!(r.types, [(Family::V4, 5)]);
        assert!(r.note.unwrap().contains("neighbour discovery"));
    }

    #[test]
    fn codes_unknown_names_and_bad_numbers_say_what_to_write() {
        assert!(select("port-unreachable").unwrap_err().contains("\"destination-unreachable\""));
        assert!(select("echo").unwrap_err().contains("unknown ICMP type"));
        assert!(select("icmp:256").unwrap_err().contains("0 to 255"));
        assert!(select("udp:3").unwrap_err().contains("unknown"));
    }

    #[test]
    fn all_leaves_out_what_is_never_dropped_and_echo_is_four_types() {
        let all = TypeSet::all();
        assert!(!all.contains(Family::V6, 2) && !all.contains(Family::V6, 135));
        assert!(all.contains(Family::V4, 3) && all.contains(Family::V6, 1));
        let echo = TypeSet::echo();
        let n: u32 = Family::ALL.iter().map(|f| echo.0[*f].iter().map(|w| w.count_ones()).sum::<u32>()).sum();
        assert_eq!(n, 4);
    }

    #[test]
    fn names_give_back_what_was_listed() {
        let mut s = TypeSet::default();
        for n in ["timestamp-request", "echo-request", "icmpv6:200"] {
            for (f, t) in select(n).unwrap().types {
                s.insert(f, t);
            }
        }
        assert_eq!(s.names(), ["echo-request", "timestamp-request", "icmpv6:200"]);
    }
}
