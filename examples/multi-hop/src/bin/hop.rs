//! `kest-hop`: one service of the multi-hop example.
//!
//! Each hop is a separate process with its own principal key. Behind one
//! `KestLayer` (which restores, *verifies* — semantic checks, known origins,
//! the sanitizer set — and binds the caller's passport against the JWKS of
//! all principals; inner hops refuse requests without one) it runs its
//! operation as a verified call — policy first, then a signed entry — and,
//! if it has a next hop, forwards the request with the passport in
//! `baggage`. The last hop answers with the final passport, which travels
//! back up in the response bodies. The gateway also verifies the user's
//! bearer token against the issuer's JWKS.
//!
//! With `--spiffe-socket` and `--svid-directory` (the demo's `--spiffe`
//! mode) instead of `--key` and `--jwks`, the hop's identity is the X509-SVID
//! it gets from a SPIFFE Workload API socket (rotated from the stream while
//! it runs), and its layer verifies passports and workload tokens with the
//! trust bundle from the same socket plus peers' SVIDs from an SVID
//! directory (each chain checked against that bundle), refreshed on an
//! interval and when an entry names an unknown or rotated key.
//!
//! Telemetry comes from the environment like any Kest configuration
//! (`KEST_TELEMETRY_EXPORTERS`, e.g. `file:/tmp/spans/hop1.jsonl`, and
//! `KEST_SERVICE_NAME`); on SIGTERM or Ctrl-C the hop stops serving and
//! shuts telemetry down, which writes the last batch of spans.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use kest::cache::CacheProvider;
use kest::http::{
    IdentityLayer, JwksSource, KestLayer, KestPropagationMiddleware, LineageLayer, LineageLayerBuilder,
    RefreshPolicy,
};
use kest::identity::{SpiffeBundleResolver, SpiffeIdentity, StaticIdentity, SvidDirectoryResolver};
use kest::policy::rego::RegoEngine;
use kest::propagation::Propagator;
use kest::{CallContext, HookError, Kest, KestError, Verified};
use kest_core::Classification;
use kest_core::Signer as _;
use serde_json::{Value, json};
use tracing::Instrument as _;

/// Command-line arguments.
#[derive(Debug, Parser)]
struct Args {
    /// This hop's name (its principal is `spiffe://kest.example/<name>`).
    #[arg(long)]
    name: String,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Where to write the bound port.
    #[arg(long)]
    port_file: PathBuf,
    /// This hop's private key (JWK from `kest keygen`).
    #[arg(long, required_unless_present = "spiffe_socket", conflicts_with = "spiffe_socket")]
    key: Option<PathBuf>,
    /// JWKS with the public keys of every principal (verifies incoming passports).
    #[arg(long, required_unless_present = "spiffe_socket", conflicts_with = "spiffe_socket")]
    jwks: Option<PathBuf>,
    /// SPIFFE mode: the Workload API socket (`unix:///path` or a path) that
    /// gives this hop its X509-SVID (its identity, rotated from the stream)
    /// and the trust bundle.
    #[arg(long, requires = "svid_directory")]
    spiffe_socket: Option<String>,
    /// SPIFFE mode: the SVID directory URL (peers' SVID chains, checked
    /// against the bundle; https, or http on loopback).
    #[arg(long, requires = "spiffe_socket")]
    svid_directory: Option<String>,
    /// SPIFFE mode: refresh the directory this often (milliseconds).
    #[arg(long, default_value_t = 1000)]
    directory_refresh_ms: u64,
    /// The next hop's URL; none for the last hop.
    #[arg(long)]
    next: Option<String>,
    /// The operation name of this hop's entry.
    #[arg(long)]
    operation: String,
    /// Origin of the data this hop brings in.
    #[arg(long)]
    source_type: Option<String>,
    /// Taint added here; repeatable.
    #[arg(long = "taint")]
    taints: Vec<String>,
    /// Taint removed here; repeatable.
    #[arg(long = "remove-taint")]
    remove_taints: Vec<String>,
    /// Sanitizer trust override.
    #[arg(long)]
    trust_override: Option<i64>,
    /// Mark this hop's entry as a sanitizer.
    #[arg(long)]
    sanitizer: bool,
    /// The function-tier policy (`example/open` or `example/final_guard`).
    #[arg(long, default_value = "example/open")]
    policy: String,
    /// Verify the user's bearer token against this JWKS URL: this hop is
    /// the entry point (the gateway). Every other hop is an inner service
    /// and refuses requests without a verified passport.
    #[arg(long)]
    issuer_jwks: Option<String>,
    /// A principal allowed to raise trust (a sanitizer); repeatable.
    #[arg(long = "sanitizer-principal")]
    sanitizer_principals: Vec<String>,
    /// Expected token issuer.
    #[arg(long, default_value = "http://kest-issuer.local")]
    issuer: String,
    /// Expected token audience.
    #[arg(long, default_value = "kest-gateway")]
    audience: String,
    /// Redis URL for claim checks (e.g. `redis://127.0.0.1:6390/`).
    #[arg(long)]
    redis: Option<String>,
    /// Inline/compressed baggage threshold in bytes.
    #[arg(long, default_value_t = 4096)]
    threshold: usize,
    /// Random, incompressible metadata bytes added to this hop's entry (to grow the passport).
    #[arg(long, default_value_t = 0)]
    pad_bytes: usize,
}

