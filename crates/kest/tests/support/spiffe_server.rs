//! Shared by the SPIFFE tests of `kest` and `kest-cli`: SVIDs and bundles
//! minted with `rcgen`, and a SPIFFE Workload API server (the
//! `FetchX509SVID` server stream of the official `workload.proto`) on a
//! Unix socket, streaming whatever the test sends it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType, SignatureAlgorithm,
    date_time_ymd,
};

/// A CA: its issuer and its certificate (DER).
pub struct Ca {
    pub issuer: Issuer<'static, KeyPair>,
    pub der: Vec<u8>,
}

pub fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    Ca { der: cert.der().to_vec(), issuer: Issuer::new(params, key) }
}

/// An SVID for `id` signed by `ca`: (chain DER, PKCS#8 key DER).
pub fn svid(
    ca: &Ca,
    id: &str,
    alg: &'static SignatureAlgorithm,
    not_after: (i32, u8, u8),
) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "workload");
    params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(not_after.0, not_after.1, not_after.2);
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

pub const FUTURE: (i32, u8, u8) = (2090, 1, 1);

/// An SVID for `id` signed by `ca`, valid from `not_before` to `not_after`
/// (second precision): (chain DER, PKCS#8 key DER).
pub fn svid_between(
    ca: &Ca,
    id: &str,
    not_before: std::time::SystemTime,
    not_after: std::time::SystemTime,
) -> (Vec<u8>, Vec<u8>) {
    let at = |t: std::time::SystemTime| {
        date_time_ymd(1970, 1, 1) + t.duration_since(std::time::UNIX_EPOCH).unwrap()
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "workload");
    params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    params.not_before = at(not_before);
    params.not_after = at(not_after);
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

pub mod server {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use kest::identity::spiffe::proto::{
        FETCH_X509_SVID, SECURITY_HEADER, X509SvidRequest, X509SvidResponse,
    };
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::body::Body;
    use tonic::{Request, Response, Status};

    type Stream = ReceiverStream<Result<X509SvidResponse, Status>>;
    type Receiver = mpsc::Receiver<Result<X509SvidResponse, Status>>;

    /// One stream: the first client to connect gets the receiver.
    #[derive(Clone)]
    pub struct WorkloadApi {
        rx: Arc<Mutex<Option<Receiver>>>,
    }

    impl tonic::server::NamedService for WorkloadApi {
        const NAME: &'static str = "SpiffeWorkloadAPI";
    }

    struct Fetch(WorkloadApi);

    impl tonic::server::ServerStreamingService<X509SvidRequest> for Fetch {
        type Response = X509SvidResponse;
        type ResponseStream = Stream;
        type Future = Pin<Box<dyn Future<Output = Result<Response<Stream>, Status>> + Send>>;
        fn call(&mut self, request: Request<X509SvidRequest>) -> Self::Future {
            let rx = self.0.rx.lock().unwrap().take();
            Box::pin(async move {
                if request.metadata().get(SECURITY_HEADER).and_then(|v| v.to_str().ok()) != Some("true") {
                    return Err(Status::invalid_argument("security header missing from request"));
                }
                let rx = rx.ok_or_else(|| Status::unavailable("stream already taken"))?;
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

    /// Serves on `path`; returns the sender of the stream.
    pub fn start(path: &std::path::Path) -> mpsc::Sender<Result<X509SvidResponse, Status>> {
        let (tx, rx) = mpsc::channel(8);
        let api = WorkloadApi { rx: Arc::new(Mutex::new(Some(rx))) };
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .serve_with_incoming(api, tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await
                .unwrap();
        });
        tx
    }
}

pub fn response(
    chain: &[u8],
    key: &[u8],
    bundle: &[u8],
    id: &str,
) -> kest::identity::spiffe::proto::X509SvidResponse {
    use kest::identity::spiffe::proto::{X509Svid as P, X509SvidResponse};
    X509SvidResponse {
        svids: vec![P {
            spiffe_id: id.to_owned(),
            x509_svid: chain.to_vec(),
            x509_svid_key: key.to_vec(),
            bundle: bundle.to_vec(),
            hint: String::new(),
        }],
        ..Default::default()
    }
}
