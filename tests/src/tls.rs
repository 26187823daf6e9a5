//! Test certificates (rcgen) and a blocking TLS client (rustls) for the
//! end-to-end tests: a self-signed server certificate for loopback
//! (127.0.0.1, ::1, localhost) written into sipd's directory, and
//! connections that trust exactly that certificate.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::ua::Io;

/// A certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Cert {
    pub cert: String,
    pub key: String,
    /// Serial number, lowercase hex as sipd logs it.
    pub serial: String,
}

/// A self-signed certificate for loopback with this serial number.
pub fn self_signed(serial: u64) -> Cert {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .expect("params");
    params.serial_number = Some(rcgen::SerialNumber::from(serial));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sipd test");
    let c = params.self_signed(&key).expect("self-signed");
    Cert {
        cert: c.pem(),
        key: key.serialize_pem(),
        serial: format!("{serial:x}"),
    }
}

impl Cert {
    /// Write `cert.pem` and `key.pem` into `dir` (sipd's working directory).
    pub fn write(&self, dir: &Path) {
        std::fs::write(dir.join("cert.pem"), &self.cert).unwrap();
        std::fs::write(dir.join("key.pem"), &self.key).unwrap();
    }
}

/// The `[general]` lines for a certificate written by [`Cert::write`].
pub const GENERAL_TLS: &str = "tls_cert=cert.pem\ntls_key=key.pem\n";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting the certificates in `ca` (PEM).
pub fn client_config(ca: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.expect("ca pem")).expect("ca");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Connect to `server` over TLS, verifying its certificate names `name`;
/// the handshake is completed before returning.
pub fn connect(
    server: SocketAddr,
    ca: &str,
    name: &str,
) -> std::io::Result<(Box<dyn Io>, TcpStream)> {
    let sock = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let name = ServerName::try_from(name.to_string()).map_err(std::io::Error::other)?;
    let conn =
        rustls::ClientConnection::new(client_config(ca), name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, sock.try_clone()?);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok((Box::new(tls), sock))
}

/// The serial number of the certificate a fresh handshake with `server` sees.
pub fn peer_serial(server: SocketAddr, ca: &str) -> std::io::Result<String> {
    let sock = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let mut conn =
        rustls::ClientConnection::new(client_config(ca), name).map_err(std::io::Error::other)?;
    let mut s = sock;
    while conn.is_handshaking() {
        conn.complete_io(&mut s)?;
    }
    let der = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| std::io::Error::other("no certificate"))?;
    sipd::transport::tls::serial_of(der).ok_or_else(|| std::io::Error::other("no serial"))
}

/// Accept one TLS connection on `listener` with this certificate (a TLS
/// gateway, say); the handshake is completed before returning.
pub fn accept(
    listener: &std::net::TcpListener,
    cert: &Cert,
    timeout: Duration,
) -> std::io::Result<(Box<dyn Io>, TcpStream)> {
    use rustls::pki_types::PrivateKeyDer;
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + timeout;
    let sock = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline {
                    return Err(std::io::Error::other("no connection"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    };
    sock.set_nonblocking(false)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.cert.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(std::io::Error::other)?;
    let key = PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).map_err(std::io::Error::other)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(std::io::Error::other)?;
    let mut conn =
        rustls::ServerConnection::new(Arc::new(config)).map_err(std::io::Error::other)?;
    let mut s = sock.try_clone()?;
    while conn.is_handshaking() {
        conn.complete_io(&mut s)?;
    }
    Ok((Box::new(rustls::StreamOwned::new(conn, s)), sock))
}
