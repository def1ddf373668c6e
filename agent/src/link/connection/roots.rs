//! The system's trusted CA certificates, read at start-up instead of compiled in.
//!
//! The reference (Go's `crypto/x509` `SystemCertPool` on Linux) trusts the distribution's CA
//! bundle, so the device's `ca-certificates` package decides which servers are trusted and its
//! updates reach the agent without a rebuild. Compiling Mozilla's list in would also cost the
//! binary about 100 KB. The places and the environment overrides are Go's; unlike Go, the
//! directories are read only when no bundle file is found: on distributions with a bundle they
//! hold the same certificates again (hashed links), which would double the time and memory.
//!
//! The bundle is read on the first TLS handshake, not at start-up, and once per process (see
//! [`Verifier`]): a device whose agent reaches the server through the Mender client's local
//! proxy (plain http on loopback, the usual set-up) never holds Debian's ~140 anchors, some
//! 100 KiB of heap that musl's allocator would keep for good; and standalone mode's auth
//! client, its start-up check and the websocket share one copy instead of parsing it three
//! times.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::RootCertStore;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, SignatureScheme};

/// CA bundles, first readable one wins (Go's `certFiles` for Linux).
const BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Yocto, Buildroot
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL 6
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/pki/tls/cacert.pem",            // OpenELEC
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
    "/etc/ssl/cert.pem",                  // Alpine
];

/// Directories of PEM files (Go's `certDirectories` for Linux).
const DIRECTORIES: &[&str] = &["/etc/ssl/certs", "/etc/pki/tls/certs"];

/// Where the system roots came from, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A bundle file.
    File(PathBuf),
    /// The PEM files of these directories.
    Directories(Vec<PathBuf>),
    /// Nothing readable held a certificate; the places looked at.
    None(Vec<PathBuf>),
}

/// Adds the system's CA certificates to `roots`; returns how many were added and from where.
///
/// `SSL_CERT_FILE` replaces the bundle list and `SSL_CERT_DIR` (colon-separated) the directory
/// list, as in Go.
pub fn add_system(roots: &mut RootCertStore) -> (usize, Source) {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let bundles: Vec<PathBuf> = match env("SSL_CERT_FILE") {
        Some(file) => vec![file.into()],
        None => BUNDLES.iter().map(PathBuf::from).collect(),
    };
    let dirs: Vec<PathBuf> = match env("SSL_CERT_DIR") {
        Some(list) => std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()).collect(),
        None => DIRECTORIES.iter().map(PathBuf::from).collect(),
    };
    for bundle in &bundles {
        if let Some(added) = add_file(roots, bundle) {
            return (added, Source::File(bundle.clone()));
        }
    }
    let mut added = 0;
    for dir in &dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            added += add_file(roots, &entry.path()).unwrap_or(0);
        }
    }
    if added > 0 {
        return (added, Source::Directories(dirs));
    }
    (0, Source::None(bundles.into_iter().chain(dirs).collect()))
}

/// The system's CA certificates, read on the first call and shared by every later one.
pub fn system() -> Arc<RootCertStore> {
    static SYSTEM: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(SYSTEM.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        match add_system(&mut roots) {
            (_, Source::None(places)) => {
                let places: Vec<_> = places.iter().map(|p| p.display().to_string()).collect();
                // Not fatal: `ServerCertificate` may be all that is trusted.
                log::warn!(
                    "no system CA certificates in {} (install ca-certificates or set SSL_CERT_FILE); \
                     only ServerCertificate is trusted for https",
                    places.join(", ")
                );
            }
            (n, source) => log::debug!("{n} system CA certificates from {source:?}"),
        }
        roots.roots.shrink_to_fit();
        Arc::new(roots)
    }))
}

/// The system roots plus `extra`; the same store for the same `extra` while one is in use.
fn with_extra(extra: &[TrustAnchor<'static>]) -> Arc<RootCertStore> {
    if extra.is_empty() {
        return system();
    }
    // One entry: a process has one `ServerCertificate`.
    static LAST: Mutex<Option<(Vec<TrustAnchor<'static>>, std::sync::Weak<RootCertStore>)>> =
        Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(store) = last.as_ref().filter(|(key, _)| key == extra).and_then(|(_, weak)| weak.upgrade()) {
        return store;
    }
    let mut store = RootCertStore::clone(&system());
    store.roots.extend_from_slice(extra);
    let store = Arc::new(store);
    *last = Some((extra.to_vec(), Arc::downgrade(&store)));
    store
}

/// What the websocket's TLS trusts. The handshake signatures are always checked.
pub struct Verifier {
    trust: Trust,
    provider: Arc<CryptoProvider>,
}

/// rustls requires `Debug` of a verifier; a derived one would print the whole crypto provider
/// and link the `Debug` of its suite, group and scheme types (~1.3 KB) for a text nobody reads.
impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let trust = match &self.trust {
            Trust::Any => "any certificate (SkipVerify)",
            Trust::Roots { .. } => "system roots and ServerCertificate",
        };
        f.debug_struct("Verifier").field("trust", &trust).finish_non_exhaustive()
    }
}

enum Trust {
    /// `SkipVerify`: any certificate (insecure; for bring-up only).
    Any,
    /// The system roots plus the `ServerCertificate` anchors, joined on the first handshake.
    Roots { extra: Vec<TrustAnchor<'static>>, store: OnceLock<Arc<RootCertStore>> },
}

impl Verifier {
    /// Trusts certificates issued by the system roots or `extra`, with `provider`'s signature
    /// algorithms.
    pub fn new(extra: RootCertStore, provider: Arc<CryptoProvider>) -> Self {
        Self { trust: Trust::Roots { extra: extra.roots, store: OnceLock::new() }, provider }
    }

