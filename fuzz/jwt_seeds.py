"""jwt-claims seeds for fuzz/seeds.py: a public key set (fuzz/data/jwks.json, read by the jwt
targets) and tokens signed with it. The keys are derived from fixed numbers, so regenerating
gives the same files; no private key is written anywhere."""

import base64
import hashlib
import json
import random

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _probable_prime(rng, bits):
    while True:
        n = rng.getrandbits(bits) | (3 << (bits - 2)) | 1  # top two bits: p*q has 2048 bits
        if all(pow(a, n - 1, n) == 1 for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)):
            return n


def _rsa_key():
    rng = random.Random(20261127)
    e = 65537
    while True:
        p, q = _probable_prime(rng, 1024), _probable_prime(rng, 1024)
        if p != q and (p - 1) % e and (q - 1) % e:
            break
    n, phi = p * q, (p - 1) * (q - 1)
    d = pow(e, -1, phi)
    pub = rsa.RSAPublicNumbers(e, n)
    return rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), pub).private_key()


def keys():
    secret = lambda label: int.from_bytes(hashlib.sha256(label).digest(), "big")
    return {
        "rsa": _rsa_key(),
        "ec": ec.derive_private_key(secret(b"fuzz-p256") % (2**255), ec.SECP256R1()),
        "ed": ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fuzz-ed25519").digest()),
    }


def jwks(k):
    n = k["rsa"].public_key().public_numbers()
    ecn = k["ec"].public_key().public_numbers()
    ed = k["ed"].public_key().public_bytes_raw()
    return {"keys": [
        {"kty": "RSA", "kid": "rsa", "use": "sig", "n": b64url(n.n.to_bytes(256, "big")), "e": b64url(n.e.to_bytes(3, "big"))},
        {"kty": "EC", "kid": "ec", "crv": "P-256", "alg": "ES256",
         "x": b64url(ecn.x.to_bytes(32, "big")), "y": b64url(ecn.y.to_bytes(32, "big"))},
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "alg": "EdDSA", "x": b64url(ed)},
    ]}


def token(header, claims, sign):
    head = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + b64url(json.dumps(claims, separators=(",", ":")).encode())
    return head + "." + b64url(sign(head.encode()))


def tokens(k):
    claims = {"iss": "https://issuer.example.com/", "aud": "https://api.example.com", "sub": "user-1",
              "exp": 4102444800, "iat": 1700000000, "org": {"id": "o1"}, "permissions": ["read", "write"]}

    def es256(m):
        r, s = utils.decode_dss_signature(k["ec"].sign(m, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return [
        token({"alg": "RS256", "kid": "rsa", "typ": "JWT"}, claims, lambda m: k["rsa"].sign(m, padding.PKCS1v15(), hashes.SHA256())),
        token({"alg": "PS256", "kid": "rsa"}, claims,
              lambda m: k["rsa"].sign(m, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())),
        token({"alg": "ES256", "kid": "ec"}, claims, es256),
        token({"alg": "EdDSA", "kid": "ed"}, claims, k["ed"].sign),
        token({"alg": "none"}, claims, lambda m: b""),
        token({"alg": "RS256", "crit": ["exp"]}, claims, lambda m: b"x"),
    ]
