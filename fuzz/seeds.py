#!/usr/bin/env python3
"""Writes the committed seed corpora (fuzz/seeds/<target>/) from the repository's own test
payloads: every wasm plugin config in the Envoy bootstraps and Kubernetes manifests, the
documented Anthropic streams pinned in provider-fallback's tests, and the request and answer
examples of the README and the tests. Run it after those change: python3 fuzz/seeds.py
It rewrites fuzz/seeds/ whole: add a seed here, not by hand in that folder."""

import ast
import glob
import hashlib
import json
import os
import re
import shutil
import struct
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")

# Which filter a wasm module file belongs to.
MODULES = {
    "ab_variant": "ab_variant",
    "provider_fallback": "pf",
    "token_budget": "tb",
    "jwt_claims": "jwt",
}


def seeds(target, items):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    for item in items:
        data = item.encode() if isinstance(item, str) else item
        name = hashlib.sha1(data).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def walk(node, found):
    """Collects (module file, config JSON) from Envoy wasm filters and EnvoyExtensionPolicies."""
    if isinstance(node, dict):
        vm = node.get("vm_config")
        conf = node.get("configuration")
        if isinstance(vm, dict) and isinstance(conf, dict) and isinstance(conf.get("value"), str):
            code = json.dumps(vm.get("code", {}))
            found.append((code, conf["value"]))
        if node.get("kind") == "EnvoyExtensionPolicy":
            for w in (node.get("spec") or {}).get("wasm") or []:
                if "config" in w:
                    found.append((json.dumps(w), json.dumps(w["config"])))
        for v in node.values():
            walk(v, found)
    elif isinstance(node, list):
        for v in node:
            walk(v, found)


def plugin_configs():
    by_filter = {k: set() for k in MODULES.values()}
    paths = glob.glob(os.path.join(ROOT, "integration/envoy/**/*.yaml"), recursive=True)
    paths += glob.glob(os.path.join(ROOT, "envoy-config/**/*.yaml"), recursive=True)
    for path in sorted(paths):
        try:
            docs = list(yaml.safe_load_all(open(path)))
        except yaml.YAMLError:
            continue
        found = []
        for doc in docs:
            walk(doc, found)
        for where, config in found:
            for module, short in MODULES.items():
                if module in where or module.replace("_", "-") in where:
                    by_filter[short].add(config.strip())
    return by_filter


def rust_concat(path, name):
    """The text of a `const NAME: &str = concat!("..", ..);` in a Rust source file."""
    text = open(os.path.join(ROOT, path)).read()
    m = re.search(r"const " + name + r": &str = concat!\((.*?)\n\s*\);", text, re.S)
    if not m:
        sys.exit(f"{name} not found in {path}")
    return "".join(ast.literal_eval(s) for s in re.findall(r'"(?:[^"\\]|\\.)*"', m.group(1)))


def header_map(pairs):
    """proxy-wasm's serialized header map."""
    out = struct.pack("<I", len(pairs))
    for k, v in pairs:
        out += struct.pack("<II", len(k), len(v))
    for k, v in pairs:
        out += k + b"\0" + v + b"\0"
    return out


