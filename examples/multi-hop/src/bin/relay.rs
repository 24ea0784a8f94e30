//! `kest-relay`: a Rust service in the middle of a cross-language chain
//! (used by the Python package's tests: `kest_rs` → this relay → the
//! reference verifier and the `kest` CLI).
//!
//! Behind a `KestLayer` (an inner service: a request without a passport is
//! refused, the caller's passport is restored from `baggage`, *verified*
//! against the JWKS — semantic checks on — and bound to `kest.chain_tip`)
//! it runs one verified call (policy first, then a signed entry with its
//! own key) and answers `{"passport": [...]}`: the caller's passport
//! extended by this relay's entry. A request the layer refuses never
//! reaches the handler (its error status and body are the layer's).

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use kest::http::{KestLayer, LineageLayer};
use kest::identity::StaticIdentity;
use kest::policy::rego::RegoEngine;
use kest::{CallContext, HookError, Kest, Verified};
use serde_json::{Value, json};

/// Command-line arguments.
#[derive(Debug, Parser)]
struct Args {
    /// The relay's principal (its entries' `principal`).
    #[arg(long, default_value = "spiffe://kest.example/relay")]
    principal: String,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Where to write the bound port.
    #[arg(long)]
    port_file: PathBuf,
    /// The relay's private key (JWK from `kest keygen`).
    #[arg(long)]
    key: PathBuf,
    /// JWKS with the public keys of every principal upstream.
    #[arg(long)]
    jwks: PathBuf,
    /// The operation name of the relay's entry.
    #[arg(long, default_value = "relay")]
    operation: String,
}

/// Allows everything: the relay's only gate is the verified passport.
const OPEN: &str = "package relay.open\ndefault allow := true\n";

struct App {
    kest: Arc<Kest>,
    hook: Verified,
}

async fn handle(State(app): State<Arc<App>>) -> (StatusCode, Json<Value>) {
    let call = CallContext::new().runtime(&app.kest);
    match app.hook.call_async(call, async { Ok::<_, std::convert::Infallible>(()) }).await {
        Ok(()) => {
            let passport = kest::current_passport().map(|p| p.to_json()).unwrap_or_else(|| "[]".into());
            let passport: Value = serde_json::from_str(&passport).unwrap_or(Value::Null);
            (StatusCode::OK, Json(json!({ "passport": passport })))
        }
        Err(HookError::Kest(e)) => {
            (StatusCode::FORBIDDEN, Json(json!({ "error": e.kind(), "message": e.to_string() })))
        }
        Err(HookError::Operation(never)) => match never {},
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let identity: Arc<dyn kest::identity::IdentityProvider> =
        Arc::new(StaticIdentity::from_key_file(&args.key, Some(&args.principal))?);
    let engine = RegoEngine::new([("relay/open", OPEN)])?;
    let kest = Arc::new(Kest::builder().identity(identity).engine(Arc::new(engine)).build()?);
    let hook = Verified::builder(args.operation.clone()).policy("relay/open").build()?;
    let layer =
        KestLayer::builder().lineage(LineageLayer::builder().jwks_file(args.jwks.clone())).build().await?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let app = Arc::new(App { kest, hook });
    let router = Router::new().route("/", post(handle)).with_state(app).layer(layer);
    std::fs::write(&args.port_file, listener.local_addr()?.port().to_string())?;
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
