//! `kest viz`: the passport DAG as a tree, Mermaid, Graphviz dot, or a
//! picture (SVG, or a self-contained HTML page) laid out by the tool itself.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kest_core::{Limits, UnverifiedPassport, Verifier};

use super::load_keys;
use crate::input::read_input;
use crate::render::count;
use crate::render::picture::{Picture, Refused};
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
    /// A picture: a standalone SVG document, laid out by kest (no external renderer).
    Svg,
    /// One self-contained HTML page: the picture, and each entry's decoded payload on click
    /// (no network access, no CDN).
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
    /// svg/html: also draw a call that was refused before it ran (so has no entry) as a dashed
    /// "denied" node after the tips.
    #[arg(long, value_name = "NAME")]
    pub denied_operation: Option<String>,
    /// svg/html: why that call was refused (e.g. the policy that denied it).
    #[arg(long, value_name = "TEXT", requires = "denied_operation")]
    pub denied_reason: Option<String>,
    /// Passport file, or `-` for stdin.
    #[arg(value_name = "PASSPORT")]
    pub input: PathBuf,
}

use crate::render::nodes_unverified;
pub use crate::render::{Node, nodes_of, render_dot, render_mermaid, render_tree};

/// Runs `kest viz`.
pub fn run(args: &VizArgs) -> Result<Exit, CliError> {
    let limits = Limits::default();
    let text = read_input(&args.input, limits.max_passport_bytes)?;
    let (nodes, picture) = if args.keys.is_empty() {
        let p = match UnverifiedPassport::from_json(&text, &limits) {
            Ok(p) => p,
            Err(e) => {
                // Not a passport at all: invalid (exit 1), as in `verify` and `inspect`.
                println!("invalid: {e} [{}]", e.kind());
                return Ok(Exit::Invalid);
            }
        };
        (nodes_unverified(&p), Picture::unverified(&p))
    } else {
        match Verifier::new(load_keys(&args.keys)?).verify_json(&text) {
            Ok(p) => (nodes_of(&p), Picture::verified(&p)),
            Err(e) => {
                println!("invalid: {e} [{}]", e.kind());
                return Ok(Exit::Invalid);
            }
        }
    };
    let verified = !args.keys.is_empty();
    let note = if verified { "verified" } else { "NOT verified (pass --keys to verify)" };
    let refused = args
        .denied_operation
        .as_ref()
        .map(|operation| Refused { operation: operation.clone(), reason: args.denied_reason.clone() });
    match args.format {
        VizFormat::Tree => {
            println!("passport: {}, {note}", count(nodes.len(), "entry", "entries"));
            print!("{}", render_tree(&nodes));
        }
        VizFormat::Mermaid => {
            println!(
                "{}%% kest passport: {}, {note}",
                render_mermaid(&nodes),
                count(nodes.len(), "entry", "entries")
            )
        }
        VizFormat::Dot => {
            print!(
                "// kest passport: {}, {note}\n{}",
                count(nodes.len(), "entry", "entries"),
                render_dot(&nodes)
            )
        }
        VizFormat::Svg => print!("{}", picture.with_refused(refused).svg()),
        VizFormat::Html => print!("{}", picture.with_refused(refused).html()),
    }
    Ok(Exit::Ok)
}
