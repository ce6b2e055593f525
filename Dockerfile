# smimeproxy container image: a static binary on distroless, running as an unprivileged user.
#   docker build -t smimeproxy .
#   docker run --rm smimeproxy --help
# Configuration comes from SMIMEPROXY_* environment variables or a config file mounted at
# /etc/smimeproxy/config.toml (see docs/OPERATIONS.md). Nothing is written to disk, so the root file system
# can be read-only.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Dependencies first, so that source changes reuse the module cache layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/smimeproxy ./cmd/smimeproxy

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/smimeproxy /usr/local/bin/smimeproxy
# distroless "nonroot" is uid/gid 65532.
USER 65532:65532
ENV SMIMEPROXY_CONFIG=/etc/smimeproxy/config.toml
# Default file: an empty config, so SMIMEPROXY_CONFIG always names an existing file unless one is mounted.
COPY --chmod=0444 deploy/compose/empty.toml /etc/smimeproxy/config.toml
EXPOSE 1143 9143
ENTRYPOINT ["/usr/local/bin/smimeproxy"]
CMD ["serve"]