/// Allows everything: the steps whose only gate is the tier policies.
const OPEN: &str = "package example.open\ndefault allow := true\n";

/// The last hop's guard: trust at least 50 and no `unverified` taint.
/// Only true because a sanitizer upstream restored trust and removed the
/// taint that the internet fetch added.
const FINAL_GUARD: &str = r#"
package example.final_guard
default allow := false
allow if {
    input.subject.trust_score >= 50
    not "unverified" in input.subject.taints
    input.subject.user != null
}
"#;

struct App {
    name: String,
    kest: Arc<Kest>,
    hook: Verified,
    next: Option<String>,
    client: reqwest_middleware::ClientWithMiddleware,
    padding: Option<String>,
}

fn error(status: StatusCode, body: Value) -> (StatusCode, Json<Value>) {
    (status, Json(body))
}

/// One request, inside a request span: with telemetry on, the hook's span
/// is its child and the next hop continues the same (sampled) trace.
async fn handle(state: State<Arc<App>>, request: Json<Value>) -> (StatusCode, Json<Value>) {
    let span = tracing::info_span!("kest_hop.request", hop = %state.name);
    handle_request(state, request).instrument(span).await
}

async fn handle_request(
    State(app): State<Arc<App>>,
    Json(request): Json<Value>,
) -> (StatusCode, Json<Value>) {
    // 1. This hop's own step, policy-checked and recorded before anything
    //    goes downstream.
    let mut call = CallContext::new().runtime(&app.kest);
    if let Some(pad) = &app.padding {
        call = call.metadata(json!({ "padding": pad }));
    }
    let name = app.name.clone();
    let step =
        app.hook.call_async(call, async move { Ok::<_, std::convert::Infallible>(format!("{name} done")) });
    match step.await {
        Ok(_) => {}
        Err(HookError::Kest(e @ (KestError::Denied { .. } | KestError::PolicyFailed { .. }))) => {
            let (policy, tier) = e.policy().map(|(p, t)| (p.to_owned(), t.to_string())).unwrap_or_default();
            return error(
                StatusCode::FORBIDDEN,
                json!({ "error": "denied", "hop": app.name, "policy": policy, "tier": tier, "message": e.to_string() }),
            );
        }
        Err(HookError::Kest(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "kest", "message": e.to_string() }),
            );
        }
        Err(HookError::Operation(never)) => match never {},
    }
    // 2. Forward, or answer with the final passport.
    match &app.next {
        Some(url) => match app.client.post(url).json(&request).send().await {
            Ok(response) => {
                let status =
                    StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                match response.json::<Value>().await {
                    Ok(body) => (status, Json(body)),
                    Err(e) => error(
                        StatusCode::BAD_GATEWAY,
                        json!({ "error": "bad_downstream", "message": e.to_string() }),
                    ),
                }
            }
            Err(e) => {
                error(StatusCode::BAD_GATEWAY, json!({ "error": "downstream", "message": e.to_string() }))
            }
        },
        None => {
            let passport = kest::current_passport().map(|p| p.to_json()).unwrap_or_else(|| "[]".into());
            let passport: Value = serde_json::from_str(&passport).unwrap_or(Value::Null);
            (StatusCode::OK, Json(json!({ "answer": "sent", "last_hop": app.name, "passport": passport })))
        }
    }
}

