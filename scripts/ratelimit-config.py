#!/usr/bin/env python3
"""The envoyproxy/ratelimit service's descriptor configuration for token-budget's global mode,
generated from the filter's own configuration so that the two cannot disagree.

token-budget (global mode) sends, per applicable budget, one descriptor
    [("budget", <name>), (<key part>, <value>), ...]
with the key parts in the budget's `key` order: `subject` -> ("subject", ...), `model` ->
("model", ...), `header:<name>` -> ("header:<name>", ...). This writes the matching nested
descriptors, with the budget's tokens per window as `requests_per_unit` and its window as the
`unit` (global mode allows 1s, 1m, 1h, 1d, 7d and 30d windows: the service's second, minute,
hour, day, week and 30-day month).

Usage (run with the project's .venv/bin/python, which has PyYAML):
  ratelimit-config.py --config FILE              one token-budget configuration (JSON; - for stdin)
  ratelimit-config.py --from FILE [--from ...]   every global-mode token-budget configuration in
                                                 Envoy bootstraps or Kubernetes manifests
and where to put it:
  --out FILE          the service's config file (one domain)
  --out-dir DIR       one <domain>.yaml per domain (the service loads every file of its
                      RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/config directory)
  --configmap NAME --namespace NS [--out FILE]   a Kubernetes ConfigMap with one <domain>.yaml per domain
  --check FILE        exit 1 (with a diff) if FILE is not what would be written
Without --out/--out-dir/--check it prints to stdout.
"""

import argparse
import difflib
import json
import os
import re
import sys

import yaml

UNITS = {1: "second", 60: "minute", 3600: "hour", 86400: "day", 7 * 86400: "week", 30 * 86400: "month"}
MAX_TOKENS = 2**32 - 1
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]+$")


class ConfigError(Exception):
    pass


def window_seconds(text, field):
    m = re.fullmatch(r"(\d+)([smhd])", str(text))
    if not m:
        raise ConfigError(f"{field}: `{text}`: a number followed by s, m, h or d")
    seconds = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if seconds not in UNITS:
        raise ConfigError(f"{field}: `{text}`: global mode needs a window the rate limit service has: 1s, 1m, 1h, 1d, 7d or 30d")
    return seconds


def descriptor_key(part, field):
    if part in ("subject", "model"):
        return part
    if isinstance(part, str) and part.startswith("header:"):
        name = part[len("header:"):].strip().lower()
        if not HEADER.match(name):
            raise ConfigError(f"{field}: `{part}` is not a valid header name")
        return f"header:{name}"
    raise ConfigError(f"{field}: `{part}` is not `subject`, `model` or `header:<name>`")


def budgets_of(config, where):
    """(domain, [(name, [descriptor keys], tokens, unit)]) of one global-mode configuration."""
    glob = config.get("global") or {}
    domain = glob.get("domain")
    if not isinstance(domain, str) or not domain:
        raise ConfigError(f"{where}: global.domain: missing")
    out = []
    for i, b in enumerate(config.get("budgets") or []):
        field = f"{where}: budgets[{i}]"
        name = b.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise ConfigError(f"{field}.name: `{name}` may only contain A-Z a-z 0-9 _ - (1 to 64)")
        tokens = b.get("tokens")
        if not isinstance(tokens, int) or isinstance(tokens, bool) or not 1 <= tokens <= MAX_TOKENS:
            raise ConfigError(f"{field}.tokens: global mode allows 1 to {MAX_TOKENS} (the service's limits are uint32)")
        keys = [descriptor_key(p, f"{field}.key[{j}]") for j, p in enumerate(b.get("key") or [])]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"{field}.key: duplicate parts")
        out.append((name, keys, tokens, UNITS[window_seconds(b.get("window"), f"{field}.window")]))
    if not out:
        raise ConfigError(f"{where}: budgets: none")
    return domain, out


def is_global_config(value):
    return isinstance(value, dict) and value.get("mode") == "global" and "budgets" in value


