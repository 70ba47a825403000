//! argv -> command -> exit code; everything else is in the library.

use std::process::ExitCode;

use clap::Parser;

use icmpguard::cli::{Cli, Command};
use icmpguard::{commands, error};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => icmpguard::daemon::run(&config),
        Command::Check { fragment: Some(f), .. } => commands::check_fragment(&f),
        Command::Check { config, fragment: None } => commands::check(&config),
        Command::Status { config, json, pin_dir } => commands::status(&config, pin_dir.as_deref(), json),
        Command::Unload { config, pin_dir } => commands::unload(&config, pin_dir.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e {
                // Diagnostics start with FILE:LINE:COL, which editors and
                // CI parse: no program name before them.
                error::Error::Config { .. } => eprintln!("{e}"),
                _ => eprintln!("icmpguard: {e}"),
            }
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(error::EXIT_RUNTIME as u8))
        }
    }
}
