# Builds the connector (which is also the LastPass simulator) into a small image.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/lastpass-connector /usr/local/bin/lastpass-connector
ENV LOG_FORMAT=json CONNECTOR_STATE_DIR=/var/lib/lastpass-connector
VOLUME /var/lib/lastpass-connector
ENTRYPOINT ["lastpass-connector"]
CMD ["run"]