def find_configs(node, found):
    """Every global-mode token-budget configuration inside a YAML/JSON tree: as an object (an
    EnvoyExtensionPolicy's `config`) or as a JSON string (a bootstrap's StringValue)."""
    if is_global_config(node):
        found.append(node)
    elif isinstance(node, dict):
        for v in node.values():
            find_configs(v, found)
    elif isinstance(node, list):
        for v in node:
            find_configs(v, found)
    elif isinstance(node, str) and node.lstrip().startswith("{"):
        try:
            find_configs(json.loads(node), found)
        except ValueError:
            pass


def service_config(domain, budgets):
    descriptors = []
    for name, keys, tokens, unit in budgets:
        limit = {"unit": unit, "requests_per_unit": tokens}
        # Innermost first: the limit sits on the last key part (or on the budget itself).
        inner = None
        for key in reversed(keys):
            level = {"key": key}
            if inner is None:
                level["rate_limit"] = limit
            else:
                level["descriptors"] = [inner]
            inner = level
        top = {"key": "budget", "value": name}
        if inner is None:
            top["rate_limit"] = limit
        else:
            top["descriptors"] = [inner]
        descriptors.append(top)
    return {"domain": domain, "descriptors": descriptors}


def collect(configs):
    """{domain: [budgets]} merged over configurations; one budget name, one definition."""
    domains = {}
    for where, config in configs:
        domain, budgets = budgets_of(config, where)
        known = domains.setdefault(domain, {})
        for b in budgets:
            if b[0] in known and known[b[0]] != b:
                raise ConfigError(f"{where}: budget `{b[0]}` of domain `{domain}` is defined differently elsewhere")
            known[b[0]] = b
    return {d: list(b.values()) for d, b in domains.items()}


class Dumper(yaml.SafeDumper):
    pass


def block_strings(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, block_strings)


def dump(doc):
    return yaml.dump(doc, Dumper=Dumper, sort_keys=False, default_flow_style=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="a token-budget configuration (JSON file, - for stdin)")
    ap.add_argument("--from", dest="sources", action="append", default=[], help="Envoy bootstraps or Kubernetes manifests")
    ap.add_argument("--configmap", help="write a ConfigMap of this name")
    ap.add_argument("--namespace", default="default")
    ap.add_argument("--out")
    ap.add_argument("--out-dir")
    ap.add_argument("--check")
    args = ap.parse_args()

    configs = []
    if args.config:
        text = sys.stdin.read() if args.config == "-" else open(args.config).read()
        config = json.loads(text)
        if not is_global_config(config):
            raise SystemExit("ratelimit-config: the configuration is not in global mode (\"mode\": \"global\")")
        configs.append(("config", config))
    for path in args.sources:
        found = []
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                find_configs(doc, found)
        configs.extend((path, c) for c in found)
    if not configs:
        raise SystemExit("ratelimit-config: no token-budget configuration in global mode found")
    try:
        domains = collect(configs)
    except ConfigError as e:
        raise SystemExit(f"ratelimit-config: {e}")

    origin = " ".join(f"--from {p}" for p in args.sources) or "--config"
    if args.configmap:
        origin += f" --configmap {args.configmap} --namespace {args.namespace}"
    header = f"# Generated by scripts/ratelimit-config.py {origin}; do not edit.\n"
    if args.configmap:
        data = {f"{d}.yaml": dump(service_config(d, b)) for d, b in sorted(domains.items())}
        doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": args.configmap, "namespace": args.namespace}, "data": data}
        files = {args.out or args.check or "-": header + dump(doc)}
    elif args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        files = {os.path.join(args.out_dir, f"{d}.yaml"): header + dump(service_config(d, b)) for d, b in domains.items()}
    else:
        if len(domains) != 1:
            raise SystemExit(f"ratelimit-config: {len(domains)} domains ({', '.join(sorted(domains))}): use --out-dir or --configmap")
        (d, b), = domains.items()
        files = {args.out or args.check or "-": header + dump(service_config(d, b))}

    for path, text in files.items():
        if args.check:
            current = open(path).read() if os.path.exists(path) else ""
            if current != text:
                sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True), path, "generated"))
                raise SystemExit(f"ratelimit-config: {path} is not current: regenerate it with the same arguments and --out")
        elif path == "-":
            sys.stdout.write(text)
        else:
            with open(path, "w") as f:
                f.write(text)


if __name__ == "__main__":
    main()
