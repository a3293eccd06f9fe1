#!/usr/bin/env bash
# Mints the local gateway's demo issuer: fresh keys, the JWKS the JWKS mock serves
# (target/demo-jwt/jwks.json) and tokens for subject alice (target/demo-jwt/tokens.json, valid
# one hour). Prints the RS256 demo token.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ -x "$VENV/bin/python" ] || bash "$ROOT/scripts/setup.sh"
out="$ROOT/target/demo-jwt"
"$VENV/bin/python" "$ROOT/integration/tools/mint_tokens.py" "$out" --subject "${1:-alice}" >/dev/null
"$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["valid"]["rs256"])' "$out/tokens.json"
