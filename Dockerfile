# syntax=docker/dockerfile:1
#
# wxkeeper container image: a static-ish Rust binary on distroless (glibc + CA certificates, no
# shell, no package manager), running as the unprivileged user 65532.
#
#   docker build -t wxkeeper:dev .
#   docker run --rm -p 8080:8080 -p 9464:9464 --env-file wxkeeper.env wxkeeper:dev
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.

# Build stage: the same Debian release (bookworm, glibc 2.36) as the runtime image, so the
# binary links against the glibc it will find. TLS is rustls (no OpenSSL to ship).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target directories are cache mounts, so dependency builds survive source
# edits; the binary is copied out of the cache mount in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin wxkeeper \
 && install -D -m 0755 target/release/wxkeeper /out/wxkeeper

# Runtime: distroless "cc" has glibc, libgcc and CA certificates; :nonroot runs as 65532.
# Pin it by digest in your own builds (gcr.io/distroless/cc-debian12:nonroot@sha256:…).
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="wxkeeper" \
      org.opencontainers.image.description="Keeps WeChat Open Platform third-party platform credentials fresh" \
      org.opencontainers.image.source="https://github.com/wxkeeper/wxkeeper" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/wxkeeper /wxkeeper
# Numeric, so Kubernetes' runAsNonRoot check can verify it without reading /etc/passwd.
USER 65532:65532
# 8080: callback receiver and token API. 9464: /metrics /healthz /readyz /status.
EXPOSE 8080 9464
# SIGTERM (Docker's and Kubernetes' default) starts the graceful shutdown: /readyz 503, lease
# released, requests drained within WXKEEPER_SHUTDOWN_GRACE. A second signal exits at once.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/wxkeeper"]
CMD ["serve"]