    /// Trusts any certificate.
    pub fn any(provider: Arc<CryptoProvider>) -> Self {
        Self { trust: Trust::Any, provider }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Trust::Roots { extra, store } = &self.trust else {
            return Ok(ServerCertVerified::assertion());
        };
        let store = store.get_or_init(|| with_extra(extra));
        if store.is_empty() {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer));
        }
        // What rustls's `WebPkiServerVerifier` does when it has no CRLs (the agent never has
        // any), called directly: the verifier would link webpki's CRL parsing (~17 KB). The
        // OCSP staple is ignored, as there.
        let cert = ParsedCertificate::try_from(end_entity)?;
        let algorithms = self.provider.signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(&cert, store, intermediates, now, algorithms)?;
        verify_server_name(&cert, server_name)?;
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificates of one PEM file that parse as trust anchors; `None` when the file cannot be
/// read or holds none (then the next place is tried).
fn add_file(roots: &mut RootCertStore, path: &Path) -> Option<usize> {
    let certs = CertificateDer::pem_file_iter(path).ok()?.filter_map(Result::ok);
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    (added > 0).then_some(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh temp dir per test (tests run in parallel).
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mc-roots-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_bundle_adds_its_ca_certificates_and_junk_adds_nothing() {
        let dir = temp_dir("bundle");
        let (key, ca) = (dir.join("ca.key"), dir.join("ca.pem"));
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
            ])
            .args(["-subj", "/CN=roots test CA", "-keyout"])
            .args([&key, &std::path::PathBuf::from("-out"), &ca])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let bundle = dir.join("bundle.crt");
        let pem = std::fs::read_to_string(&ca).unwrap();
        // A key between the certificates is skipped, as in a hand-made bundle.
        std::fs::write(&bundle, format!("{pem}{}{pem}", std::fs::read_to_string(&key).unwrap())).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();

        let mut roots = RootCertStore::empty();
        assert_eq!(add_file(&mut roots, &junk), None);
        assert_eq!(add_file(&mut roots, &dir.join("missing.pem")), None);
        assert!(roots.is_empty());
        assert_eq!(add_file(&mut roots, &bundle), Some(2));
        assert_eq!(roots.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Runs `script` with sh in `dir`; panics when it fails.
    fn sh(dir: &Path, script: &str) {
        let status = std::process::Command::new("sh")
            .args(["-ec", script])
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
    }

    fn der(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).unwrap()
    }

    #[test]
    fn the_verifier_checks_issuer_validity_and_name() {
        let dir = temp_dir("verify");
        // CA 1 signs a server certificate for mender.test (valid for 2 days) through an
        // intermediate; CA 2 is unrelated.
        sh(
            &dir,
            "for ca in ca other; do\n\
               openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
                 -subj \"/CN=test $ca\" -keyout $ca.key -out $ca.crt\n\
             done\n\
             printf 'basicConstraints=critical,CA:TRUE\\nkeyUsage=critical,keyCertSign\\n' > ca.cnf\n\
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=inter \
               -keyout inter.key -out inter.csr\n\
             openssl x509 -req -in inter.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
               -extfile ca.cnf -out inter.crt\n\
             printf 'subjectAltName=DNS:mender.test\\nextendedKeyUsage=serverAuth\\n' > leaf.cnf\n\
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=mender.test \
               -keyout leaf.key -out leaf.csr\n\
             openssl x509 -req -in leaf.csr -CA inter.crt -CAkey inter.key -CAcreateserial -days 2 \
               -extfile leaf.cnf -out leaf.crt\n",
        );
        let provider = Arc::new(super::super::provider::provider());
        let trusting = |ca: &str| {
            let mut extra = RootCertStore::empty();
            extra.add(der(&dir.join(ca))).unwrap();
            Verifier::new(extra, Arc::clone(&provider))
        };
        let (leaf, inter) = (der(&dir.join("leaf.crt")), der(&dir.join("inter.crt")));
        let name = |n: &str| ServerName::try_from(n.to_owned()).unwrap();
        let in_days = |days: u64| {
            let now = UnixTime::now().as_secs();
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(now + days * 86_400))
        };
        let verify_at = |v: &Verifier, chain: &[CertificateDer<'_>], host: &str, now: UnixTime| {
            v.verify_server_cert(&leaf, chain, &name(host), &[], now).map_err(|e| match e {
                rustls::Error::InvalidCertificate(e) => e,
                other => panic!("{other:?}"),
            })
        };
        let verify =
            |v: &Verifier, chain: &[CertificateDer<'_>], host: &str| verify_at(v, chain, host, in_days(0));
        use rustls::CertificateError as E;

        let chain = std::slice::from_ref(&inter);

        let ca = trusting("ca.crt");
        assert!(verify(&ca, chain, "mender.test").is_ok());
        assert!(matches!(
            verify(&ca, chain, "other.test"),
            Err(E::NotValidForName | E::NotValidForNameContext { .. })
        ));
        assert!(matches!(verify(&ca, &[], "mender.test"), Err(E::UnknownIssuer)));
        assert!(matches!(
            verify_at(&ca, chain, "mender.test", in_days(3)),
            Err(E::Expired | E::ExpiredContext { .. })
        ));
        let other = trusting("other.crt");
        assert!(matches!(verify(&other, chain, "mender.test"), Err(E::UnknownIssuer)));
        // `SkipVerify` takes anything.
        let any = Verifier::any(Arc::clone(&provider));
        assert!(verify_at(&any, &[], "other.test", in_days(3)).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
