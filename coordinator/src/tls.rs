//! TLS for the coordinator's two faces: one certificate and key (PEM) serve gRPC (tonic's rustls)
//! and the HTTP status page (tokio-rustls under axum). Both are checked when the coordinator
//! starts, so a wrong file fails `lehr coordinator` at once and says which file.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// A server certificate chain and its private key, both PEM.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print the key
        f.debug_struct("ServerTls").field("cert_pem_bytes", &self.cert_pem.len()).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("the TLS certificate holds no PEM `CERTIFICATE` block{0}")]
    NoCertificate(String),
    #[error("the TLS key holds no PEM private key (PKCS#8, PKCS#1 or SEC1){0}: {1}")]
    BadKey(String, String),
    #[error("the TLS certificate and key do not go together: {0}")]
    Mismatch(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

impl ServerTls {
    /// Reads and checks `--tls-cert` / `--tls-key`.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let tls = ServerTls { cert_pem: read(cert)?, key_pem: read(key)? };
        tls.rustls_config(Vec::new()).map_err(|e| match e {
            TlsError::NoCertificate(_) => TlsError::NoCertificate(format!(" ({})", cert.display())),
            TlsError::BadKey(_, why) => TlsError::BadKey(format!(" ({})", key.display()), why),
            other => other,
        })?;
        Ok(tls)
    }

    /// A rustls server configuration offering `alpn` (empty: none).
    pub fn rustls_config(&self, alpn: Vec<Vec<u8>>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&self.cert_pem).filter_map(Result::ok).collect();
        if certs.is_empty() {
            return Err(TlsError::NoCertificate(String::new()));
        }
        let key =
            PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| TlsError::BadKey(String::new(), e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Mismatch(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Mismatch(e.to_string()))?;
        config.alpn_protocols = alpn;
        Ok(Arc::new(config))
    }

    /// tonic's view of the same identity.
    pub fn tonic(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}

/// Installs ring as the process's rustls provider (tonic's server asks for the process default);
/// a provider installed already is kept.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How long a client may take over its TLS handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener for `axum::serve` whose connections have completed a TLS handshake. Handshakes
/// run on their own tasks, so a client that connects and says nothing never holds up the next.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>, shutdown: CancellationToken) -> Self {
        let local = listener.local_addr().expect("a bound listener has an address");
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "http accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // the acceptor stopped (shutdown): no more connections
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
