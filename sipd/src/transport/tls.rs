//! TLS for SIP (RFC 3261 §26.2, RFC 5630) with rustls and its `ring`
//! provider (a C compiler is all the build needs; aws-lc-rs would add
//! cmake and a Go or NASM toolchain): the server certificate and key of
//! `[general] tls_cert=` / `tls_key=`, the trust anchors of `tls_ca=` (else
//! the system's roots) for the servers sipd connects to. TLS 1.2 and 1.3
//! only.
//!
//! [`TlsFiles::load`] reads and checks everything (the files exist, parse,
//! the key matches the certificate) without touching what is in force;
//! [`Tls::replace`] then swaps the whole context at once, so a reload is
//! all or nothing: new handshakes use the new certificate, established
//! connections keep theirs, and a bad file leaves the old one serving.
//! The previous context is dropped when its last handshake ends (an `Arc`),
//! so repeated reloads do not grow memory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring as provider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The TLS file names of a configuration, resolved against DIR.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

impl TlsPaths {
    /// `[general] tls_cert=`, `tls_key=`, `tls_ca=` relative to `dir`.
    pub fn new(dir: &Path, cert: Option<&str>, key: Option<&str>, ca: Option<&str>) -> TlsPaths {
        let at = |f: Option<&str>| f.map(|f| dir.join(f));
        TlsPaths {
            cert: at(cert),
            key: at(key),
            ca: at(ca),
        }
    }
}

/// What went wrong loading the TLS files, naming the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// A checked, ready context: the server side when a certificate is
/// configured, the client side always.
pub struct TlsFiles {
    pub server: Option<Arc<ServerConfig>>,
    pub client: Arc<ClientConfig>,
    /// Serial number of the server certificate (hex), for logs and status.
    pub serial: Option<String>,
}

fn err(path: &Path, what: impl fmt::Display) -> TlsError {
    TlsError(format!("{}: {what}", path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| err(path, e))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(path, "no CERTIFICATE found in the PEM file"));
    }
    Ok(certs)
}

