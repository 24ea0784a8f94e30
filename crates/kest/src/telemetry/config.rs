//! What to export and where: [`Exporter`] and [`TelemetryConfig`], parsed
//! from code, the `[telemetry]` table of the Kest TOML file or the
//! `KEST_TELEMETRY_EXPORTERS` / `KEST_SERVICE_NAME` variables (see
//! [`crate::runtime::KestBuilder::with_env`]).
//!
//! These types are plain data and always compiled, so a configuration is
//! validated even by a build without the `telemetry` feature;
//! [`init`](super::init) (feature `telemetry`) installs it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::runtime::ConfigError;

/// The OTLP transport.
///
/// ```
/// use kest::telemetry::OtlpProtocol;
/// assert_eq!("http/protobuf".parse::<OtlpProtocol>().unwrap(), OtlpProtocol::HttpProtobuf);
/// assert!("http/json".parse::<OtlpProtocol>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OtlpProtocol {
    /// OTLP/gRPC (tonic), default port 4317.
    Grpc,
    /// OTLP/HTTP with protobuf bodies, default port 4318 (`/v1/traces`).
    HttpProtobuf,
}

impl FromStr for OtlpProtocol {
    type Err = ConfigError;

    /// The values of `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or
    /// `http/protobuf` (`http/json` is not supported: an error).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            other => Err(ConfigError::Invalid(format!(
                "OTLP protocol `{other}` is not supported (use `grpc` or `http/protobuf`)"
            ))),
        }
    }
}

/// One span exporter. Several may be installed at once, each with its own
/// batch span processor.
///
/// Parsed from the strings of `KEST_TELEMETRY_EXPORTERS` and of
/// `[telemetry] exporters`:
///
/// | string | exporter |
/// |---|---|
/// | `file:PATH` | OTLP JSON lines appended to `PATH` |
/// | `sqlite:PATH` | the SQLite span store at `PATH` (feature `sqlite`) |
/// | `stdout` | OTLP JSON lines on standard output |
/// | `otlp` | OTLP, protocol from `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL` (default `grpc`), endpoint from the `OTEL_EXPORTER_OTLP_*ENDPOINT` variables |
/// | `otlp-grpc[:URL]` | OTLP/gRPC, to `URL` or the `OTEL_*` endpoint (default `http://localhost:4317`) |
/// | `otlp-http[:URL]` | OTLP/HTTP protobuf, to `URL` (the full traces URL) or the `OTEL_*` endpoint (default `http://localhost:4318/v1/traces`) |
///
/// ```
/// use kest::telemetry::{Exporter, OtlpProtocol};
/// let e: Exporter = "file:/var/log/kest/spans.jsonl".parse().unwrap();
/// assert_eq!(e, Exporter::File("/var/log/kest/spans.jsonl".into()));
/// let e: Exporter = "otlp-http:http://collector:4318/v1/traces".parse().unwrap();
/// assert_eq!(
///     e,
///     Exporter::Otlp {
///         protocol: OtlpProtocol::HttpProtobuf,
///         endpoint: Some("http://collector:4318/v1/traces".into()),
///     }
/// );
/// assert!("file:".parse::<Exporter>().is_err());
/// assert!("jaeger".parse::<Exporter>().is_err());
/// // Credentials in an endpoint are not shown (the display form is logged).
/// let e: Exporter = "otlp-http:https://user:secret@collector/v1/traces".parse().unwrap();
/// assert_eq!(e.to_string(), "otlp-http:https://***@collector/v1/traces");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Exporter {
    /// OTLP to a collector (feature `otlp`). With no endpoint, the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// variables apply, then the protocol's default; headers and timeout
    /// come from the standard `OTEL_EXPORTER_OTLP_*` variables too.
    Otlp {
        /// gRPC or HTTP/protobuf.
        protocol: OtlpProtocol,
        /// The endpoint (for HTTP, the full traces URL).
        endpoint: Option<String>,
    },
    /// One OTLP/JSON `ExportTraceServiceRequest` per line, appended to a
    /// file — the format of the OpenTelemetry Collector's file exporter.
    File(PathBuf),
    /// The embedded SQLite span store (feature `sqlite`, schema
    /// [`SQLITE_SCHEMA`](super::SQLITE_SCHEMA)).
    Sqlite(PathBuf),
    /// OTLP JSON lines on standard output.
    Stdout,
}

