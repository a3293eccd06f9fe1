#!/usr/bin/env python3
"""Mints the keys and tokens the jwt-claims tests and benchmarks use, with PyJWT and
cryptography: an implementation independent of the filter's Rust verifier.

    mint_tokens.py OUTDIR [--now EPOCH] [--issuer ISS] [--audience AUD] [--bench-count N] [--subject SUB]

Writes into OUTDIR (fresh keys on every run; nothing is committed):
  jwks.json          the public keys the filter trusts (served by the JWKS mock or inlined)
  jwks-rotated.json  jwks.json plus a key `rsa-next` that only newer tokens use
  tokens.json        {"valid": {name: token}, "attacks": {name: token}, "claims": {...}}
  bench.json         {"jwks": "...", "rs256": [tokens], "es256": [...], "eddsa": [...]}, valid a day
  private.json       PEMs of the trusted keys, for tests that mint more tokens

Times are relative to --now (default: the current time), so tests that control the clock
(the wasmtime host) mint with their own `now`.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import time

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def seg(obj) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def public_jwk(key, kid, alg=None):
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    else:
        jwk = json.loads(OKPAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = kid
    jwk["use"] = "sig"
    if alg:
        jwk["alg"] = alg
    return jwk


def pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("outdir")
    p.add_argument("--now", type=int, default=None)
    p.add_argument("--issuer", default="https://issuer.example.com/")
    p.add_argument("--audience", default="https://api.example.com")
    p.add_argument("--bench-count", type=int, default=1)
    p.add_argument("--subject", default="user-42", help="`sub` of the valid tokens (a demo may want `alice`)")
    args = p.parse_args()
    now = args.now if args.now is not None else int(time.time())
    os.makedirs(args.outdir, exist_ok=True)

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_next = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec256 = ec.generate_private_key(ec.SECP256R1())
    ec384 = ec.generate_private_key(ec.SECP384R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    attacker_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker_ec = ec.generate_private_key(ec.SECP256R1())

    keys = [
        public_jwk(rsa_key, "rsa-2048", "RS256"),
        public_jwk(rsa_any, "rsa-any"),  # no `alg`: any RSA algorithm (RS*, PS*)
        public_jwk(ec256, "ec-p256", "ES256"),
        public_jwk(ec384, "ec-p384", "ES384"),
        public_jwk(ed, "ed-25519", "EdDSA"),
        # Keys the filter must skip without failing the set.
        {"kty": "oct", "kid": "hmac", "k": b64url(b"shared-secret-never-trusted")},
        {"kty": "EC", "kid": "k1", "crv": "secp256k1", "x": "AA", "y": "AA"},
    ]
    jwks = {"keys": keys}
    rotated = {"keys": keys + [public_jwk(rsa_next, "rsa-next", "RS256")]}

    claims = {
        "iss": args.issuer,
        "aud": args.audience,
        "sub": args.subject,
        "org": {"id": "org-7", "name": "Acme", "tier": {"level": 3}},
        "permissions": ["read:tasks", "write:tasks"],
        "admin": True,
        "level": 3,
        "ratio": 0.5,
        "iat": now - 10,
        "nbf": now - 10,
        "exp": now + 3600,
    }

    def sign(payload, key, alg, **headers):
        headers.setdefault("typ", "JWT")
        return jwt.encode(payload, key, algorithm=alg, headers=headers)

    def claims_with(**changes):
        c = dict(claims)
        for k, v in changes.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        return c

    valid = {
        "rs256": sign(claims, rsa_key, "RS256", kid="rsa-2048"),
        "rs384": sign(claims, rsa_any, "RS384", kid="rsa-any"),
        "rs512": sign(claims, rsa_any, "RS512", kid="rsa-any"),
        "ps256": sign(claims, rsa_any, "PS256", kid="rsa-any"),
        "ps384": sign(claims, rsa_any, "PS384", kid="rsa-any"),
        "ps512": sign(claims, rsa_any, "PS512", kid="rsa-any"),
        "es256": sign(claims, ec256, "ES256", kid="ec-p256"),
        "es384": sign(claims, ec384, "ES384", kid="ec-p384"),
        "eddsa": sign(claims, ed, "EdDSA", kid="ed-25519"),
        # Without `kid` the filter tries every trusted key of the algorithm's family.
        "rs256_no_kid": sign(claims, rsa_key, "RS256"),
        "es256_no_kid": sign(claims, ec256, "ES256"),
        # Within the clock skew (60 s in the tests' configs).
        "expired_within_skew": sign(claims_with(exp=now - 30), rsa_key, "RS256", kid="rsa-2048"),
        "aud_list": sign(claims_with(aud=["other", args.audience]), ec256, "ES256", kid="ec-p256"),
        # `jku` and `x5u` are ignored, never fetched: a token signed by a trusted key still passes.
        "jku_ignored": sign(claims, rsa_key, "RS256", kid="rsa-2048", jku="http://127.0.0.1:1/jwks"),
        # Signed by a key only jwks-rotated.json has.
        "rotated": sign(claims_with(sub="user-rotated"), rsa_next, "RS256", kid="rsa-next"),
        # A claim that would inject a header: the token is valid, the claim is not forwarded.
        "crlf_sub": sign(claims_with(sub="alice\r\nx-admin: true"), ec256, "ES256", kid="ec-p256"),
        "huge_permissions": sign(claims_with(permissions=["p%04d" % i for i in range(690)]), ec256, "ES256", kid="ec-p256"),
        "second_user": sign(claims_with(sub="user-43"), ed, "EdDSA", kid="ed-25519"),
    }

    header_none = seg({"alg": "none", "typ": "JWT"})
    body = seg(claims)
    rsa_pub_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_header = seg({"alg": "HS256", "typ": "JWT", "kid": "rsa-2048"})
    hs_sig = hmac.new(rsa_pub_pem, f"{hs_header}.{body}".encode(), hashlib.sha256).digest()
    # The same confusion with the JWK's `n` as the secret, as some libraries would.
    hs_header2 = seg({"alg": "HS256", "typ": "JWT"})
    hs_sig2 = hmac.new(keys[0]["n"].encode(), f"{hs_header2}.{body}".encode(), hashlib.sha256).digest()

    good = valid["rs256"]
    h, pl, sg = good.split(".")
    # Flip a character in the middle of the signature (the last one may only hold padding bits).
    mid = len(sg) // 2
    flipped = sg[:mid] + ("A" if sg[mid] != "A" else "B") + sg[mid + 1:]

    attacker_jwk = public_jwk(attacker_rsa, "rsa-2048")
    attacker_jwk.pop("use", None)
    der_sig = ec256.sign(f"{valid['es256'].split('.')[0]}.{valid['es256'].split('.')[1]}".encode(), ec.ECDSA(hashes.SHA256()))
    es_h, es_p, _ = valid["es256"].split(".")

    def raw_signed(header, payload_bytes, key):
        signing_input = f"{seg(header)}.{b64url(payload_bytes)}".encode()
        sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode()}.{b64url(sig)}"

    attacks = {
        "alg_none": f"{header_none}.{body}.",
        "alg_none_with_sig": f"{header_none}.{body}.{sg}",
        "alg_none_caps": f"{seg({'alg': 'NONE', 'typ': 'JWT'})}.{body}.",
        "hs256_rsa_public_key": f"{hs_header}.{body}.{b64url(hs_sig)}",
        "hs256_jwk_n": f"{hs_header2}.{body}.{b64url(hs_sig2)}",
        "alg_family_mismatch": sign(claims, attacker_ec, "ES256", kid="rsa-2048"),
        "rs256_key_as_ps256": sign(claims, rsa_key, "PS256", kid="rsa-2048"),
        "unknown_kid": sign(claims, attacker_rsa, "RS256", kid="not-a-key"),
        "foreign_key_no_kid": sign(claims, attacker_rsa, "RS256"),
        "expired": sign(claims_with(exp=now - 3600), rsa_key, "RS256", kid="rsa-2048"),
        "missing_exp": sign(claims_with(exp=None), rsa_key, "RS256", kid="rsa-2048"),
        "nbf_future": sign(claims_with(nbf=now + 3600), rsa_key, "RS256", kid="rsa-2048"),
        "iat_future": sign(claims_with(iat=now + 3600), rsa_key, "RS256", kid="rsa-2048"),
        "exp_not_number": sign(claims_with(exp="tomorrow"), rsa_key, "RS256", kid="rsa-2048"),
        "wrong_iss": sign(claims_with(iss="https://evil.example.com/"), rsa_key, "RS256", kid="rsa-2048"),
        "missing_iss": sign(claims_with(iss=None), rsa_key, "RS256", kid="rsa-2048"),
        "wrong_aud": sign(claims_with(aud="https://other.example.com"), rsa_key, "RS256", kid="rsa-2048"),
        "missing_aud": sign(claims_with(aud=None), rsa_key, "RS256", kid="rsa-2048"),
        "bad_signature": f"{h}.{pl}.{flipped}",
        "signature_from_other_token": f"{h}.{valid['second_user'].split('.')[1]}.{sg}",
        "empty_signature": f"{h}.{pl}.",
        # Cut to a whole number of base64 groups, so it decodes and fails as a signature.
        "truncated": f"{h}.{pl}.{sg[: len(sg) // 2 // 4 * 4]}",
        "bad_base64_header": f"{h[:5]}*{h[6:]}.{pl}.{sg}",
        "bad_base64_payload": f"{h}.{pl[:7]}!{pl[8:]}.{sg}",
        "bad_base64_signature": f"{h}.{pl}.{sg[:9]}${sg[10:]}",
        "padded_base64": f"{h}==.{pl}.{sg}",
        "header_not_json": f"{b64url(b'not json')}.{pl}.{sg}",
        "payload_not_json": raw_signed({"alg": "RS256", "kid": "rsa-2048"}, b"[1,2", rsa_key),
        "two_segments": f"{h}.{pl}",
        "four_segments": f"{good}.{sg}",
        "jwe_five_segments": ".".join([seg({"alg": "RSA-OAEP", "enc": "A256GCM"}), b64url(os.urandom(256)), b64url(os.urandom(12)), b64url(os.urandom(64)), b64url(os.urandom(16))]),
        "oversized": sign(claims_with(padding="x" * 9000), rsa_key, "RS256", kid="rsa-2048"),
        "embedded_jwk": sign(claims, attacker_rsa, "RS256", kid="rsa-2048", jwk=attacker_jwk),
        "embedded_jwk_no_kid": sign(claims, attacker_rsa, "RS256", jwk=attacker_jwk),
        "jku_attacker_key": sign(claims, attacker_rsa, "RS256", kid="attacker", jku="http://127.0.0.1:1/jwks.json"),
        "x5u_attacker_key": sign(claims, attacker_rsa, "RS256", x5u="http://127.0.0.1:1/cert.pem"),
        # A token signed by a trusted key with a critical extension the filter does not know.
        "unknown_crit": sign(claims, rsa_key, "RS256", kid="rsa-2048", crit=["urn:example:bound"], **{"urn:example:bound": True}),
        "es256_der_signature": f"{es_h}.{es_p}.{b64url(der_sig)}",
        "empty": "",
        "dots_only": "..",
    }

    tokens = {"now": now, "issuer": args.issuer, "audience": args.audience, "valid": valid, "attacks": attacks, "claims": claims}
    bench = {
        # Only the signing keys, so Envoy's native jwt_authn loads the same set.
        "jwks": json.dumps({"keys": keys[:5]}, separators=(",", ":")),
        "rs256": [sign(claims_with(exp=now + 86400, jti=f"b{i}"), rsa_key, "RS256", kid="rsa-2048") for i in range(args.bench_count)],
        "es256": [sign(claims_with(exp=now + 86400, jti=f"b{i}"), ec256, "ES256", kid="ec-p256") for i in range(args.bench_count)],
        "eddsa": [sign(claims_with(exp=now + 86400, jti=f"b{i}"), ed, "EdDSA", kid="ed-25519") for i in range(args.bench_count)],
    }
    private = {"rsa-2048": pem(rsa_key), "rsa-any": pem(rsa_any), "ec-p256": pem(ec256), "ed-25519": pem(ed), "rsa-next": pem(rsa_next)}

    def write(name, obj):
        with open(os.path.join(args.outdir, name), "w") as f:
            json.dump(obj, f, indent=1)

    write("jwks.json", jwks)
    write("jwks-rotated.json", rotated)
    write("tokens.json", tokens)
    write("bench.json", bench)
    write("private.json", private)
    return 0


if __name__ == "__main__":
    sys.exit(main())