fn hook(args: &Args) -> Result<Verified, Box<dyn std::error::Error>> {
    let mut b = Verified::builder(args.operation.clone()).policy(args.policy.clone());
    if let Some(s) = &args.source_type {
        b = b.source_type(s.clone());
    }
    for t in &args.taints {
        b = b.added_taint(t.clone());
    }
    for t in &args.remove_taints {
        b = b.removed_taint(t.clone());
    }
    if let Some(o) = args.trust_override {
        b = b.trust_override(o);
    }
    if args.sanitizer {
        b = b.classification(Classification::Sanitizer);
    }
    Ok(b.build()?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let principal = format!("spiffe://kest.example/{}", args.name);
    let (identity, keys) = identity_and_keys(&args, &principal).await?;
    let engine = RegoEngine::new([("example/open", OPEN), ("example/final_guard", FINAL_GUARD)])?;
    let kest = Kest::builder().identity(identity.clone()).engine(Arc::new(engine)).with_env()?.build()?;
    // Exporters configured in the environment: installed before serving,
    // shut down (flushed) after the last request.
    let telemetry = kest.telemetry().map(kest::telemetry::init_from_config).transpose()?;
    if let Some(guard) = &telemetry {
        use tracing_subscriber::layer::SubscriberExt as _;
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(guard.tracing_layer()))?;
    }
    let kest = Arc::new(kest);

    let mut propagator = Propagator::builder().threshold(args.threshold);
    if let Some(url) = &args.redis {
        let cache: Arc<dyn CacheProvider> = Arc::new(kest::cache::RedisCache::connect(url).await?);
        propagator = propagator.cache(cache);
    }
    let propagator = propagator.build();
    // Semantic checks and unknown-origin refusal are on by default; only
    // the listed principals may raise trust.
    let mut lineage = keys.sanitizers(args.sanitizer_principals.clone()).propagator(propagator.clone());
    // Bound first: inner hops authenticate their callers with workload
    // tokens minted for this origin.
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let origin = format!("http://{}", listener.local_addr()?);
    let mut layer = KestLayer::builder();
    if let Some(url) = &args.issuer_jwks {
        lineage = lineage.entry_point("user_input");
        layer = layer.identity(
            IdentityLayer::builder()
                .jwks_url(url)?
                .issuer(args.issuer.clone())
                .audience(args.audience.clone()),
        );
    } else {
        // An inner service: every caller proves which workload it is, and
        // every tip it sends must be signed by that workload.
        lineage = lineage.authenticate_peers(origin);
    }
    let layer = layer.lineage(lineage).build().await?;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(KestPropagationMiddleware::new(propagator).workload_identity(identity.clone()))
        .build();
    let padding = (args.pad_bytes > 0).then(|| {
        let mut bytes = vec![0u8; args.pad_bytes];
        let _ = getrandom::fill(&mut bytes);
        kest_core::encoding::b64url_encode(&bytes)
    });
    let app = Arc::new(App {
        name: args.name.clone(),
        kest,
        hook: hook(&args)?,
        next: args.next.clone(),
        client,
        padding,
    });
    let router = Router::new().route("/", post(handle)).with_state(app).layer(layer);
    std::fs::write(&args.port_file, listener.local_addr()?.port().to_string())?;
    axum::serve(listener, router).with_graceful_shutdown(stop_signal()).await?;
    if let Some(guard) = telemetry {
        tokio::task::spawn_blocking(move || guard.shutdown()).await??;
    }
    Ok(())
}

/// The hop's identity and the start of its lineage layer (its key source):
/// a key file and a JWKS file, or (SPIFFE mode) the Workload API socket and
/// the SVID directory.
async fn identity_and_keys(
    args: &Args,
    principal: &str,
) -> Result<(Arc<dyn kest::identity::IdentityProvider>, LineageLayerBuilder), Box<dyn std::error::Error>> {
    match (&args.spiffe_socket, &args.svid_directory, &args.key, &args.jwks) {
        (Some(socket), Some(directory), _, _) => {
            let wait = Duration::from_secs(10);
            let identity = SpiffeIdentity::from_workload_api(socket, wait).await?;
            if identity.principal() != principal {
                return Err(format!(
                    "the Workload API at {socket} gives `{}`, not `{principal}`",
                    identity.principal()
                )
                .into());
            }
            let bundle = SpiffeBundleResolver::from_workload_api(socket, wait).await?;
            let policy = RefreshPolicy::default()
                .refresh_interval(Duration::from_millis(args.directory_refresh_ms))
                .min_refetch_interval(Duration::from_millis(100))
                .max_staleness(Duration::from_secs(30));
            let keys = Arc::new(
                SvidDirectoryResolver::load(JwksSource::url(directory)?, bundle, policy, None).await?,
            );
            Ok((identity, LineageLayer::builder().refreshing_key_resolver(keys)))
        }
        (_, _, Some(key), Some(jwks)) => {
            let identity = Arc::new(StaticIdentity::from_key_file(key, Some(principal))?);
            Ok((identity, LineageLayer::builder().jwks_file(jwks.clone())))
        }
        _ => Err("give --key and --jwks, or --spiffe-socket and --svid-directory".into()),
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM (what `kill` and service
/// managers send), so either stops the hop gracefully.
async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