impl Exporter {
    /// Parses an exporter string, reading `OTEL_*` variables through `var`
    /// (for the protocol of a bare `otlp`).
    ///
    /// ```
    /// use kest::telemetry::{Exporter, OtlpProtocol};
    /// let env = |k: &str| (k == "OTEL_EXPORTER_OTLP_PROTOCOL").then(|| "http/protobuf".to_owned());
    /// assert_eq!(
    ///     Exporter::parse_with_env("otlp", env).unwrap(),
    ///     Exporter::Otlp { protocol: OtlpProtocol::HttpProtobuf, endpoint: None }
    /// );
    /// assert_eq!(Exporter::parse_with_env("sqlite:/tmp/spans.db", env).unwrap(), Exporter::Sqlite("/tmp/spans.db".into()));
    /// ```
    pub fn parse_with_env(spec: &str, var: impl Fn(&str) -> Option<String>) -> Result<Exporter, ConfigError> {
        let spec = spec.trim();
        let (kind, arg) = match spec.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (spec, None),
        };
        let path = |what: &str| -> Result<PathBuf, ConfigError> {
            match arg {
                Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
                _ => {
                    Err(ConfigError::Invalid(format!("telemetry exporter `{spec}`: `{what}:` needs a path")))
                }
            }
        };
        let endpoint = || -> Result<Option<String>, ConfigError> {
            match arg {
                None => Ok(None),
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                    Ok(Some(url.to_owned()))
                }
                Some(url) => Err(ConfigError::Invalid(format!(
                    "telemetry exporter `{spec}`: endpoint `{url}` is not an http:// or https:// URL"
                ))),
            }
        };
        match kind {
            "file" => Ok(Exporter::File(path("file")?)),
            "sqlite" => Ok(Exporter::Sqlite(path("sqlite")?)),
            "stdout" if arg.is_none() => Ok(Exporter::Stdout),
            "otlp" if arg.is_none() => {
                let protocol = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
                {
                    Some(p) => p.parse()?,
                    None => OtlpProtocol::Grpc,
                };
                Ok(Exporter::Otlp { protocol, endpoint: None })
            }
            "otlp-grpc" => Ok(Exporter::Otlp { protocol: OtlpProtocol::Grpc, endpoint: endpoint()? }),
            "otlp-http" => Ok(Exporter::Otlp { protocol: OtlpProtocol::HttpProtobuf, endpoint: endpoint()? }),
            _ => Err(ConfigError::Invalid(format!(
                "telemetry exporter `{spec}` is not one of file:PATH, sqlite:PATH, stdout, otlp, otlp-grpc[:URL], otlp-http[:URL]"
            ))),
        }
    }

    /// Parses a comma-separated list (the form of
    /// `KEST_TELEMETRY_EXPORTERS`; paths cannot contain commas there — use
    /// the TOML list for those). Empty items are errors.
    ///
    /// ```
    /// use kest::telemetry::Exporter;
    /// let list = Exporter::parse_list("file:/tmp/a.jsonl, stdout", |_| None).unwrap();
    /// assert_eq!(list, [Exporter::File("/tmp/a.jsonl".into()), Exporter::Stdout]);
    /// assert!(Exporter::parse_list("stdout,,file:/x", |_| None).is_err());
    /// ```
    pub fn parse_list(
        list: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<Exporter>, ConfigError> {
        list.split(',')
            .map(|item| {
                if item.trim().is_empty() {
                    Err(ConfigError::Invalid(format!("telemetry exporters `{list}`: empty item")))
                } else {
                    Exporter::parse_with_env(item, &var)
                }
            })
            .collect()
    }

    /// The Cargo feature of `kest` this exporter needs.
    ///
    /// ```
    /// use kest::telemetry::Exporter;
    /// assert_eq!(Exporter::Stdout.feature(), "telemetry");
    /// assert_eq!(Exporter::Sqlite("/tmp/s.db".into()).feature(), "sqlite");
    /// ```
    pub fn feature(&self) -> &'static str {
        match self {
            Exporter::Otlp { .. } => "otlp",
            Exporter::Sqlite(_) => "sqlite",
            Exporter::File(_) | Exporter::Stdout => "telemetry",
        }
    }
}

impl FromStr for Exporter {
    type Err = ConfigError;

