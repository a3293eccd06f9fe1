# The mock upstreams of the local gateway (task-api echo, LLM providers, JWKS), for
# docker-compose.yaml. Build context: the repository root.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build -p integration --bin mock-upstreams && cp target/debug/mock-upstreams /mock-upstreams

FROM debian:bookworm-slim
COPY --from=build /mock-upstreams /usr/local/bin/mock-upstreams
ENTRYPOINT ["/usr/local/bin/mock-upstreams"]
