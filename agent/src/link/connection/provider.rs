//! The TLS crypto provider: rustls's *ring* provider without ChaCha20-Poly1305.
//!
//! `rustls::crypto::ring::default_provider()` copies rustls's list of all nine cipher suites, so
//! calling it links ring's ChaCha20-Poly1305 even when the suites are replaced afterwards: about
//! 40 KB of x86_64 assembly for its SSE4.1 and AVX2 paths, 57 KB in all with ChaCha20 itself,
//! the QUIC variant and the TLS 1.2 and 1.3 glue. This provider is assembled from rustls's public parts instead; the suites,
//! groups and signature algorithms are rustls's, minus ChaCha20-Poly1305 (docs/binary-size.md).
//!
//! Offering only AES-GCM loses no server: AES-128-GCM is the one suite every TLS 1.3 peer must
//! implement (RFC 8446 §9.1) and the one HTTP/2 requires of TLS 1.2 peers (RFC 7540 §9.2.2),
//! and servers pick AES-GCM for a client that lists it first anyway, as rustls's order does. On
//! CPUs without AES instructions ring's constant-time AES-GCM is slower than ChaCha would be,
//! but it is not the bottleneck of a remote terminal.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::crypto::ring::{cipher_suite as suite, kx_group};
use rustls::crypto::{CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, WebPkiSupportedAlgorithms};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::SigningKey;
use webpki::ring as alg;

/// The provider the agent's TLS client uses.
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        // rustls's order: the server takes the first it supports when it follows the client.
        cipher_suites: vec![
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        signature_verification_algorithms: SIGNATURE_ALGORITHMS,
        secure_random: &Ring,
        key_provider: &Ring,
    }
}

/// The certificate and handshake signature algorithms webpki verifies with *ring*: the same
/// set and TLS scheme mapping as rustls's *ring* provider (TLS 1.2 does not fix the curve of an
/// ECDSA scheme, hence two algorithms for those).
static SIGNATURE_ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        alg::ECDSA_P256_SHA256,
        alg::ECDSA_P256_SHA384,
        alg::ECDSA_P384_SHA256,
        alg::ECDSA_P384_SHA384,
        alg::ED25519,
        alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        alg::RSA_PKCS1_2048_8192_SHA256,
        alg::RSA_PKCS1_2048_8192_SHA384,
        alg::RSA_PKCS1_2048_8192_SHA512,
        alg::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
        alg::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
        alg::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    ],
    mapping: &[
        (SignatureScheme::ECDSA_NISTP384_SHA384, &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384]),
        (SignatureScheme::ECDSA_NISTP256_SHA256, &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256]),
        (SignatureScheme::ED25519, &[alg::ED25519]),
        (SignatureScheme::RSA_PSS_SHA512, &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY]),
        (SignatureScheme::RSA_PSS_SHA384, &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY]),
        (SignatureScheme::RSA_PSS_SHA256, &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY]),
        (SignatureScheme::RSA_PKCS1_SHA512, &[alg::RSA_PKCS1_2048_8192_SHA512]),
        (SignatureScheme::RSA_PKCS1_SHA384, &[alg::RSA_PKCS1_2048_8192_SHA384]),
        (SignatureScheme::RSA_PKCS1_SHA256, &[alg::RSA_PKCS1_2048_8192_SHA256]),
    ],
};

/// Randomness from *ring* (the kernel's `getrandom`), as in rustls's provider; no client keys:
/// the agent authenticates with its token, never with a TLS client certificate.
#[derive(Debug)]
struct Ring;

impl SecureRandom for Ring {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), buf).map_err(|_| GetRandomFailed)
    }
}

impl KeyProvider for Ring {
    fn load_private_key(&self, _key: PrivateKeyDer<'static>) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        Err(rustls::Error::General("TLS client certificates are not supported".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same algorithms and mapping as rustls's own *ring* provider: only the cipher suites
    /// differ, by exactly the ChaCha20-Poly1305 ones.
    #[test]
    fn matches_rustls_ring_provider_but_for_chacha() {
        let ours = provider();
        let theirs = rustls::crypto::ring::default_provider();
        let names = |v: &[rustls::SupportedCipherSuite]| v.iter().map(|s| s.suite()).collect::<Vec<_>>();
        let without_chacha: Vec<_> = names(&theirs.cipher_suites)
            .into_iter()
            .filter(|s| !format!("{s:?}").contains("CHACHA20"))
            .collect();
        assert_eq!(names(&ours.cipher_suites), without_chacha);
        assert_eq!(without_chacha.len(), 6);
        let groups = |p: &CryptoProvider| p.kx_groups.iter().map(|g| g.name()).collect::<Vec<_>>();
        assert_eq!(groups(&ours), groups(&theirs));
        let (a, b) = (ours.signature_verification_algorithms, theirs.signature_verification_algorithms);
        assert_eq!(a.supported_schemes(), b.supported_schemes());
        let ids = |v: &[&dyn rustls::pki_types::SignatureVerificationAlgorithm]| {
            v.iter().map(|a| (a.public_key_alg_id(), a.signature_alg_id())).collect::<Vec<_>>()
        };
        assert_eq!(ids(a.all), ids(b.all));
        for ((sa, va), (sb, vb)) in a.mapping.iter().zip(b.mapping) {
            assert_eq!((sa, ids(va)), (sb, ids(vb)));
        }
        assert_eq!(a.mapping.len(), b.mapping.len());
        let mut buf = [0u8; 32];
        ours.secure_random.fill(&mut buf).unwrap();
        assert_ne!(buf, [0u8; 32]);
    }
}
