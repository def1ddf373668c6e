//! The device key: a private key PEM file as the Mender client keeps it (`mender-agent.pem`),
//! the public key it presents (PKIX `PUBLIC KEY` PEM, as Go's `x509.MarshalPKIXPublicKey`), and
//! the `X-MEN-Signature` over an auth request body.
//!
//! Signatures as the Mender client 3.4 makes them and deviceauth checks them: RSA PKCS#1 v1.5 over
//! SHA-256, ECDSA P-256 with SHA-256 in ASN.1 DER, Ed25519 over the raw body. All with ring, the
//! crypto provider rustls already links.

use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use crate::link::connection::b64;

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file is missing, unreadable or holds no private key PEM block.
    #[error("cannot read a private key PEM from {path}: {reason}")]
    Read { path: String, reason: String },
    /// A PEM block was found but no supported key in it.
    #[error(
        "{path}: unsupported private key ({reason}); supported: RSA 2048-4096 bit (PKCS#1 or PKCS#8), EC P-256 (SEC1 or PKCS#8), Ed25519 (PKCS#8)"
    )]
    Unsupported { path: String, reason: Unsupported },
    /// ring refused to sign (should not happen with a loaded key).
    #[error("signing failed")]
    Sign,
}

/// What is wrong with a decoded private key; `Display` names the format and ring's reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Unsupported {
    /// A PKCS#1 block ring does not take as an RSA key.
    #[error("RSA: {0}")]
    Rsa(ring::error::KeyRejected),
    /// A SEC1 block whose DER is not an `ECPrivateKey` with its public key.
    #[error("malformed SEC1 EC key")]
    Sec1Malformed,
    /// A SEC1 key that is not P-256 (or whose parts do not match).
    #[error("EC (only P-256 with the public key included): {0}")]
    Ec(ring::error::KeyRejected),
    /// A PKCS#8 block that is neither Ed25519, P-256 nor RSA (ring's RSA reason).
    #[error("PKCS#8: {0}")]
    Pkcs8(ring::error::KeyRejected),
    /// A PEM label no key format uses.
    #[error("unknown PEM key format")]
    UnknownFormat,
}

enum Inner {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A loaded device key.
pub struct DeviceKey {
    inner: Inner,
    public_pem: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey").field("kind", &self.kind()).finish_non_exhaustive()
    }
}

// DER pieces of the SubjectPublicKeyInfo algorithm identifiers.
const OID_RSA: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const DER_NULL: &[u8] = &[0x05, 0x00];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

impl DeviceKey {
    /// Loads the first private key PEM block of `path`.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let der = PrivateKeyDer::from_pem_file(path)
            .map_err(|e| KeyError::Read { path: shown.clone(), reason: e.to_string() })?;
        Self::from_der(&der).map_err(|reason| KeyError::Unsupported { path: shown, reason })
    }

    /// Loads a private key already decoded from PEM.
    pub(crate) fn from_der(der: &PrivateKeyDer<'_>) -> Result<Self, Unsupported> {
        let rng = SystemRandom::new();
        let inner = match der {
            PrivateKeyDer::Pkcs1(k) => {
                Inner::Rsa(RsaKeyPair::from_der(k.secret_pkcs1_der()).map_err(Unsupported::Rsa)?)
            }
            PrivateKeyDer::Sec1(k) => {
                let (d, q) = sec1_parts(k.secret_sec1_der()).ok_or(Unsupported::Sec1Malformed)?;
                Inner::Ec(
                    EcdsaKeyPair::from_private_key_and_public_key(
                        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                        d,
                        q,
                        &rng,
                    )
                    .map_err(Unsupported::Ec)?,
                )
            }
            PrivateKeyDer::Pkcs8(k) => {
                let der = k.secret_pkcs8_der();
                if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                    Inner::Ed25519(k)
                } else if let Ok(k) =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
                {
                    Inner::Ec(k)
                } else {
                    Inner::Rsa(RsaKeyPair::from_pkcs8(der).map_err(Unsupported::Pkcs8)?)
                }
            }
            _ => return Err(Unsupported::UnknownFormat),
        };
        let spki = match &inner {
            Inner::Rsa(k) => spki(&[OID_RSA, DER_NULL].concat(), k.public().as_ref()),
            Inner::Ec(k) => spki(&[OID_EC_PUBLIC_KEY, OID_P256].concat(), k.public_key().as_ref()),
            Inner::Ed25519(k) => spki(OID_ED25519, k.public_key().as_ref()),
        };
        Ok(Self { inner, public_pem: pem("PUBLIC KEY", &spki), rng })
    }

    /// "RSA", "EC P-256" or "Ed25519".
    pub fn kind(&self) -> &'static str {
        match self.inner {
            Inner::Rsa(_) => "RSA",
            Inner::Ec(_) => "EC P-256",
            Inner::Ed25519(_) => "Ed25519",
        }
    }

    /// The public key as PKIX `PUBLIC KEY` PEM, ending in a newline.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// The signature of `message`, base64 (standard alphabet, padded) for `X-MEN-Signature`.
    pub fn sign_base64(&self, message: &[u8]) -> Result<String, KeyError> {
        let sig = match &self.inner {
            Inner::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &self.rng, message, &mut sig)
                    .map_err(|_| KeyError::Sign)?;
                sig
            }
            Inner::Ec(k) => k.sign(&self.rng, message).map_err(|_| KeyError::Sign)?.as_ref().to_vec(),
            Inner::Ed25519(k) => k.sign(message).as_ref().to_vec(),
        };
        Ok(b64::encode(&sig))
    }
}

