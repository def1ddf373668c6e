//! Device public keys: PEM parsing, normalisation and request-signature checks
//! (deviceauth accepts RSA PKCS#1 v1.5/SHA-256, ECDSA ASN.1 DER over SHA-256, and Ed25519).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Not a PEM "PUBLIC KEY" block, or not a parseable SPKI key of a supported type.
    CannotDecode,
    /// The signature does not verify.
    BadSignature,
}

/// A parsed device key plus its normalised PEM (what deviceauth stores and compares).
#[derive(Debug, Clone)]
pub struct PublicKey {
    kind: KeyKind,
    pub pem: String,
}

#[derive(Debug, Clone)]
enum KeyKind {
    Rsa(Box<rsa::RsaPublicKey>),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// Decodes the first PEM block; returns its label and DER bytes.
fn pem_decode(text: &str) -> Option<(String, Vec<u8>)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_owned();
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let end = rest.find(&end_marker)?;
    let body: String = rest.get(body_start..end)?.chars().filter(|c| !c.is_whitespace()).collect();
    // Headers (e.g. "Proc-Type:") are not valid in a PUBLIC KEY block; the base64 decode rejects them.
    let der = STANDARD.decode(body.as_bytes()).ok()?;
    Some((label, der))
}

/// PKIX PEM with 64-character lines and a trailing newline, as Go's `pem.EncodeToMemory` writes.
pub fn pem_encode(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

impl PublicKey {
    pub fn parse_pem(text: &str) -> Result<PublicKey, KeyError> {
        let (label, der) = pem_decode(text).ok_or(KeyError::CannotDecode)?;
        if label != "PUBLIC KEY" {
            return Err(KeyError::CannotDecode);
        }
        let spki =
            spki::SubjectPublicKeyInfoRef::try_from(der.as_slice()).map_err(|_| KeyError::CannotDecode)?;
        let oid = spki.algorithm.oid.to_string();
        let key_bytes = spki.subject_public_key.as_bytes().ok_or(KeyError::CannotDecode)?;
        let kind = match oid.as_str() {
            OID_RSA => {
                use rsa::pkcs8::DecodePublicKey as _;
                KeyKind::Rsa(Box::new(
                    rsa::RsaPublicKey::from_public_key_der(&der).map_err(|_| KeyError::CannotDecode)?,
                ))
            }
            OID_EC => {
                let curve = spki.algorithm.parameters_oid().map_err(|_| KeyError::CannotDecode)?.to_string();
                match curve.as_str() {
                    OID_P256 => KeyKind::P256(
                        p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                            .map_err(|_| KeyError::CannotDecode)?,
                    ),
                    OID_P384 => KeyKind::P384(
                        p384::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                            .map_err(|_| KeyError::CannotDecode)?,
                    ),
                    _ => return Err(KeyError::CannotDecode),
                }
            }
            OID_ED25519 => {
                let bytes: [u8; 32] = key_bytes.try_into().map_err(|_| KeyError::CannotDecode)?;
                KeyKind::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::CannotDecode)?,
                )
            }
            _ => return Err(KeyError::CannotDecode),
        };
        Ok(PublicKey { kind, pem: pem_encode(&der) })
    }

    /// Verifies `sig` over the exact request body bytes.
    pub fn verify(&self, body: &[u8], sig: &[u8]) -> Result<(), KeyError> {
        let digest = Sha256::digest(body);
        let ok = match &self.kind {
            KeyKind::Rsa(k) => k.verify(rsa::Pkcs1v15Sign::new::<rsa::sha2::Sha256>(), &digest, sig).is_ok(),
            KeyKind::P256(k) => {
                use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
                p256::ecdsa::Signature::from_der(sig).is_ok_and(|s| k.verify_prehash(&digest, &s).is_ok())
            }
            KeyKind::P384(k) => {
                use p384::ecdsa::signature::hazmat::PrehashVerifier as _;
                p384::ecdsa::Signature::from_der(sig).is_ok_and(|s| k.verify_prehash(&digest, &s).is_ok())
            }
            KeyKind::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig).is_ok_and(|s| {
                k.verify_strict(body, &s).is_ok() || {
                    use ed25519_dalek::Verifier as _;
                    k.verify(body, &s).is_ok()
                }
            }),
        };
        if ok { Ok(()) } else { Err(KeyError::BadSignature) }
    }
}
