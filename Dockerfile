# The connector (which is also the LastPass simulator), in two stages. Dependencies are built in
# their own layer from the manifests alone, so a change to src/ rebuilds only the crate.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/.fingerprint/lastpass-connector-* target/release/deps/lastpass_connector-* target/release/deps/liblastpass_connector-*
COPY src ./src
ARG GIT_COMMIT=unknown
ENV LPC_GIT_COMMIT=${GIT_COMMIT}
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/lastpass-connector --create-home connector
COPY --from=build /src/target/release/lastpass-connector /usr/local/bin/lastpass-connector
USER connector
ENV LOG_FORMAT=json \
    CONNECTOR_STATE_DIR=/var/lib/lastpass-connector \
    CONNECTOR_HTTP_ADDR=0.0.0.0:9464
VOLUME /var/lib/lastpass-connector
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["lastpass-connector", "healthcheck"]
ENTRYPOINT ["lastpass-connector"]
CMD ["run"]
