//! JSON Web Key Sets (RFC 7517) and the signature algorithms the filter accepts (RFC 7518,
//! RFC 8037): which key may verify which algorithm, and the verification itself.
//!
//! Keys are parsed and prepared once, when a JWKS is loaded (RSA Montgomery parameters,
//! decompressed curve points); a request only selects a key and verifies.

use crate::rsa::{self, Hash, RsaPublicKey};
use serde_json::Value;

/// A signature algorithm the filter verifies. `none` and the HMAC algorithms are not here:
/// a token naming them is rejected before any key is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// The kind of key an algorithm needs. A key is only ever used for its own family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl Alg {
    pub const ALL: [Alg; 9] = [Alg::RS256, Alg::RS384, Alg::RS512, Alg::PS256, Alg::PS384, Alg::PS512, Alg::ES256, Alg::ES384, Alg::EdDSA];

    pub fn parse(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    pub fn family(self) -> Family {
        match self {
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => Family::Rsa,
            Alg::ES256 => Family::P256,
            Alg::ES384 => Family::P384,
            Alg::EdDSA => Family::Ed25519,
        }
    }
}

/// A prepared public key.
#[derive(Clone, Debug)]
pub enum PublicKey {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl PublicKey {
    pub fn family(&self) -> Family {
        match self {
            PublicKey::Rsa(_) => Family::Rsa,
            PublicKey::P256(_) => Family::P256,
            PublicKey::P384(_) => Family::P384,
            PublicKey::Ed25519(_) => Family::Ed25519,
        }
    }
}

/// One usable key of a set.
#[derive(Clone, Debug)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The JWK's `alg`: when present, the only algorithm the key verifies.
    pub alg: Option<Alg>,
    pub key: PublicKey,
}

impl Jwk {
    /// Whether this key may verify a token signed with `alg`: the same family, and the JWK's
    /// own `alg` (if it names one) is that algorithm.
    pub fn accepts(&self, alg: Alg) -> bool {
        self.key.family() == alg.family() && self.alg.is_none_or(|a| a == alg)
    }
}

/// A parsed key set. Keys of types the filter does not use (`oct`, other curves, encryption
/// keys) are skipped, so one odd key does not cost the whole set.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
}

/// Why a JWKS document, or one key in it, was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksError(pub String);

/// What parsing a JWKS found: the usable keys, and why each other key was skipped.
#[derive(Debug)]
pub struct Parsed {
    pub set: KeySet,
    pub skipped: Vec<String>,
}

/// The largest JWKS document the filter reads (a set of a few dozen keys is ~20 KB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// The most keys one set may hold; every key without a matching `kid` may be tried.
pub const MAX_KEYS: usize = 64;

impl KeySet {
    /// Parses a JWKS document. The document must be a JSON object with a `keys` array that
    /// yields at least one usable key.
    pub fn parse(text: &[u8]) -> Result<Parsed, JwksError> {
        if text.len() > MAX_JWKS_BYTES {
            return Err(JwksError(format!("is larger than {MAX_JWKS_BYTES} bytes")));
        }
        let doc: Value = serde_json::from_slice(text).map_err(|e| JwksError(format!("is not valid JSON ({e})")))?;
        let keys = doc.get("keys").ok_or_else(|| JwksError("has no `keys` array".into()))?;
        let keys = keys.as_array().ok_or_else(|| JwksError("`keys` is not an array".into()))?;
        let mut set = KeySet::default();
        let mut skipped = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match parse_key(key) {
                Ok(Some(jwk)) if set.keys.len() < MAX_KEYS => set.keys.push(jwk),
                Ok(Some(_)) => skipped.push(format!("keys[{i}]: more than {MAX_KEYS} keys")),
                Ok(None) => {}
                Err(e) => skipped.push(format!("keys[{i}]: {}", e.0)),
            }
        }
        if set.keys.is_empty() {
            let why = if skipped.is_empty() { String::new() } else { format!(" ({})", skipped.join("; ")) };
            return Err(JwksError(format!("has no usable signing key{why}")));
        }
        Ok(Parsed { set, skipped })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

fn field<'a>(key: &'a Value, name: &str) -> Result<Option<&'a str>, JwksError> {
    match key.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JwksError(format!("`{name}` is not a string"))),
    }
}

fn bytes(key: &Value, name: &str) -> Result<Vec<u8>, JwksError> {
    let text = field(key, name)?.ok_or_else(|| JwksError(format!("`{name}` is missing")))?;
    crate::b64::decode(text.as_bytes()).ok_or_else(|| JwksError(format!("`{name}` is not base64url")))
}

