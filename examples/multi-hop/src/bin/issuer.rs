//! `kest-issuer`: a local OpenID-style token issuer for the multi-hop
//! example. It generates an Ed25519 key, serves its JWKS on loopback at
//! `/.well-known/jwks.json`, and writes one user token (for `alice`, with an
//! audience and a short expiry) to `--token-file`.

use std::path::PathBuf;

use axum::{Json, Router, routing::get};
use clap::Parser;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use kest_core::encoding::b64url_encode;
use serde_json::json;

/// Command-line arguments.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Where to write the bound port.
    #[arg(long)]
    port_file: PathBuf,
    /// Where to write the user's token.
    #[arg(long)]
    token_file: PathBuf,
    /// The token's subject.
    #[arg(long, default_value = "alice")]
    user: String,
    /// Issuer (`iss`).
    #[arg(long, default_value = "http://kest-issuer.local")]
    issuer: String,
    /// Audience (`aud`).
    #[arg(long, default_value = "kest-gateway")]
    audience: String,
}

const KID: &str = "issuer-key-1";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let der = key.to_pkcs8_der().map_err(|e| format!("pkcs8: {e}"))?;
    let encoding = EncodingKey::from_ed_der(der.as_bytes());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let claims = json!({
        "iss": args.issuer,
        "aud": args.audience,
        "sub": format!("user-{}", args.user),
        "preferred_username": args.user,
        "azp": "support-portal",
        "scope": "support:ask",
        "iat": now,
        "exp": now + 3600,
    });
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(KID.into());
    let token = encode(&header, &claims, &encoding)?;
    std::fs::write(&args.token_file, token)?;

    let jwks = json!({ "keys": [{
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": KID,
        "x": b64url_encode(key.verifying_key().as_bytes()),
    }]});
    let app = Router::new().route("/.well-known/jwks.json", get(move || async move { Json(jwks) }));
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    std::fs::write(&args.port_file, listener.local_addr()?.port().to_string())?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown()).await?;
    Ok(())
}

async fn shutdown() {
    let _ = tokio::signal::ctrl_c().await;
}
