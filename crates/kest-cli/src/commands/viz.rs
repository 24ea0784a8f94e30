//! `kest viz`: the passport DAG as a tree, Mermaid, Graphviz dot or HTML.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kest_core::{Limits, UnverifiedPassport, Verifier};

use super::load_keys;
use crate::input::read_input;
use crate::{CliError, Exit};

/// Output format of `kest viz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum VizFormat {
    /// An indented tree for the terminal.
    #[default]
    Tree,
    /// A Mermaid flowchart.
    Mermaid,
    /// Graphviz dot.
    Dot,
    /// A standalone HTML page (Mermaid source inside a <pre>, readable offline).
    Html,
}

/// Arguments of `kest viz`.
#[derive(Debug, Args)]
pub struct VizArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = VizFormat::Tree)]
    pub format: VizFormat,
    /// Verify against these keys first (JWKS/JWK; repeatable); without it the graph is drawn from
    /// decoded, unverified entries and says so.
    #[arg(long = "keys", value_name = "JWKS")]
    pub keys: Vec<PathBuf>,
    /// Passport file, or `-` for stdin.
    #[arg(value_name = "PASSPORT")]
    pub input: PathBuf,
}

pub use crate::render::{Node, nodes_of, render_dot, render_mermaid, render_tree};
use crate::render::{nodes_unverified, render_html};

/// Runs `kest viz`.
pub fn run(args: &VizArgs) -> Result<Exit, CliError> {
    let limits = Limits::default();
    let text = read_input(&args.input, limits.max_passport_bytes)?;
    let (nodes, verified) = if args.keys.is_empty() {
        let p = UnverifiedPassport::from_json(&text, &limits).map_err(CliError::from_display)?;
        (nodes_unverified(&p), false)
    } else {
        match Verifier::new(load_keys(&args.keys)?).verify_json(&text) {
            Ok(p) => (nodes_of(&p), true),
            Err(e) => {
                println!("invalid: {e} [{}]", e.kind());
                return Ok(Exit::Invalid);
            }
        }
    };
    let note = if verified { "verified" } else { "NOT verified (pass --keys to verify)" };
    match args.format {
        VizFormat::Tree => {
            println!("passport: {} entries, {note}", nodes.len());
            print!("{}", render_tree(&nodes));
        }
        VizFormat::Mermaid => print!("{}", render_mermaid(&nodes)),
        VizFormat::Dot => print!("{}", render_dot(&nodes)),
        VizFormat::Html => println!("{}", render_html(&nodes, note)),
    }
    Ok(Exit::Ok)
}