/// DER tag-length-value with definite length.
fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}

/// SubjectPublicKeyInfo: algorithm identifier contents + the key bits.
fn spki(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(key);
    tlv(0x30, &[tlv(0x30, algorithm), tlv(0x03, &bits)].concat())
}

/// PEM with 64-column base64 lines, as Go's `pem.EncodeToMemory`.
fn pem(label: &str, der: &[u8]) -> String {
    let text = b64::encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Reads one DER element: (tag, contents, rest).
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (digits, after) = rest.split_at(n);
        rest = after;
        digits.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (value, after) = rest.split_at(len);
    Some((tag, value, after))
}

/// The private scalar and public point of a SEC1 `ECPrivateKey` (RFC 5915), which must carry the
/// public key (openssl always writes it).
fn sec1_parts(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, body, _) = read_tlv(der)? else { return None };
    let (0x02, _version, rest) = read_tlv(body)? else { return None };
    let (0x04, d, mut rest) = read_tlv(rest)? else { return None };
    while !rest.is_empty() {
        let (tag, value, after) = read_tlv(rest)?;
        rest = after;
        if tag == 0xa1 {
            let (0x03, bits, _) = read_tlv(value)? else { return None };
            let (&0, q) = bits.split_first()? else { return None };
            return Some((d, q));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = tlv(0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let (tag, value, rest) = read_tlv(&long).unwrap();
        assert_eq!((tag, value.len(), rest.len()), (0x04, 300, 0));
        assert!(read_tlv(&[0x04, 0x82, 0x01]).is_none());
        assert!(read_tlv(&[0x04, 5, 1]).is_none());
    }

    #[test]
    fn pem_lines_are_64_columns() {
        let p = pem("PUBLIC KEY", &[7u8; 100]);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines[0], "-----BEGIN PUBLIC KEY-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last().copied(), Some("-----END PUBLIC KEY-----"));
    }

    #[test]
    fn unusable_keys_say_which_format_failed() {
        use rustls::pki_types::{PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
        let junk = vec![0x30, 0x03, 0x02, 0x01, 0x00];
        let text = |der: PrivateKeyDer<'_>| DeviceKey::from_der(&der).unwrap_err().to_string();
        assert!(text(PrivatePkcs1KeyDer::from(junk.clone()).into()).starts_with("RSA: "));
        assert_eq!(text(PrivateSec1KeyDer::from(junk.clone()).into()), "malformed SEC1 EC key");
        assert!(text(PrivatePkcs8KeyDer::from(junk).into()).starts_with("PKCS#8: "));
        let err = KeyError::Unsupported { path: "/k.pem".into(), reason: Unsupported::UnknownFormat };
        assert!(
            err.to_string()
                .starts_with("/k.pem: unsupported private key (unknown PEM key format); supported: RSA")
        );
    }
}
