"""Reference encoder and decoder for the rate limit service's messages, built on Google's
protobuf runtime (PyPI `protobuf`), to check token-budget's hand-written codec against.

The message definitions are transcribed from envoy's protos (field numbers and types):
  envoy/service/ratelimit/v3/rls.proto           RateLimitRequest, RateLimitResponse
  envoy/extensions/common/ratelimit/v3/ratelimit.proto  RateLimitDescriptor
  envoy/config/core/v3/base.proto                HeaderValue
and built at run time from descriptors, so no generated code or protoc is needed.

Usage: rls_proto.py <command>, reading JSON on stdin and writing JSON on stdout:
  encode-request   {"domain", "hits_addend"?, "descriptors": [{"entries": [[k, v]], "hits_addend"?}]} -> {"hex"}
  decode-request   {"hex"} -> the same shape (hits_addend null when the wrapper is absent)
  encode-response  {"overall_code", "statuses": [{"code", "current_limit"?: {"requests_per_unit", "unit", "name"?},
                    "limit_remaining"?, "duration_until_reset"?: {"seconds", "nanos"?}}],
                    "response_headers_to_add"?: [[k, v]], "raw_body"?, "dynamic_metadata"?: {...},
                    "quota"?: {"requests", "id"}} -> {"hex"}
"""

import json
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, struct_pb2, timestamp_pb2, wrappers_pb2
from google.protobuf.message_factory import GetMessageClass

F = descriptor_pb2.FieldDescriptorProto
OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED


