//! Reaching PostgreSQL: the URL, `sslmode` as libpq means it, and the
//! settings every connection of the host starts with.
//!
//! | `sslmode` | encrypted | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | never | - |
//! | `allow`, `prefer` (the default) | when the server offers it | not checked, unless `sslrootcert` is given (then as `verify-ca`) |
//! | `require` | always | the same |
//! | `verify-ca` | always | signed by `sslrootcert` (or a public CA) |
//! | `verify-full` | always | signed so, and naming the host |
//!
//! `sslrootcert` is a PEM file; without one, `verify-ca` and `verify-full`
//! trust the public CAs (Mozilla's list, built in). Every connection has
//! `TimeZone=UTC` (a guest formatting a timestamp in SQL gets UTC, as the
//! host's own values are) and `application_name=consumer-host`.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{DatabaseConfig, redact_url};

/// Where the host connects, and how; shared by every pool and the writer.
pub struct Target {
    /// The host's own login, with the common settings applied.
    config: Config,
    /// `None` with `sslmode=disable`.
    tls: Option<MakeRustlsConnect>,
    /// The options the URL carried, kept in front of ours.
    options: String,
    /// The URL without its password, for messages.
    pub display: String,
}

/// A spawned connection's task: ends when the connection does.
pub type ConnectionTask = tokio::task::JoinHandle<()>;

impl Target {
    /// Parses a `postgres://` URL and the `[database]` settings that apply
    /// to connecting. The error names what is wrong in the URL.
    pub fn parse(url: &str, database: &DatabaseConfig) -> Result<Self, String> {
        let display = redact_url(url);
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut sslmode = "prefer".to_string();
        let mut rootcert = None;
        let mut kept = form_urlencoded::Serializer::new(String::new());
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "sslmode" => sslmode = value.into_owned(),
                "sslrootcert" => rootcert = Some(value.into_owned()),
                _ => {
                    kept.append_pair(&key, &value);
                }
            }
        }
        let kept = kept.finish();
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{kept}")
        };
        let mut config: Config = url
            .parse()
            .map_err(|err| format!("{display} is not a usable PostgreSQL URL: {err}"))?;
        let (mode, tls) = tls(&sslmode, rootcert.as_deref())?;
        config.ssl_mode(mode);
        config.connect_timeout(Duration::from_millis(database.connect_timeout_ms));
        config.keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("consumer-host");
        }
        let options = config.get_options().unwrap_or_default().to_string();
        Ok(Self {
            config,
            tls,
            options,
            display,
        })
    }

    /// The host's login, its statements cut after `statement_timeout`.
    pub fn host(&self, statement_timeout: Duration) -> Config {
        let mut config = self.config.clone();
        config.options(self.options_with(statement_timeout, false));
        config
    }

    /// A consumer role's login: read-only by default, its statements cut
    /// after `statement_timeout`.
    pub fn role(&self, role: &str, password: &str, statement_timeout: Duration) -> Config {
        let mut config = self.config.clone();
        config.user(role);
        config.password(password);
        config.options(self.options_with(statement_timeout, true));
        config
    }

    /// The host login's password (what consumer roles' passwords derive from).
    pub fn password(&self) -> &[u8] {
        self.config.get_password().unwrap_or_default()
    }

    /// The host login's user name.
    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or("postgres")
    }

    fn options_with(&self, statement_timeout: Duration, read_only: bool) -> String {
        let mut options = format!(
            "{} -c TimeZone=UTC -c statement_timeout={}",
            self.options,
            statement_timeout.as_millis().max(1)
        );
        if read_only {
            options.push_str(" -c default_transaction_read_only=on");
        }
        options.trim_start().to_string()
    }

    /// Opens a connection; its task runs on the current runtime.
    pub async fn connect(
        &self,
        config: &Config,
    ) -> Result<(Client, ConnectionTask), tokio_postgres::Error> {
        match &self.tls {
            Some(tls) => {
                let (client, connection) = config.connect(tls.clone()).await?;
                Ok((client, tokio::spawn(drive(connection))))
            }
            None => {
                let (client, connection) = config.connect(NoTls).await?;
                Ok((client, tokio::spawn(drive(connection))))
            }
        }
    }
}

