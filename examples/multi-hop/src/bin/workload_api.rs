//! `kest-workload-api`: a stand-in for a SPIRE agent in the multi-hop
//! example's `--spiffe` mode.
//!
//! SPIRE is not in the package registries reachable here, so this process
//! plays its part with the official SPIFFE Workload API (`workload.proto`,
//! the `FetchX509SVID` server stream over gRPC on a Unix socket — the
//! messages of `kest::identity::spiffe::proto`): it mints a CA for the trust
//! domain and an X509-SVID (P-256, so entries are signed `ES256`) for every
//! service with `rcgen`, and serves **one socket per service**. A real SPIRE
//! agent serves one socket and tells workloads apart by attesting the
//! calling process; here the socket a workload connects to *is* its
//! identity (say so to anyone reading the demo).
//!
//! Every SVID is **rotated on an interval**: a new key and certificate for
//! every service, valid a few seconds longer than the interval (the
//! overlap in which entries signed with the previous SVID still verify),
//! pushed down every open stream. Each response also carries the trust
//! bundle (the CA), which verifiers take as their trust anchor.
//!
//! It also serves the **SVID directory** over HTTP on loopback
//! (`GET /svids`, `{"svids":[{"spiffe_id","x509_svid"}]}`, base64 DER
//! chains): every SVID not yet expired. Kest entries carry no certificate
//! (their header is fixed by wire compatibility with the reference
//! implementation), so verifiers learn peers' leaf certificates there and
//! check each chain against the bundle from their own socket: the
//! directory is not trusted. A new SVID is listed `--publish-lead-ms`
//! before it is pushed to its workload, so a verifier that refreshes when
//! it meets an unknown key always finds it.
//!
//! For the offline check, every rotation's public keys are written to
//! `--keys-dir` as `epoch-<n>.json` (a JWKS, kid = SPIFFE ID), for
//! `kest verify --key-history`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::get;
use clap::Parser;
use kest::identity::spiffe::proto::{
    FETCH_X509_SVID, SECURITY_HEADER, X509Svid as SvidMessage, X509SvidRequest, X509SvidResponse,
};
use kest::identity::svid_directory::directory_document;
use kest::identity::{SpiffeIdentity, X509Svid};
use kest_core::Signer as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::{Request, Response, Status};

/// Command-line arguments.
#[derive(Debug, Parser)]
struct Args {
    /// The trust domain.
    #[arg(long, default_value = "kest.example")]
    trust_domain: String,
    /// A service: its SPIFFE ID is `spiffe://<trust domain>/<name>`, its
    /// socket `<socket-dir>/<name>.sock`; repeatable.
    #[arg(long = "service", required = true)]
    services: Vec<String>,
    /// Where the sockets are created.
    #[arg(long)]
    socket_dir: PathBuf,
    /// Rotate every SVID this often (milliseconds).
    #[arg(long, default_value_t = 2000)]
    rotate_ms: u64,
    /// Each SVID is valid this much longer than the rotation interval
    /// (milliseconds): the overlap.
    #[arg(long, default_value_t = 4000)]
    overlap_ms: u64,
    /// A new SVID is listed in the directory this long before it is pushed
    /// to its workload (milliseconds).
    #[arg(long, default_value_t = 300)]
    publish_lead_ms: u64,
    /// Where to write the directory's port once listening.
    #[arg(long)]
    port_file: PathBuf,
    /// Where to write `epoch-<n>.json`, the public keys of each rotation.
    #[arg(long)]
    keys_dir: PathBuf,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One issued SVID.
#[derive(Clone)]
struct Issued {
    spiffe_id: String,
    chain: Vec<u8>,
    key: Vec<u8>,
    not_after: SystemTime,
}

struct Authority {
    trust_domain: String,
    ca: Issuer<'static, KeyPair>,
    ca_der: Vec<u8>,
    validity: Duration,
}

impl Authority {
    fn new(trust_domain: &str, validity: Duration) -> Result<Authority, Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, format!("{trust_domain} demo CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            trust_domain: trust_domain.to_owned(),
            ca_der: cert.der().to_vec(),
            ca: Issuer::new(params, key),
            validity,
        })
    }

    /// A fresh P-256 X509-SVID for `name`, valid from a minute ago (clock
    /// skew) to `validity` from now.
    fn mint(&self, name: &str) -> Result<Issued, Error> {
        let spiffe_id = format!("spiffe://{}/{name}", self.trust_domain);
        let now = SystemTime::now();
        let not_after = now + self.validity;
        let at = |t: SystemTime| -> Result<_, Error> {
            Ok(rcgen::date_time_ymd(1970, 1, 1) + t.duration_since(SystemTime::UNIX_EPOCH)?)
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![SanType::URI(spiffe_id.as_str().try_into()?)];
        params.not_before = at(now - Duration::from_secs(60))?;
        params.not_after = at(not_after)?;
        let cert = params.signed_by(&key, &self.ca)?;
        Ok(Issued { spiffe_id, chain: cert.der().to_vec(), key: key.serialize_der(), not_after })
    }

    fn response(&self, svid: &Issued) -> X509SvidResponse {
        X509SvidResponse {
            svids: vec![SvidMessage {
                spiffe_id: svid.spiffe_id.clone(),
                x509_svid: svid.chain.clone(),
                x509_svid_key: svid.key.clone(),
                bundle: self.ca_der.clone(),
                hint: String::new(),
            }],
            ..Default::default()
        }
    }
}

