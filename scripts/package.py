#!/usr/bin/env python3
"""Package the built filters for distribution (called by scripts/package.sh).

For each filter it writes, under dist/:
  <artifact>.wasm and <artifact>.wasm.sha256     the module and its checksum (sha256sum format)
  oci/<filter>/                                  an OCI image layout (index.json, blobs/) holding a
                                                 "compat" Wasm image: one
                                                 application/vnd.oci.image.layer.v1.tar+gzip layer
                                                 with plugin.wasm, the variant Envoy Gateway and
                                                 Istio pull
  <filter>-oci.tar                               the same layout as one tarball
and copies the module into envoy-config/kubernetes/suite/wasm/ for the in-cluster wasm server.
Everything is byte-for-byte reproducible (fixed tar metadata, gzip without a timestamp), so the
image digest is a function of the module.

--update-manifests rewrites the sha256 of every HTTP code source in the Kubernetes manifests
and the image digests in overlays/oci-images from this build; --check-manifests fails if any
of them disagrees with it.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import sys
import tarfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
VERSION = "0.1.0"
REGISTRY = "ghcr.io/llm-gateway-filters"
FILTERS = ["ab-variant", "token-budget", "jwt-claims", "provider-fallback"]
KUBE = ROOT / "envoy-config" / "kubernetes"
HTTP_MANIFEST = KUBE / "suite" / "filters.yaml"
PATCH_MANIFEST = KUBE / "suite" / "patch-policy.yaml"
DEMO_JWKS = ROOT / "target" / "demo-jwt" / "jwks.json"
OCI_OVERLAY = KUBE / "overlays" / "oci-images" / "kustomization.yaml"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob(layout: pathlib.Path, data: bytes) -> dict:
    digest = sha256(data)
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def layer_tar(wasm: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mtime, info.mode = len(wasm), 0, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def oci_image(layout: pathlib.Path, filter_name: str, wasm: bytes) -> str:
    """Writes an OCI image layout; returns the manifest digest (hex)."""
    if layout.exists():
        shutil.rmtree(layout)
    layout.mkdir(parents=True)
    tar = layer_tar(wasm)
    layer = blob(layout, gzip_bytes(tar))
    config = {
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256(tar)}"]},
    }
    config_desc = blob(layout, json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer,
                    "annotations": {"org.opencontainers.image.title": "plugin.wasm"}}],
        "annotations": {"org.opencontainers.image.title": filter_name,
                        "org.opencontainers.image.version": VERSION},
    }
    manifest_desc = blob(layout, json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_desc,
                       "annotations": {"org.opencontainers.image.ref.name": VERSION}}],
    }
    (layout / "index.json").write_text(json.dumps(index, sort_keys=True, separators=(",", ":")))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return manifest_desc["digest"].split(":", 1)[1]


def tar_dir(src: pathlib.Path, dest: pathlib.Path):
    with tarfile.open(dest, "w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(src.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(src)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


def package(wasm_dir: pathlib.Path, dist: pathlib.Path) -> dict:
    results = {}
    dist.mkdir(parents=True, exist_ok=True)
    (KUBE / "suite" / "wasm").mkdir(parents=True, exist_ok=True)
    for name in FILTERS:
        artifact = name.replace("-", "_")
        wasm = (wasm_dir / f"{artifact}.wasm").read_bytes()
        digest = sha256(wasm)
        (dist / f"{artifact}.wasm").write_bytes(wasm)
        (dist / f"{artifact}.wasm.sha256").write_text(f"{digest}  {artifact}.wasm\n")
        shutil.copyfile(dist / f"{artifact}.wasm", KUBE / "suite" / "wasm" / f"{artifact}.wasm")
        image_digest = oci_image(dist / "oci" / name, name, wasm)
        tar_dir(dist / "oci" / name, dist / f"{name}-oci.tar")
        results[name] = {"artifact": artifact, "sha256": digest, "image": f"{REGISTRY}/{name}:{VERSION}",
                         "image_digest": image_digest, "size": len(wasm)}
    (dist / "packages.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    # The demo issuer's public keys, served by the in-cluster wasm server.
    if DEMO_JWKS.exists():
        shutil.copyfile(DEMO_JWKS, KUBE / "suite" / "wasm" / "demo-jwks.json")
    return results


def manifest_pins():
    """(file, artifact or filter, kind, value) for every pin in the manifests."""
    pins = []
    text = HTTP_MANIFEST.read_text()
    for m in re.finditer(r"url: \S+/(\w+)\.wasm\n(\s+)sha256: ([0-9a-f]{64})", text):
        pins.append((HTTP_MANIFEST, m.group(1), "sha256", m.group(3)))
    if OCI_OVERLAY.exists():
        for m in re.finditer(r"# image: (\S+)\n\s+sha256: ([0-9a-f]{64})", OCI_OVERLAY.read_text()):
            pins.append((OCI_OVERLAY, m.group(1), "image_digest", m.group(2)))
    if PATCH_MANIFEST.exists():
        for m in re.finditer(r"# wasm: (\w+)\n\s+sha256: ([0-9a-f]{64})", PATCH_MANIFEST.read_text()):
            pins.append((PATCH_MANIFEST, m.group(1), "sha256", m.group(2)))
    return pins


def update_manifests(results: dict):
    by_artifact = {r["artifact"]: r for r in results.values()}
    by_filter = {name: r for name, r in results.items()}
    text = HTTP_MANIFEST.read_text()
    text = re.sub(r"(url: \S+/(\w+)\.wasm\n\s+sha256: )[0-9a-f]{64}",
                  lambda m: m.group(1) + by_artifact[m.group(2)]["sha256"], text)
    HTTP_MANIFEST.write_text(text)
    if PATCH_MANIFEST.exists():
        text = PATCH_MANIFEST.read_text()
        text = re.sub(r"(# wasm: (\w+)\n\s+sha256: )[0-9a-f]{64}",
                      lambda m: m.group(1) + by_artifact[m.group(2)]["sha256"], text)
        PATCH_MANIFEST.write_text(text)
    if OCI_OVERLAY.exists():
        text = OCI_OVERLAY.read_text()
        text = re.sub(r"(# image: (\S+)\n(\s+)sha256: )[0-9a-f]{64}",
                      lambda m: m.group(1) + by_filter[m.group(2)]["image_digest"], text)
        OCI_OVERLAY.write_text(text)


def check_manifests(results: dict) -> int:
    by_artifact = {r["artifact"]: r for r in results.values()}
    bad = 0
    pins = manifest_pins()
    for path, what, kind, value in pins:
        entry = by_artifact.get(what) or results.get(what)
        want = entry[kind] if entry else None
        if value != want:
            print(f"{path.relative_to(ROOT)}: {kind} of {what} is {value}, the build gives {want}")
            bad += 1
    if not pins:
        print("no pins found in the manifests")
        bad += 1
    return bad


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--wasm-dir", default=os.environ.get("WASM_DIR", str(ROOT / "target/wasm32-wasip1/release")))
    parser.add_argument("--dist", default=str(ROOT / "dist"))
    parser.add_argument("--update-manifests", action="store_true")
    parser.add_argument("--check-manifests", action="store_true")
    args = parser.parse_args()
    results = package(pathlib.Path(args.wasm_dir), pathlib.Path(args.dist))
    for name, r in results.items():
        print(f"{name:18} {r['size']:>8} bytes  sha256 {r['sha256']}  image sha256:{r['image_digest']}")
    if args.update_manifests:
        update_manifests(results)
    if args.check_manifests:
        return 1 if check_manifests(results) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