async fn drive<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(err) = connection.await {
        tracing::debug!(error = %err, "a PostgreSQL connection ended");
    }
}

/// What an error from PostgreSQL or the network says, for logs and for the
/// messages of failed start-ups.
pub fn describe(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        let mut text = format!("{}: {}", db.severity(), db.message());
        if let Some(hint) = db.hint() {
            text.push_str(&format!(" (hint: {hint})"));
        }
        return text;
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = std::error::Error::source(cause);
    }
    text
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls(
    sslmode: &str,
    rootcert: Option<&str>,
) -> Result<(SslMode, Option<MakeRustlsConnect>), String> {
    let provider = provider();
    let roots = || -> Result<Arc<rustls::RootCertStore>, String> {
        let mut roots = rustls::RootCertStore::empty();
        match rootcert {
            None | Some("system") => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(path) => {
                use rustls::pki_types::pem::PemObject;
                let certificates: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_file_iter(path)
                        .and_then(|certificates| certificates.collect())
                        .map_err(|err| format!("cannot read sslrootcert {path}: {err}"))?;
                let (added, _) = roots.add_parsable_certificates(certificates);
                if added == 0 {
                    return Err(format!("sslrootcert {path} holds no usable certificate"));
                }
            }
        }
        Ok(Arc::new(roots))
    };
    let webpki = |roots| {
        WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|err| format!("cannot use sslrootcert: {err}"))
    };
    let (mode, verifier): (SslMode, Arc<dyn ServerCertVerifier>) = match sslmode {
        "disable" => return Ok((SslMode::Disable, None)),
        "allow" | "prefer" | "require" => {
            let mode = if sslmode == "require" {
                SslMode::Require
            } else {
                SslMode::Prefer
            };
            match rootcert {
                // libpq: with a root certificate, `require` verifies as `verify-ca`.
                Some(_) => (mode, Arc::new(VerifyCa(webpki(roots()?)?))),
                None => (mode, Arc::new(EncryptOnly(provider.clone()))),
            }
        }
        "verify-ca" => (SslMode::Require, Arc::new(VerifyCa(webpki(roots()?)?))),
        "verify-full" => (SslMode::Require, webpki(roots()?)?),
        other => {
            return Err(format!(
                "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            ));
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS: {err}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok((mode, Some(MakeRustlsConnect::new(config))))
}

/// `prefer` and `require` without a root certificate: encrypted, the
/// certificate unchecked (libpq's meaning), handshake signatures checked.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not checked.
#[derive(Debug)]
struct VerifyCa(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for VerifyCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name: a wrong name means a good chain.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_sslmodes() {
        let database = DatabaseConfig::default();
        let target = Target::parse(
            "postgres://chat:pw@db.example:5433/chat?sslmode=verify-full&application_name=x",
            &database,
        )
        .unwrap();
        assert_eq!(target.user(), "chat");
        assert_eq!(target.password(), b"pw");
        assert_eq!(
            target.display,
            "postgres://chat:***@db.example:5433/chat?sslmode=verify-full&application_name=x"
        );
        assert!(target.tls.is_some());
        assert_eq!(target.config.get_ssl_mode(), SslMode::Require);
        let disabled =
            Target::parse("postgres://u@127.0.0.1/x?sslmode=disable", &database).unwrap();
        assert!(disabled.tls.is_none());
        let role = disabled.role("consumer_host_x", "secret", Duration::from_millis(250));
        assert_eq!(role.get_user(), Some("consumer_host_x"));
        assert_eq!(
            role.get_options(),
            Some("-c TimeZone=UTC -c statement_timeout=250 -c default_transaction_read_only=on")
        );
        let err = Target::parse("postgres://u@h/x?sslmode=sometimes", &database)
            .err()
            .unwrap();
        assert!(err.contains("sslmode=sometimes"), "{err}");
        let err = Target::parse(
            "postgres://u@h/x?sslmode=verify-ca&sslrootcert=/nonexistent.pem",
            &database,
        )
        .err()
        .unwrap();
        assert!(
            err.contains("cannot read sslrootcert /nonexistent.pem"),
            "{err}"
        );
    }
}
