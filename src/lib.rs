//! icmpguard: a declarative ICMP firewall. The file becomes a
//! [`config::Config`], the config a [`plan::Desired`], the difference to the
//! kernel a [`plan::Plan`], and the [`kernel`] module applies it and reports
//! back; events flow from the kernel through [`events`] to [`syslog`].

pub mod addr;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod diagnostic;
pub mod error;
pub mod events;
pub mod icmp;
pub mod kernel;
pub mod metrics;
pub mod plan;
pub mod restart;
pub mod sd_notify;
pub mod syslog;
pub mod watch;
pub mod when;

/// The skeleton libbpf-cargo generates from bpf/icmpguard.bpf.c: the
/// embedded object and the ABI types of bpf/icmpguard.h.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod skel {
    include!(concat!(env!("OUT_DIR"), "/icmpguard.skel.rs"));
}

/// bpf/icmpguard.h is the only definition of the ABI: every enum and every
/// constant it declares must reach the skeleton, so that no Rust code has
/// to write one by hand. A new enum without its instance in
/// icmpguard.bpf.c, or a new `#define`, fails here.
#[cfg(test)]
mod abi {
    const HEADER: &str = include_str!("../bpf/icmpguard.h");
    const SKELETON: &str = include_str!(concat!(env!("OUT_DIR"), "/icmpguard.skel.rs"));

    #[test]
    fn every_enum_and_enumerator_of_the_header_is_in_the_skeleton() {
        let mut enums = 0;
        let mut in_enum = false;
        for line in HEADER.lines() {
            if let Some(rest) = line.strip_prefix("enum ") {
                let name = rest.trim_end_matches(" {").trim();
                assert!(SKELETON.contains(&format!("pub struct {name}(")), "enum {name} is not in the skeleton");
                enums += 1;
                in_enum = true;
            } else if in_enum && line.starts_with('}') {
                in_enum = false;
            } else if in_enum {
                if let Some((name, _)) = line.trim().split_once(" = ") {
                    assert!(SKELETON.contains(&format!("pub const {name}: Self")), "{name} is not in the skeleton");
                }
            }
        }
        assert!(enums >= 8, "only {enums} enums found in bpf/icmpguard.h");
    }

    #[test]
    fn the_header_defines_no_constant_outside_an_enum_but_the_hash_multiplier_of_two() {
        for line in HEADER.lines().filter(|l| l.starts_with("#define ")) {
            let name = line.split_whitespace().nth(1).unwrap_or_default();
            match name {
                "ICMPGUARD_H" => {}
                // Too large for an enumerator: made of two.
                "IG_HASH_MUL" => assert!(line.contains("IG_HASH_MUL_HI") && line.contains("IG_HASH_MUL_LO")),
                other => {
                    panic!("#define {other} in bpf/icmpguard.h: make it an enumerator so that it reaches the skeleton")
                }
            }
        }
    }
}