/// One JWK: `Ok(None)` for a key this filter has no use for (another type, an encryption key),
/// `Err` for a signing key that is malformed or names an unknown algorithm.
fn parse_key(key: &Value) -> Result<Option<Jwk>, JwksError> {
    if !key.is_object() {
        return Err(JwksError("is not an object".into()));
    }
    if field(key, "use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let kty = field(key, "kty")?.ok_or_else(|| JwksError("`kty` is missing".into()))?;
    let kid = field(key, "kid")?.map(str::to_string);
    let alg = match field(key, "alg")? {
        None => None,
        Some(name) => match Alg::parse(name) {
            Some(alg) => Some(alg),
            None => return Err(JwksError(format!("unknown algorithm `{name}`"))),
        },
    };
    let key = match kty {
        "RSA" => {
            let key = RsaPublicKey::new(&bytes(key, "n")?, &bytes(key, "e")?).map_err(|e| match e {
                rsa::KeyError::Size => JwksError("RSA modulus must be 2048 to 4096 bits".into()),
                rsa::KeyError::Invalid => JwksError("RSA `n` or `e` is not a valid public key".into()),
            })?;
            PublicKey::Rsa(key)
        }
        "EC" => {
            let crv = field(key, "crv")?.ok_or_else(|| JwksError("`crv` is missing".into()))?;
            let (x, y) = (bytes(key, "x")?, bytes(key, "y")?);
            let sec1 = |len: usize| -> Result<Vec<u8>, JwksError> {
                if x.len() != len || y.len() != len {
                    return Err(JwksError(format!("`x` and `y` must be {len} bytes for {crv}")));
                }
                Ok([&[4u8][..], &x, &y].concat())
            };
            match crv {
                "P-256" => PublicKey::P256(
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1(32)?).map_err(|_| JwksError("is not a point on P-256".into()))?,
                ),
                "P-384" => PublicKey::P384(
                    p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1(48)?).map_err(|_| JwksError("is not a point on P-384".into()))?,
                ),
                _ => return Ok(None),
            }
        }
        "OKP" => match field(key, "crv")? {
            Some("Ed25519") => {
                let x: [u8; 32] = bytes(key, "x")?.try_into().map_err(|_| JwksError("Ed25519 `x` must be 32 bytes".into()))?;
                let vk = ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| JwksError("is not an Ed25519 public key".into()))?;
                if vk.is_weak() {
                    return Err(JwksError("is a weak (small-order) Ed25519 key".into()));
                }
                PublicKey::Ed25519(vk)
            }
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    if let Some(alg) = alg {
        if alg.family() != key.family() {
            return Err(JwksError(format!("`alg` {} does not fit a {kty} key", alg.name())));
        }
    }
    Ok(Some(Jwk { kid, alg, key }))
}

/// Verifies `signature` over `message` (the JWS signing input) with `key` for `alg`.
/// The caller has already checked `key.accepts(alg)`.
pub fn verify(alg: Alg, key: &Jwk, message: &[u8], signature: &[u8]) -> bool {
    use p256::ecdsa::signature::Verifier;
    match (&key.key, alg) {
        (PublicKey::Rsa(k), Alg::RS256) => k.verify_pkcs1v15(Hash::Sha256, message, signature),
        (PublicKey::Rsa(k), Alg::RS384) => k.verify_pkcs1v15(Hash::Sha384, message, signature),
        (PublicKey::Rsa(k), Alg::RS512) => k.verify_pkcs1v15(Hash::Sha512, message, signature),
        (PublicKey::Rsa(k), Alg::PS256) => k.verify_pss(Hash::Sha256, message, signature),
        (PublicKey::Rsa(k), Alg::PS384) => k.verify_pss(Hash::Sha384, message, signature),
        (PublicKey::Rsa(k), Alg::PS512) => k.verify_pss(Hash::Sha512, message, signature),
        // JWS carries ECDSA signatures as fixed-size r || s (RFC 7518 §3.4), never DER.
        (PublicKey::P256(k), Alg::ES256) => {
            signature.len() == 64 && p256::ecdsa::Signature::from_slice(signature).is_ok_and(|s| k.verify(message, &s).is_ok())
        }
        (PublicKey::P384(k), Alg::ES384) => {
            signature.len() == 96 && p384::ecdsa::Signature::from_slice(signature).is_ok_and(|s| k.verify(message, &s).is_ok())
        }
        // verify_strict also refuses small-order points and non-canonical signatures.
        (PublicKey::Ed25519(k), Alg::EdDSA) => {
            ed25519_dalek::Signature::from_slice(signature).is_ok_and(|s| k.verify_strict(message, &s).is_ok())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_by_name() {
        for alg in Alg::ALL {
            assert_eq!(Alg::parse(alg.name()), Some(alg));
        }
        for bad in ["none", "None", "HS256", "rs256", "ES512", "RSA-OAEP", ""] {
            assert_eq!(Alg::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn malformed_sets_are_refused() {
        let cases: [(&str, &str); 6] = [
            ("not json", "is not valid JSON"),
            ("{}", "has no `keys` array"),
            (r#"{"keys": {}}"#, "`keys` is not an array"),
            (r#"{"keys": []}"#, "has no usable signing key"),
            (r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#, "has no usable signing key"),
            (r#"{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}"#, "RSA modulus must be 2048 to 4096 bits"),
        ];
        for (doc, want) in cases {
            let err = KeySet::parse(doc.as_bytes()).unwrap_err();
            assert!(err.0.contains(want), "{doc}: {}", err.0);
        }
        let err = KeySet::parse(br#"{"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES257", "x": "AA", "y": "AA"}]}"#).unwrap_err();
        assert!(err.0.contains("unknown algorithm `ES257`"), "{}", err.0);
        let err = KeySet::parse(br#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]}"#).unwrap_err();
        assert!(err.0.contains("32 bytes"), "{}", err.0);
    }
}