def field(msg, name, number, ftype, label=OPT, type_name=None, oneof=None):
    f = msg.field.add(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name
    if oneof is not None:
        f.oneof_index = oneof
    return f


def build_pool():
    pool = descriptor_pool.DescriptorPool()
    for module in (duration_pb2, struct_pb2, timestamp_pb2, wrappers_pb2):
        fd = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(fd)
        pool.Add(fd)

    core = descriptor_pb2.FileDescriptorProto(name="envoy/config/core/v3/base.proto", package="envoy.config.core.v3", syntax="proto3")
    hv = core.message_type.add(name="HeaderValue")
    field(hv, "key", 1, F.TYPE_STRING)
    field(hv, "value", 2, F.TYPE_STRING)
    field(hv, "raw_value", 3, F.TYPE_BYTES)
    pool.Add(core)

    common = descriptor_pb2.FileDescriptorProto(
        name="envoy/extensions/common/ratelimit/v3/ratelimit.proto",
        package="envoy.extensions.common.ratelimit.v3",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    d = common.message_type.add(name="RateLimitDescriptor")
    entry = d.nested_type.add(name="Entry")
    field(entry, "key", 1, F.TYPE_STRING)
    field(entry, "value", 2, F.TYPE_STRING)
    override = d.nested_type.add(name="RateLimitOverride")
    field(override, "requests_per_unit", 1, F.TYPE_UINT32)
    field(override, "unit", 2, F.TYPE_UINT32)  # an enum on the wire; a varint either way
    field(d, "entries", 1, F.TYPE_MESSAGE, REP, ".envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.Entry")
    field(d, "limit", 2, F.TYPE_MESSAGE, OPT, ".envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.RateLimitOverride")
    field(d, "hits_addend", 3, F.TYPE_MESSAGE, OPT, ".google.protobuf.UInt64Value")
    pool.Add(common)

    rls = descriptor_pb2.FileDescriptorProto(
        name="envoy/service/ratelimit/v3/rls.proto",
        package="envoy.service.ratelimit.v3",
        syntax="proto3",
        dependency=[
            "envoy/config/core/v3/base.proto",
            "envoy/extensions/common/ratelimit/v3/ratelimit.proto",
            "google/protobuf/duration.proto",
            "google/protobuf/struct.proto",
            "google/protobuf/timestamp.proto",
        ],
    )
    req = rls.message_type.add(name="RateLimitRequest")
    field(req, "domain", 1, F.TYPE_STRING)
    field(req, "descriptors", 2, F.TYPE_MESSAGE, REP, ".envoy.extensions.common.ratelimit.v3.RateLimitDescriptor")
    field(req, "hits_addend", 3, F.TYPE_UINT32)

    resp = rls.message_type.add(name="RateLimitResponse")
    code = resp.enum_type.add(name="Code")
    for n, v in (("UNKNOWN", 0), ("OK", 1), ("OVER_LIMIT", 2)):
        code.value.add(name=n, number=v)
    rl = resp.nested_type.add(name="RateLimit")
    unit = rl.enum_type.add(name="Unit")
    for n, v in (("UNKNOWN", 0), ("SECOND", 1), ("MINUTE", 2), ("HOUR", 3), ("DAY", 4), ("MONTH", 5), ("YEAR", 6), ("WEEK", 7)):
        unit.value.add(name=n, number=v)
    field(rl, "name", 3, F.TYPE_STRING)
    field(rl, "requests_per_unit", 1, F.TYPE_UINT32)
    field(rl, "unit", 2, F.TYPE_ENUM, OPT, ".envoy.service.ratelimit.v3.RateLimitResponse.RateLimit.Unit")
    quota = resp.nested_type.add(name="Quota")
    quota.oneof_decl.add(name="expiration_specifier")
    field(quota, "requests", 1, F.TYPE_UINT32)
    field(quota, "valid_until", 2, F.TYPE_MESSAGE, OPT, ".google.protobuf.Timestamp", oneof=0)
    field(quota, "id", 3, F.TYPE_STRING)
    status = resp.nested_type.add(name="DescriptorStatus")
    field(status, "code", 1, F.TYPE_ENUM, OPT, ".envoy.service.ratelimit.v3.RateLimitResponse.Code")
    field(status, "current_limit", 2, F.TYPE_MESSAGE, OPT, ".envoy.service.ratelimit.v3.RateLimitResponse.RateLimit")
    field(status, "limit_remaining", 3, F.TYPE_UINT32)
    field(status, "duration_until_reset", 4, F.TYPE_MESSAGE, OPT, ".google.protobuf.Duration")
    field(status, "quota", 5, F.TYPE_MESSAGE, OPT, ".envoy.service.ratelimit.v3.RateLimitResponse.Quota")
    field(resp, "overall_code", 1, F.TYPE_ENUM, OPT, ".envoy.service.ratelimit.v3.RateLimitResponse.Code")
    field(resp, "statuses", 2, F.TYPE_MESSAGE, REP, ".envoy.service.ratelimit.v3.RateLimitResponse.DescriptorStatus")
    field(resp, "response_headers_to_add", 3, F.TYPE_MESSAGE, REP, ".envoy.config.core.v3.HeaderValue")
    field(resp, "request_headers_to_add", 4, F.TYPE_MESSAGE, REP, ".envoy.config.core.v3.HeaderValue")
    field(resp, "raw_body", 5, F.TYPE_BYTES)
    field(resp, "dynamic_metadata", 6, F.TYPE_MESSAGE, OPT, ".google.protobuf.Struct")
    field(resp, "quota", 7, F.TYPE_MESSAGE, OPT, ".envoy.service.ratelimit.v3.RateLimitResponse.Quota")
    pool.Add(rls)
    return pool


POOL = build_pool()
Request = GetMessageClass(POOL.FindMessageTypeByName("envoy.service.ratelimit.v3.RateLimitRequest"))
Response = GetMessageClass(POOL.FindMessageTypeByName("envoy.service.ratelimit.v3.RateLimitResponse"))


def encode_request(spec):
    m = Request(domain=spec["domain"])
    if spec.get("hits_addend"):
        m.hits_addend = spec["hits_addend"]
    for d in spec["descriptors"]:
        desc = m.descriptors.add()
        for key, value in d["entries"]:
            desc.entries.add(key=key, value=value)
        if d.get("hits_addend") is not None:
            desc.hits_addend.value = d["hits_addend"]
            desc.hits_addend.SetInParent()
    return m.SerializeToString()


def decode_request(data):
    m = Request()
    m.ParseFromString(data)
    return {
        "domain": m.domain,
        "hits_addend": m.hits_addend,
        "descriptors": [
            {
                "entries": [[e.key, e.value] for e in d.entries],
                "hits_addend": d.hits_addend.value if d.HasField("hits_addend") else None,
            }
            for d in m.descriptors
        ],
    }


def encode_response(spec):
    m = Response(overall_code=spec.get("overall_code", 0))
    for s in spec.get("statuses", []):
        st = m.statuses.add(code=s.get("code", 0), limit_remaining=s.get("limit_remaining", 0))
        if "current_limit" in s:
            cl = s["current_limit"]
            st.current_limit.requests_per_unit = cl["requests_per_unit"]
            st.current_limit.unit = cl["unit"]
            if cl.get("name"):
                st.current_limit.name = cl["name"]
            st.current_limit.SetInParent()
        if "duration_until_reset" in s:
            st.duration_until_reset.seconds = s["duration_until_reset"]["seconds"]
            st.duration_until_reset.nanos = s["duration_until_reset"].get("nanos", 0)
            st.duration_until_reset.SetInParent()
        if "quota" in s:
            st.quota.requests = s["quota"]["requests"]
            st.quota.id = s["quota"].get("id", "")
    for k, v in spec.get("response_headers_to_add", []):
        m.response_headers_to_add.add(key=k, value=v)
    for k, v in spec.get("request_headers_to_add", []):
        m.request_headers_to_add.add(key=k, value=v)
    if "raw_body" in spec:
        m.raw_body = spec["raw_body"].encode()
    if "dynamic_metadata" in spec:
        m.dynamic_metadata.update(spec["dynamic_metadata"])
    if "quota" in spec:
        m.quota.requests = spec["quota"]["requests"]
        m.quota.id = spec["quota"].get("id", "")
        m.quota.valid_until.seconds = spec["quota"].get("valid_until", 0)
    return m.SerializeToString()


def main():
    command = sys.argv[1]
    spec = json.load(sys.stdin)
    if command == "encode-request":
        out = {"hex": encode_request(spec).hex()}
    elif command == "decode-request":
        out = decode_request(bytes.fromhex(spec["hex"]))
    elif command == "encode-response":
        out = {"hex": encode_response(spec).hex()}
    else:
        raise SystemExit(f"unknown command {command}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