/// The serial number of a DER certificate, as lowercase hex (best effort:
/// `None` when the DER does not have the expected shape).
pub fn serial_of(der: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version?,
    // serialNumber INTEGER, ... } ... }
    fn header(b: &[u8]) -> Option<(u8, usize, usize)> {
        let tag = *b.first()?;
        let first = *b.get(1)? as usize;
        if first < 0x80 {
            return Some((tag, 2, first));
        }
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        Some((tag, 2 + n, len))
    }
    let (_, h, _) = header(der)?;
    let tbs = der.get(h..)?;
    let (_, h, _) = header(tbs)?;
    let mut rest = tbs.get(h..)?;
    let (tag, h, len) = header(rest)?;
    if tag == 0xa0 {
        rest = rest.get(h + len..)?;
    }
    let (tag, h, len) = header(rest)?;
    if tag != 0x02 {
        return None;
    }
    let bytes = rest.get(h..h + len)?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl TlsFiles {
    /// Read and check the files. A certificate needs its key and the other
    /// way round; the key must match the certificate. Without `tls_ca` the
    /// system's roots are read only when `system_roots` (some client is
    /// reached over TLS): otherwise outgoing TLS trusts nothing.
    pub fn load(paths: &TlsPaths, system_roots: bool) -> Result<TlsFiles, TlsError> {
        let provider = Arc::new(provider::default_provider());
        let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
        let server = match (&paths.cert, &paths.key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(TlsError(
                    "tls_cert is set but tls_key is not: both are needed".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(TlsError(
                    "tls_key is set but tls_cert is not: both are needed".into(),
                ))
            }
            (Some(cert), Some(key)) => {
                let chain = certs(cert)?;
                let pem = read(key)?;
                let key_der = PrivateKeyDer::from_pem_slice(&pem)
                    .map_err(|e| err(key, format!("no usable private key: {e}")))?;
                let config = ServerConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(&versions)
                    .map_err(|e| TlsError(format!("TLS versions: {e}")))?
                    .with_no_client_auth()
                    .with_single_cert(chain.clone(), key_der)
                    .map_err(|e| err(key, format!("does not go with {}: {e}", cert.display())))?;
                Some((Arc::new(config), serial_of(&chain[0])))
            }
        };
        let mut roots = RootCertStore::empty();
        match &paths.ca {
            Some(ca) => {
                for c in certs(ca)? {
                    roots
                        .add(c)
                        .map_err(|e| err(ca, format!("bad CA certificate: {e}")))?;
                }
            }
            None if !system_roots => {}
            None => {
                // The system's roots; unreadable ones are skipped (logged).
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::debug!("tls: system roots: {e}");
                }
                let (added, ignored) = roots.add_parsable_certificates(found.certs);
                if ignored > 0 {
                    tracing::debug!("tls: {added} system roots, {ignored} unusable");
                }
            }
        }
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| TlsError(format!("TLS versions: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (server, serial) = match server {
            Some((s, serial)) => (Some(s), serial),
            None => (None, None),
        };
        Ok(TlsFiles {
            server,
            client: Arc::new(client),
            serial,
        })
    }
}

/// The TLS context in force, swapped whole on reload.
pub struct Tls {
    current: ArcSwap<TlsFiles>,
}

impl Tls {
    pub fn new(files: TlsFiles) -> Tls {
        Tls {
            current: ArcSwap::from_pointee(files),
        }
    }

    /// Put a checked context in force for new handshakes.
    pub fn replace(&self, files: TlsFiles) {
        self.current.store(Arc::new(files));
    }

    /// The server configuration for the next accepted handshake.
    pub fn acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.current
            .load()
            .server
            .clone()
            .map(tokio_rustls::TlsAcceptor::from)
    }

    /// The client configuration for the next connection we open.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.current.load().client.clone())
    }

    /// Serial number of the certificate in force.
    pub fn serial(&self) -> Option<String> {
        self.current.load().serial.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    fn cert(serial: u64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let c = params.self_signed(&key).unwrap();
        (c.pem(), key.serialize_pem())
    }

    #[test]
    fn a_good_pair_loads_and_names_its_serial() {
        let d = tempfile_dir();
        let (c, k) = cert(0x1234);
        let paths = TlsPaths {
            cert: Some(write(&d, "c.pem", c.as_bytes())),
            key: Some(write(&d, "k.pem", k.as_bytes())),
            ca: Some(write(&d, "ca.pem", c.as_bytes())),
        };
        let f = TlsFiles::load(&paths, false).unwrap();
        assert!(f.server.is_some());
        assert_eq!(f.serial.as_deref(), Some("1234"));
    }

    #[test]
    fn bad_files_are_refused_naming_the_file() {
        let d = tempfile_dir();
        let (c, k) = cert(1);
        let (_, other_key) = cert(2);
        let cert_path = write(&d, "c.pem", c.as_bytes());
        let key_path = write(&d, "k.pem", k.as_bytes());
        let load = |cert: Option<PathBuf>, key: Option<PathBuf>| {
            TlsFiles::load(
                &TlsPaths {
                    cert,
                    key,
                    ca: None,
                },
                true,
            )
            .map(|_| ())
        };
        assert!(load(Some(cert_path.clone()), Some(key_path.clone())).is_ok());
        let missing = d.join("missing.pem");
        let e = load(Some(missing.clone()), Some(key_path.clone())).unwrap_err();
        assert!(e.0.starts_with(&missing.display().to_string()), "{e}");
        let garbage = write(&d, "g.pem", b"not a pem file\n");
        let e = load(Some(garbage.clone()), Some(key_path.clone())).unwrap_err();
        assert!(e.0.contains("no CERTIFICATE"), "{e}");
        let e = load(Some(cert_path.clone()), Some(garbage)).unwrap_err();
        assert!(e.0.contains("no usable private key"), "{e}");
        let mismatched = write(&d, "k2.pem", other_key.as_bytes());
        let e = load(Some(cert_path.clone()), Some(mismatched)).unwrap_err();
        assert!(e.0.contains("does not go with"), "{e}");
        assert!(load(Some(cert_path), None)
            .unwrap_err()
            .0
            .contains("tls_key"));
        assert!(load(None, Some(key_path))
            .unwrap_err()
            .0
            .contains("tls_cert"));
        // Only a client side: fine (outgoing TLS with the system roots).
        assert!(load(None, None).is_ok());
    }

    #[test]
    fn serial_of_tolerates_garbage() {
        assert_eq!(serial_of(&[]), None);
        assert_eq!(serial_of(&[0x30, 0x84, 0xff]), None);
        assert_eq!(serial_of(&[0x30, 0x03, 0x30, 0x01, 0x05]), None);
    }

    fn tempfile_dir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "sipd-tls-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