    /// [`Exporter::parse_with_env`] with the process environment.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Exporter::parse_with_env(s, |k| std::env::var(k).ok())
    }
}

impl fmt::Display for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exporter::Otlp { protocol, endpoint } => {
                let kind = match protocol {
                    OtlpProtocol::Grpc => "otlp-grpc",
                    OtlpProtocol::HttpProtobuf => "otlp-http",
                };
                match endpoint {
                    Some(e) => write!(f, "{kind}:{}", redact_userinfo(e)),
                    None => f.write_str(kind),
                }
            }
            Exporter::File(p) => write!(f, "file:{}", p.display()),
            Exporter::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Exporter::Stdout => f.write_str("stdout"),
        }
    }
}

/// An endpoint URL without credentials in its authority
/// (`https://user:secret@host` → `https://***@host`): the display form of an
/// exporter is logged.
fn redact_userinfo(url: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else { return url.into() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest.get(..authority_end).and_then(|a| a.rfind('@')) {
        Some(at) => format!("{scheme}://***{}", rest.get(at..).unwrap_or_default()).into(),
        None => url.into(),
    }
}

/// The telemetry part of the Kest configuration: a service name and the
/// exporters, for [`init_from_config`](super::init_from_config).
///
/// From TOML (`[telemetry]` of the Kest file, see
/// [`crate::runtime::FileConfig`]):
///
/// ```toml
/// [telemetry]
/// service_name = "support-bot"
/// exporters = ["file:/var/log/kest/spans.jsonl", "otlp"]
/// ```
///
/// or from `KEST_TELEMETRY_EXPORTERS` (comma-separated) and
/// `KEST_SERVICE_NAME` (falling back to `OTEL_SERVICE_NAME`).
///
/// ```
/// use kest::Kest;
/// use kest::telemetry::Exporter;
/// # #[cfg(feature = "telemetry")] {
/// let kest = Kest::builder()
///     .with_toml_str("[telemetry]\nservice_name = \"svc\"\nexporters = [\"stdout\"]")
///     .unwrap()
///     .build()
///     .unwrap();
/// let telemetry = kest.telemetry().unwrap();
/// assert_eq!(telemetry.service_name(), "svc");
/// assert_eq!(telemetry.exporters(), [Exporter::Stdout]);
/// # }
/// // A bad exporter is an error, never a silent default.
/// assert!(Kest::builder().with_toml_str("[telemetry]\nexporters = [\"zipkin\"]").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    service_name: String,
    exporters: Vec<Exporter>,
}

impl TelemetryConfig {
    /// A configuration; the service name must not be empty and at least one
    /// exporter is required.
    ///
    /// ```
    /// use kest::telemetry::{Exporter, TelemetryConfig};
    /// assert!(TelemetryConfig::new("svc", [Exporter::Stdout]).is_ok());
    /// assert!(TelemetryConfig::new("", [Exporter::Stdout]).is_err());
    /// assert!(TelemetryConfig::new("svc", []).is_err());
    /// ```
    pub fn new(
        service_name: impl Into<String>,
        exporters: impl IntoIterator<Item = Exporter>,
    ) -> Result<TelemetryConfig, ConfigError> {
        let service_name = service_name.into();
        let exporters: Vec<Exporter> = exporters.into_iter().collect();
        if service_name.trim().is_empty() {
            return Err(ConfigError::Invalid("telemetry: the service name is empty".into()));
        }
        if exporters.is_empty() {
            return Err(ConfigError::Invalid("telemetry: no exporter configured".into()));
        }
        Ok(TelemetryConfig { service_name, exporters })
    }

    /// The resource attribute `service.name`.
    ///
    /// ```
    /// use kest::telemetry::{Exporter, TelemetryConfig};
    /// let config = TelemetryConfig::new("svc", [Exporter::Stdout]).unwrap();
    /// assert_eq!(config.service_name(), "svc");
    /// ```
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// The exporters, in the order given.
    ///
    /// ```
    /// use kest::telemetry::{Exporter, TelemetryConfig};
    /// let config = TelemetryConfig::new("svc", [Exporter::Stdout, Exporter::File("/tmp/a".into())]).unwrap();
    /// assert_eq!(config.exporters().len(), 2);
    /// ```
    pub fn exporters(&self) -> &[Exporter] {
        &self.exporters
    }
}
