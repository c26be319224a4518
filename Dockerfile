# freshen in a container. Run it with the Docker socket and the config mounted:
#   docker run -d -v /var/run/docker.sock:/var/run/docker.sock \
#     -v $PWD/config.json:/etc/freshen/config.json:ro -v freshen-state:/var/lib/freshen freshen
#
# Stages:
#   build    compiles freshen from source (needs crates.io)
#   runtime  the image users run (default target)
#   prebuilt a runtime image from a binary built on the host (offline CI):
#            docker build --target prebuilt --build-arg RUNTIME_IMAGE=... -f Dockerfile .
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/freshen /freshen

FROM ${RUNTIME_IMAGE} AS runtime-base
# The docker group's GID on the host varies; pass it with --group-add $(getent group docker | cut -d: -f3).
RUN useradd --system --uid 10001 --home-dir /var/lib/freshen freshen \
 && mkdir -p /etc/freshen /var/lib/freshen && chown freshen /var/lib/freshen
ENV FRESHEN_CONFIG=/etc/freshen/config.json STATE_DIRECTORY=/var/lib/freshen
VOLUME ["/var/lib/freshen"]
USER freshen
ENTRYPOINT ["freshen"]

FROM runtime-base AS prebuilt
COPY target/release/freshen /usr/local/bin/freshen

FROM runtime-base AS runtime
COPY --from=build /freshen /usr/local/bin/freshen
