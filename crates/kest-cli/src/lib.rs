//! The `kest` command line (SPEC §10): `demo`, `verify`, `inspect`,
//! `viz`, `audit`, `keygen`, `jwks`, `append`, `whoami` and `policy`.
//!
//! Exit codes are part of the contract: 0 success / valid, 1 invalid
//! passport, 2 usage or I/O error.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

pub mod audit;
pub mod commands;
pub mod export;
mod input;
pub mod render;

/// Process exit status of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: success (for `verify`: the passport is valid).
    Ok,
    /// 1: the passport is invalid.
    Invalid,
    /// 2: usage or I/O error.
    Usage,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(match exit {
            Exit::Ok => 0,
            Exit::Invalid => 1,
            Exit::Usage => 2,
        })
    }
}

/// A usage or I/O problem: printed to stderr, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

impl CliError {
    /// Wraps any displayable error.
    pub fn from_display(e: impl std::fmt::Display) -> CliError {
        CliError(e.to_string())
    }
}

/// Kest: signed, verifiable execution lineage.
///
/// A passport is a JSON array of signed entries (JWS); each entry records one
/// step (who ran what, its trust score and taints) and points at the steps
/// before it by hash. Record steps with `kest append`, check a passport with
/// `kest verify`.
#[derive(Debug, Parser)]
#[command(name = "kest", version, about, long_about, disable_help_subcommand = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify a passport's signatures and links (exit 0 valid, 1 invalid, 2 usage/I-O error).
    Verify(commands::verify::VerifyArgs),
    /// Print the decoded entries of a passport without verifying them.
    Inspect(commands::inspect::InspectArgs),
    /// Create an Ed25519 (default) or P-256 (`--alg ES256`) key for a principal (private key to a 0600 file, public JWK to stdout).
    Keygen(commands::keygen::KeygenArgs),
    /// Print a JWKS with the public keys of key files.
    Jwks(commands::jwks::JwksArgs),
    /// Record one signed step in a passport file.
    Append(Box<commands::append::AppendArgs>),
    /// Print the auto-detected workload identity and why it was chosen (exit 2 if none can be used).
    Whoami(commands::whoami::WhoamiArgs),
    /// Draw a passport's DAG (tree, mermaid, dot, svg or html).
    Viz(commands::viz::VizArgs),
    /// Rebuild and verify every passport of every trace from span exports (OTLP JSON lines,
    /// SQLite span stores, directories of collector files); exit 0 all valid, 1 a defect, 2 usage.
    Audit(commands::audit::AuditArgs),
    /// Bundled policies: `list`, `eval` (exit 0 allow, 1 deny, 2 error) and `test` (data test cases).
    Policy(commands::policy::PolicyArgs),
    /// Run the AI-agent demo on embedded defaults (no servers), write and verify its passport.
    Demo(commands::demo::DemoArgs),
    /// Mint a workload token (`kest-workload` header) for a destination, signed with a key file.
    WorkloadToken(commands::workload_token::WorkloadTokenArgs),
    /// Print the help of kest or of a command (`kest help policy eval`); same as `--help`.
    Help(HelpArgs),
}

/// Arguments of `kest help`.
///
/// clap's built-in `help` subcommand takes no options, so `kest help --help`
/// was a usage error; this one is an ordinary command with its own `--help`.
#[derive(Debug, clap::Args)]
pub struct HelpArgs {
    /// The command, and subcommand, to describe (none: kest itself).
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Prints the long help of the (sub)command named by `path`.
fn help(path: &[String]) -> Result<Exit, CliError> {
    let mut command = Cli::command();
    command.build();
    let mut current = &mut command;
    for name in path {
        current = current.find_subcommand_mut(name).ok_or_else(|| {
            CliError(format!(
                "no command `{}`; `kest help` lists them",
                render::ellipsis(&render::printable(name), 64)
            ))
        })?;
    }
    current.print_long_help().map_err(|e| CliError(format!("stdout: {e}")))?;
    Ok(Exit::Ok)
}

/// Parses `args` and runs the command, printing to stdout/stderr.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    run(cli).into()
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> Exit {
    let result = match cli.command {
        Command::Verify(args) => commands::verify::run(&args),
        Command::Inspect(args) => commands::inspect::run(&args),
        Command::Keygen(args) => commands::keygen::run(&args),
        Command::Jwks(args) => commands::jwks::run(&args),
        Command::Append(args) => commands::append::run(&args),
        Command::Whoami(args) => commands::whoami::run(&args),
        Command::Viz(args) => commands::viz::run(&args),
        Command::Audit(args) => commands::audit::run(&args),
        Command::Demo(args) => commands::demo::run(&args),
        Command::WorkloadToken(args) => commands::workload_token::run(&args),
        Command::Policy(args) => commands::policy::run(&args),
        Command::Help(args) => help(&args.command),
    };
    match result {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("kest: error: {e}");
            Exit::Usage
        }
    }
}
