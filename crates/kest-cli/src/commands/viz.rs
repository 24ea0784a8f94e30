//! `kest viz`: the passport DAG as a tree, Mermaid, Graphviz dot, or a
//! picture (SVG, or a self-contained HTML page) laid out by the tool itself,
//! from a passport file, a `baggage` value, or a trace in span exports.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kest_core::{Limits, UnverifiedPassport, Verifier};

use super::audit::check_trace_id;
use super::load_keys;
use crate::audit::rebuild;
use crate::export;
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
    /// The input is a raw W3C `baggage` header value carrying the passport (inline or
    /// compressed).
    #[arg(long, conflicts_with = "trace")]
    pub baggage: bool,
    /// Draw the passport of this trace, rebuilt from span exports (OTLP JSON lines, SQLite span
    /// stores, directories) as `kest audit` does; its first refused call is drawn as denied.
    #[arg(long, value_name = "TRACE_ID")]
    pub trace: Option<String>,
    /// Passport file (or `-` for stdin); with --trace, one or more span exports.
    #[arg(value_name = "PASSPORT", required = true)]
    pub input: Vec<PathBuf>,
}

use crate::render::nodes_unverified;
pub use crate::render::{Node, nodes_of, render_dot, render_mermaid, render_tree};

/// The passport JSON to draw and, from an export, the refused call of the
/// trace; or the reason the input is not a passport (exit 1).
fn passport_json(
    args: &VizArgs,
    limits: &Limits,
) -> Result<Result<(String, Option<Refused>), String>, CliError> {
    if let Some(trace) = &args.trace {
        check_trace_id(Some(trace))?;
        // Drawing needs no verdict on completeness; the keys, when given,
        // verify the rebuilt passport below exactly as for a file.
        let export = export::read(&args.input)?;
        let Some(t) = rebuild(&export, trace) else {
            return Ok(Err(format!("no Kest span of trace {trace} in the exports [trace_not_found]")));
        };
        let refused = t.denials.first().map(|d| Refused {
            operation: d.operation.clone(),
            reason: match (&d.policy, &d.tier) {
                (Some(p), Some(tier)) => Some(format!("denied by {p} ({tier} tier)")),
                (Some(p), None) => Some(format!("denied by {p}")),
                _ => d.message.clone(),
            },
        });
        return Ok(Ok((t.passport.to_json(), refused)));
    }
    let [input] = args.input.as_slice() else {
        return Err(CliError("one passport at a time (several inputs need --trace)".to_owned()));
    };
    let text = read_input(input, limits.max_passport_bytes)?;
    if args.baggage {
        return Ok(match super::passport_from_baggage(&text)? {
            Ok((json, _)) => Ok((json, None)),
            Err(m) => Err(format!("{} [{}]", m.message, m.kind)),
        });
    }
    Ok(Ok((text, None)))
}

/// Runs `kest viz`.
pub fn run(args: &VizArgs) -> Result<Exit, CliError> {
    let limits = Limits::default();
    let (text, from_export) = match passport_json(args, &limits)? {
        Ok(found) => found,
        Err(invalid) => {
            println!("invalid: {invalid}");
            return Ok(Exit::Invalid);
        }
    };
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
        .map(|operation| Refused { operation: operation.clone(), reason: args.denied_reason.clone() })
        .or(from_export);
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
