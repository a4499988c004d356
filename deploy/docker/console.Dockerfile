# syntax=docker/dockerfile:1.7
#
# Admin console image: a static musl binary on `scratch`, running as a non-root uid.
#
#   docker build -f deploy/docker/console.Dockerfile -t auth-proxy-console .
#
# Build context: the repository root. The final stage is identical to the one
# deploy/validate.sh builds with buildah from a host-built binary
# (`--build-arg BIN_FROM=prebuilt`), so the image CI runs is the image shipped.

ARG RUST_VERSION=1.95
# `build` compiles inside the Rust image; `prebuilt` takes bin/console from the
# build context (used by deploy/validate.sh, where no base image can be pulled).
ARG BIN_FROM=build

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# The rust slim image already has ca-certificates (copied into the final
# stage below). musl-tools: crates that compile C (ring, via rustls) need musl-gcc.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --target x86_64-unknown-linux-musl -p admin-console \
 && mkdir -p /out/bin /out/etc/ssl/certs \
 && cp target/x86_64-unknown-linux-musl/release/console /out/bin/console \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/

FROM scratch AS prebuilt
COPY bin/console /out/bin/console
COPY ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt

# hadolint ignore=DL3006
FROM ${BIN_FROM} AS bin

FROM scratch
COPY --from=bin /out/etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=bin --chmod=0555 /out/bin/console /usr/local/bin/console
# 65532 is the conventional "nonroot" uid (distroless); there is no passwd file.
USER 65532:65532
# Listens on CONSOLE_LISTEN (8090 in the Deployment); configured from the
# environment only.
EXPOSE 8090
ENTRYPOINT ["/usr/local/bin/console"]