/// The Workload API of one service: every stream gets the current SVID,
/// then each rotation.
#[derive(Clone)]
struct WorkloadApi {
    authority: Arc<Authority>,
    current: watch::Receiver<Issued>,
}

impl tonic::server::NamedService for WorkloadApi {
    const NAME: &'static str = "SpiffeWorkloadAPI";
}

struct Fetch(WorkloadApi);

type Stream = ReceiverStream<Result<X509SvidResponse, Status>>;

impl tonic::server::ServerStreamingService<X509SvidRequest> for Fetch {
    type Response = X509SvidResponse;
    type ResponseStream = Stream;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Stream>, Status>> + Send>>;
    fn call(&mut self, request: Request<X509SvidRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move {
            // The Workload API requires this header (SPIFFE Workload Endpoint spec).
            if request.metadata().get(SECURITY_HEADER).and_then(|v| v.to_str().ok()) != Some("true") {
                return Err(Status::invalid_argument("security header missing from request"));
            }
            let (tx, rx) = mpsc::channel(4);
            let mut current = api.current.clone();
            tokio::spawn(async move {
                loop {
                    let svid = current.borrow_and_update().clone();
                    if tx.send(Ok(api.authority.response(&svid))).await.is_err() {
                        return; // the client went away
                    }
                    if current.changed().await.is_err() {
                        return;
                    }
                }
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        })
    }
}

impl tower::Service<http::Request<Body>> for WorkloadApi {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let api = self.clone();
        Box::pin(async move {
            if req.uri().path() != FETCH_X509_SVID {
                return Ok(Status::unimplemented("only FetchX509SVID").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.server_streaming(Fetch(api), req).await)
        })
    }
}

/// Every SVID issued and not yet expired, for the directory.
type Listing = Arc<Mutex<Vec<Issued>>>;

fn public_jwk(svid: &Issued) -> Result<serde_json::Value, Error> {
    let identity = SpiffeIdentity::new(X509Svid::from_der(&svid.chain, &svid.key)?);
    let key = identity.public_key().ok_or("the SVID has no public key")?;
    Ok(key.to_jwk(&svid.spiffe_id))
}

fn write_epoch(dir: &std::path::Path, epoch: u64, svids: &[Issued]) -> Result<(), Error> {
    let keys: Vec<serde_json::Value> = svids.iter().map(public_jwk).collect::<Result<_, _>>()?;
    let path = dir.join(format!("epoch-{epoch}.json"));
    std::fs::write(path, serde_json::json!({ "keys": keys }).to_string())?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let rotate = Duration::from_millis(args.rotate_ms);
    let lead = Duration::from_millis(args.publish_lead_ms);
    let authority =
        Arc::new(Authority::new(&args.trust_domain, rotate + lead + Duration::from_millis(args.overlap_ms))?);
    std::fs::create_dir_all(&args.socket_dir)?;
    std::fs::create_dir_all(&args.keys_dir)?;

    let listing: Listing = Arc::new(Mutex::new(Vec::new()));
    let mut senders: BTreeMap<String, watch::Sender<Issued>> = BTreeMap::new();
    let mut first = Vec::new();
    for name in &args.services {
        let svid = authority.mint(name)?;
        first.push(svid.clone());
        let (tx, rx) = watch::channel(svid);
        let socket = args.socket_dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket)?;
        let api = WorkloadApi { authority: authority.clone(), current: rx };
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            if let Err(e) = tonic::transport::Server::builder().serve_with_incoming(api, incoming).await {
                eprintln!("kest-workload-api: a socket stopped: {e}");
            }
        });
        senders.insert(name.clone(), tx);
    }
    write_epoch(&args.keys_dir, 0, &first)?;
    if let Ok(mut list) = listing.lock() {
        list.extend(first);
    }

    // The SVID directory: every SVID not expired yet.
    let served = listing.clone();
    let app = Router::new().route(
        "/svids",
        get(move || {
            let served = served.clone();
            async move {
                let now = SystemTime::now();
                let list = served.lock().map(|l| l.clone()).unwrap_or_default();
                let doc = directory_document(
                    list.iter()
                        .filter(|s| s.not_after > now)
                        .map(|s| (s.spiffe_id.as_str(), s.chain.as_slice())),
                );
                axum::Json(doc)
            }
        }),
    );
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = http.local_addr()?.port();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(http, app).await {
            eprintln!("kest-workload-api: the directory stopped: {e}");
        }
    });
    std::fs::write(&args.port_file, port.to_string())?;
    eprintln!(
        "kest-workload-api: {} services, sockets in {}, directory http://127.0.0.1:{port}/svids, rotating every {} ms",
        args.services.len(),
        args.socket_dir.display(),
        args.rotate_ms
    );

    // Rotation: mint, list in the directory, wait the lead, push.
    let mut epoch = 0u64;
    let mut ticker = tokio::time::interval(rotate);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        epoch += 1;
        let fresh: Vec<(String, Issued)> = args
            .services
            .iter()
            .map(|n| Ok::<_, Error>((n.clone(), authority.mint(n)?)))
            .collect::<Result<_, _>>()?;
        write_epoch(&args.keys_dir, epoch, &fresh.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>())?;
        if let Ok(mut list) = listing.lock() {
            let now = SystemTime::now();
            list.retain(|s| s.not_after > now);
            list.extend(fresh.iter().map(|(_, s)| s.clone()));
        }
        tokio::time::sleep(lead).await;
        for (name, svid) in fresh {
            if let Some(tx) = senders.get(&name) {
                let _ = tx.send(svid);
            }
        }
        eprintln!("kest-workload-api: epoch {epoch}: every SVID rotated");
    }
}
