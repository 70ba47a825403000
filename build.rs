//! Compiles the BPF programs and writes their skeleton into OUT_DIR.
//!
//! The object is embedded in the binary by the skeleton; nothing separate is
//! shipped. Reruns when anything under bpf/ changes.

use std::env;
use std::path::PathBuf;
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "bpf/icmpguard.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut args = vec!["-Wall".to_string(), "-Werror".to_string()];
    // clang -target bpf does not search the multiarch include directory,
    // where <asm/types.h> lives on Debian.
    if let Some(dir) = multiarch_include() {
        args.push(format!("-I{dir}"));
    }
    // Extra clang flags, for the test suite's variant build
    // (-DICMPGUARD_TEST_VARIANT).
    println!("cargo:rerun-if-env-changed=ICMPGUARD_BPF_CFLAGS");
    if let Ok(extra) = env::var("ICMPGUARD_BPF_CFLAGS") {
        args.extend(extra.split_whitespace().map(str::to_string));
    }

    let obj = out.join("icmpguard.bpf.o");
    if let Err(e) =
        SkeletonBuilder::new().source(SRC).obj(&obj).clang_args(args).build_and_generate(out.join("icmpguard.skel.rs"))
    {
        eprintln!("error: building the BPF object from {SRC} failed: {e:#}");
        eprintln!("hint: the build needs clang and the kernel headers: apt-get install clang libelf-dev zlib1g-dev pkg-config make linux-libc-dev");
        std::process::exit(1);
    }
    // The object's identity (FNV-1a of its bytes): a restarted daemon
    // reuses the programs it finds pinned only when they were loaded from
    // this very object.
    let bytes = std::fs::read(&obj).unwrap_or_default();
    let id = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    println!("cargo:rustc-env=ICMPGUARD_OBJECT_ID={id:016x}");
    // ICMPGUARD_SKIP_PRIVILEGED=1 marks the tests that need root as
    // ignored (they show as such in the summary, not as passed).
    println!("cargo::rustc-check-cfg=cfg(icmpguard_skip_privileged)");
    println!("cargo:rerun-if-env-changed=ICMPGUARD_SKIP_PRIVILEGED");
    if env::var_os("ICMPGUARD_SKIP_PRIVILEGED").is_some() {
        println!("cargo:rustc-cfg=icmpguard_skip_privileged");
    }
    println!("cargo:rerun-if-changed=bpf");
    for f in ["bpf/icmpguard.bpf.c", "bpf/icmpguard.h", "bpf/parse.h"] {
        println!("cargo:rerun-if-changed={f}");
    }
}

fn multiarch_include() -> Option<String> {
    let out = Command::new("gcc").arg("-print-multiarch").output().ok()?;
    let triple = String::from_utf8(out.stdout).ok()?;
    let dir = format!("/usr/include/{}", triple.trim());
    std::path::Path::new(&dir).is_dir().then_some(dir)
}
