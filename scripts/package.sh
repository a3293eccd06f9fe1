#!/usr/bin/env bash
# Builds the filters and packages them: dist/<filter>.wasm with its sha256, an OCI image layout
# per filter (dist/oci/<filter>/, and dist/<filter>-oci.tar) in the "compat" Wasm image format
# Envoy Gateway pulls, and copies for the in-cluster wasm server
# (envoy-config/kubernetes/suite/wasm/). Pass --update-manifests to pin this build's sha256 and
# image digests in the Kubernetes manifests, --check-manifests to verify them.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$ROOT/scripts/build.sh"
# The demo issuer's keys (served in the cluster for the demo token); minted once.
[ -f "$ROOT/target/demo-jwt/jwks.json" ] || bash "$ROOT/scripts/mint-demo-token.sh" > /dev/null
WASM_DIR="$WASM_DIR" python3 "$ROOT/scripts/package.py" "$@"
