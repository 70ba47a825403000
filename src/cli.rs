//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_PATH;

#[derive(Debug, Parser)]
#[command(
    name = "icmpguard",
    version,
    propagate_version = true,
    about = "Declarative ICMP firewall: keeps an XDP filter in step with a config file",
    long_about = "icmpguard drops ICMP echo (or all ICMP) from and to the addresses listed in \
                  its configuration file, with an XDP program on ingress and a tcx program on \
                  egress. The daemon keeps the kernel in step with the file and logs what the \
                  filter sees to syslog. See icmpguard(8) and icmpguard.toml(5).",
    after_help = "Exit status: 0 success, 1 invalid configuration, 2 usage error, 3 runtime failure."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground: load and attach the filter, enforce
    /// the file, reload on SIGHUP, log events (needs root)
    Run {
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate a configuration file and its fragments (icmpguard.d/*.toml
    /// beside it) and exit; touches no kernel state and needs no privileges
    /// (fit for Ansible's `validate: icmpguard check -c %s`)
    Check {
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// Validate this one fragment alone instead (`block` and `allow`
        /// only; fit for `validate: icmpguard check --fragment %s`)
        #[arg(long, value_name = "FILE", conflicts_with = "config")]
        fragment: Option<PathBuf>,
    },
    /// Show what the kernel enforces now, and any drift from the file (needs root)
    Status {
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        /// Pin directory to read, instead of the one the file names
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
    },
    /// Detach the filter from every interface and remove everything pinned
    /// (needs root; refused while a daemon runs)
    Unload {
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// Pin directory to clean, instead of the one the file names
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
    },
}
