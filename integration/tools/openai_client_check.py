"""Drives a gateway with the real `openai` Python client (pinned in scripts/requirements.txt).

Usage: openai_client_check.py BASE_URL MODEL

Makes one non-streaming and one streaming chat completion (with include_usage) and prints
what the client parsed as one JSON object on stdout. The client's own retries are off, so
whatever failover happens is the gateway's. Exits non-zero (with the client's exception on
stderr) when the client cannot parse an answer.
"""

import json
import sys

import openai


def main() -> int:
    base_url, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base_url, api_key="gateway-client-token", max_retries=0, timeout=30)
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say eight words please"},
    ]
    completion = client.chat.completions.create(model=model, messages=messages, temperature=0.2)
    out = {
        "version": openai.__version__,
        "json": {
            "object": completion.object,
            "model": completion.model,
            "content": completion.choices[0].message.content,
            "finish_reason": completion.choices[0].finish_reason,
            "usage": completion.usage.model_dump() if completion.usage else None,
        },
    }
    stream = client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage, chunks = [], None, None, 0
    for chunk in stream:
        chunks += 1
        if chunk.choices:
            delta = chunk.choices[0].delta
            if delta.content:
                text.append(delta.content)
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage.model_dump()
    out["stream"] = {"chunks": chunks, "content": "".join(text), "finish_reason": finish, "usage": usage}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
