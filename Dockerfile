# freshen in a container. Run it with the Docker socket and the config mounted:
#   docker run -d -v /var/run/docker.sock:/var/run/docker.sock \
#     -v $PWD/config.json:/etc/freshen/config.json:ro -v freshen-state:/var/lib/freshen freshen
#
# Stages, in this order so that the classic builder stops early with --target:
#   runtime-base  the runtime without freshen: a user, config and state paths
#   prebuilt      runtime-base plus a binary built on the host (offline CI):
#                 docker build --target prebuilt --build-arg RUNTIME_IMAGE=... --build-arg BINARY=target/release/freshen .
#   build         compiles freshen from source (needs crates.io and the rust image)
#   runtime       runtime-base plus the compiled binary and CA certificates (default target)
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUNTIME_IMAGE} AS runtime-base
# No useradd in minimal images: write the user directly. The docker group's GID
# differs between hosts; pass it at run time with --group-add.
RUN echo 'freshen:x:10001:10001:freshen:/var/lib/freshen:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'freshen:x:10001:' >> /etc/group \
 && mkdir -p /etc/freshen /var/lib/freshen && chown 10001:10001 /var/lib/freshen && chmod 0700 /var/lib/freshen
ENV FRESHEN_CONFIG=/etc/freshen/config.json STATE_DIRECTORY=/var/lib/freshen
VOLUME ["/var/lib/freshen"]
# The HTTP endpoints, with "listen": "0.0.0.0:9780" in the config: docker run -p 9780:9780 …
EXPOSE 9780
USER 10001:10001
ENTRYPOINT ["freshen"]

FROM runtime-base AS prebuilt
ARG BINARY=target/release/freshen
COPY ${BINARY} /usr/local/bin/freshen

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/freshen /freshen

FROM runtime-base AS runtime
USER root
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
USER 10001:10001
COPY --from=build /freshen /usr/local/bin/freshen