def main():
    shutil.rmtree(SEEDS, ignore_errors=True)
    configs = plugin_configs()

    seeds("common_config", [c for cs in configs.values() for c in sorted(cs)][:8] + [
        '{"experiments": [{"name": "x", "variants": [{"name": "a", "weight": "1"}]}]}',
        '{"a": [1, 2, {"b": [3, {"c": ', "[]", "",
    ])
    seeds("common_headers", [
        header_map([(b":path", b"/api/tasks?variant=beta&x=%41+b"), (b"cookie", b"a=1; uid=\"42\"; ab_checkout=0123456789abcdef"),
                    (b"x-user-id", b"alice"), (b"cookie", b"uid=2")]),
        header_map([(b":status", b"503")]),
        header_map([]),
        b"\x02\x00\x00\x00\x05\x00\x00\x00\xff\xff\xff\xff:path\x00/\x00",
        b"a=1; uid=42; b=2",
        b"/p?variant=beta%2",
    ])

    ab_readme = '''{"experiments": [{"name": "checkout", "subject": [{"header": "x-user-id"}, {"cookie": "uid"}],
      "variants": [{"name": "control", "weight": 90}, {"name": "beta", "weight": 10}], "header": "x-variant",
      "salt": "2026-11", "override": {"header": "x-force-variant", "query": "variant"},
      "stickyCookie": {"name": "ab_checkout", "maxAgeS": 2592000, "secure": true, "httpOnly": true, "sameSite": "Lax"},
      "match": {"pathPrefix": "/api/"}, "responseHeader": true}]}'''
    seeds("ab_variant_config", sorted(configs["ab_variant"]) + [
        ab_readme,
        '{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": 0}]}]}',
        '{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": 1}], "stickyCookie": {"name": "c", "sameSite": "None"}}]}',
    ])
    seeds("ab_variant_request", [
        "/api/tasks\nuid=42\nalice\n",
        "/api/tasks?variant=beta\n\n\n",
        "/api/tasks\nab_checkout=0123456789abcdef; ab_ramp=zz\n\n",
        "/api/x\n\n\nbeta",
        "/other?variant=control#f\nuid=\"q\"\n\nnope",
    ])

    pf_readme = [
        '{"role": "router", "modelHeader": "x-ai-model", "maxRequestBytes": 4194304}',
        '''{"role": "upstream", "providers": [
          {"name": "openai", "schema": "openai", "host": "api.openai.com", "pathPrefix": "/v1", "apiKey": {"env": "OPENAI_API_KEY"}},
          {"name": "anthropic", "schema": "anthropic", "host": "api.anthropic.com", "apiKey": {"env": "ANTHROPIC_API_KEY"},
           "modelNameOverride": "claude-sonnet-4-5", "anthropicVersion": "2023-06-01", "defaultMaxTokens": 4096}],
          "maxRequestBytes": 4194304, "maxResponseBytes": 4194304, "providerHeader": "x-ai-provider"}''',
        '{"role": "upstream", "providers": [{"name": "o", "schema": "openai", "host": "h", "apiKey": {"inline": "sk-1"}}]}',
        '{"role": "upstream", "providers": [{"name": "o", "schema": "openai", "host": "h", "apiKey": {"sk-pasted": "x"}}]}',
    ]
    seeds("pf_config", sorted(configs["pf"]) + pf_readme)

    seeds("pf_request", [
        json.dumps({"model": "gpt-4o", "messages": [{"role": "developer", "content": "You are a helpful assistant."},
                                                     {"role": "user", "content": "Hello!"}],
                    "temperature": 0.7, "top_p": 0.9, "stop": "\n\n", "max_completion_tokens": 300, "user": "user-1234",
                    "n": 1, "presence_penalty": 0, "stream": True, "stream_options": {"include_usage": True}, "logprobs": None}),
        json.dumps({"model": "gpt-4o", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                                   "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                                                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "parallel_tool_calls": False}),
        '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 1.5}',
        '{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}',
        '{"model": 7}', "[1]", "{", '{"model": "a\\u0000b"}',
    ])

    text_stream = rust_concat("filters/provider-fallback/src/from_anthropic.rs", "TEXT_STREAM")
    tool_stream = rust_concat("filters/provider-fallback/src/from_anthropic.rs", "TOOL_STREAM")
    seeds("pf_response_sse", [
        text_stream, tool_stream, text_stream.replace("\n", "\r\n"),
        text_stream[: len(text_stream) // 2],
        'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n',
        ": comment\ndata: {\"type\": \"ping\"}\n\ndata: [DONE]\n\n",
    ])
    seeds("pf_response_json", [
        json.dumps({"id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
                    "model": "claude-sonnet-4-5-20250929", "content": [{"type": "text", "text": "Hi! My name is Claude."}],
                    "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_creation_input_tokens": 10,
                              "cache_read_input_tokens": 100, "service_tier": "standard"}}),
        json.dumps({"id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                    "stop_reason": "tool_use", "content": [
                        {"type": "text", "text": "<thinking>I need to use get_weather</thinking>"},
                        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
                         "input": {"location": "San Francisco, CA", "unit": "celsius"}}],
                    "usage": {"input_tokens": 10, "output_tokens": 20}}),
        json.dumps({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}}),
        json.dumps({"error": {"message": "Incorrect API key provided: sk-fuzz-key.", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}),
        json.dumps({"error": {"message": "Rate limit reached", "type": "requests", "param": None, "code": "rate_limit_exceeded"}}),
        "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
        "no healthy upstream", '{"type": "message", "usage": {"input_tokens": 18446744073709551615, "output_tokens": 1}}',
    ])

    openai_stream = "".join(
        "data: " + json.dumps(e) + "\n\n"
        for e in [
            {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hello"}}]},
            {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"id": "c1", "object": "chat.completion.chunk", "choices": [],
             "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11, "prompt_tokens_details": {"cached_tokens": 4}}},
        ]
    ) + "data: [DONE]\n\n"
    responses_stream = (
        'event: response.output_text.delta\ndata: {"type": "response.output_text.delta", "delta": "Hi"}\n\n'
        'event: response.completed\ndata: {"type": "response.completed", "response": {"id": "r", "usage": '
        '{"input_tokens": 5, "input_tokens_details": {"cached_tokens": 1}, "output_tokens": 3, "total_tokens": 8}}}\n\n'
    )
    openai_json = json.dumps({"id": "c", "object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": "hi"}}],
                              "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}})
    seeds("tb_usage", [openai_stream, responses_stream, text_stream, tool_stream, openai_json, openai_stream.replace("\n", "\r\n"),
                       '{"usage": {"prompt_tokens": -1}}', '{"usage": {"prompt_tokens": 100000001}}'])
    seeds("tb_request", [
        '{"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}',
        '{"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": false}, "max_completion_tokens": 5}',
        '{"model": "gpt-4o", "stream": true, "stream_options": null}',
        '{"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": true, "messages": []}',
        ' {"input": "hi", "model": "o3", "max_output_tokens": 9}', "[]",
    ])
    import gzip, zlib
    seeds("tb_decode", [gzip.compress(openai_json.encode()), zlib.compress(openai_stream.encode()),
                        gzip.compress(b"x" * 100000)[:2000], b"\x1f\x8b\x08\x1c\x00\x00\x00\x00\x00\xff\x03\x00ab\x00c\x00"])

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import jwt_seeds
    keys = jwt_seeds.keys()
    jwks = jwt_seeds.jwks(keys)
    os.makedirs(os.path.join(ROOT, "fuzz", "data"), exist_ok=True)
    with open(os.path.join(ROOT, "fuzz", "data", "jwks.json"), "w") as f:
        json.dump(jwks, f, indent=1)
    signed = jwt_seeds.tokens(keys)
    seeds("jwt_token", signed + [signed[0][:-10], signed[2].replace(".", "..", 1), "a.b.c"])
    seeds("jwt_jwks", [json.dumps(jwks), json.dumps({"keys": [jwks["keys"][1]]}), '{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}',
                       '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "EC", "crv": "P-384", "x": "", "y": ""}]}'])
    seeds("jwt_extract", ["/api/x?access_token=abc&b=1#frag", "session=tok; other=1", "/p?a&access_token&access_token=x", "access_token=%61"])

    # RateLimitResponse: OVER_LIMIT, one status {OVER_LIMIT, limit {10, MINUTE}, remaining 0, reset 59 s}.
    seeds("tb_rls", [bytes([0x08, 0x02, 0x12, 0x0c, 0x08, 0x02, 0x12, 0x04, 0x08, 0x0a, 0x10, 0x02, 0x18, 0x00, 0x22, 0x02, 0x08, 0x3b]),
                     bytes([0x08, 0x01]), b"user_1%~x", "ü".encode() * 3])

    for name in ("token_budget", "jwt_claims"):
        short = MODULES[name]
        if configs[short]:
            seeds(f"{short}_config", sorted(configs[short]))
    for d in sorted(os.listdir(SEEDS)):
        print(f"{d}: {len(os.listdir(os.path.join(SEEDS, d)))} seeds")


if __name__ == "__main__":
    main()
