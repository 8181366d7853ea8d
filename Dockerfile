# Shipshape's production image: `podman build -t shipshape:0.1.0 .` (or `docker build`).
#
# Two stages: `build` has the compilers (better-sqlite3 and the argon2/bcrypt bindings build or
# fetch native code) and the dev dependencies (TypeScript); the final image has Node, the
# production dependencies, dist/ and public/ — nothing else — and runs as the unprivileged `node`
# user (uid 1000, the Kubernetes manifests' runAsUser) on a read-only root file system.
#
# The base is pinned to a release (Node 24 LTS, Debian 12). Pin its digest too where your
# registry is reachable: FROM node:24.22.3-bookworm-slim@sha256:…  (docs/decisions/0090).
ARG NODE_IMAGE=docker.io/library/node:24.22.3-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
# node-gyp's tool chain, for the native modules that have no prebuilt binary for this platform.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
# Headers from the image's own Node (node-gyp would otherwise download them). The optional build
# secret `npm_ca` is an extra CA bundle for networks whose egress inspects TLS; without it npm uses
# Node's own roots.
RUN --mount=type=secret,id=npm_ca,target=/run/secrets/npm_ca \
    if [ -s /run/secrets/npm_ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/npm_ca; fi \
 && npm_config_nodedir=/usr/local npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json vite.config.ts ./
COPY scripts/ensure-build.mjs scripts/
COPY src src
COPY client client
COPY web web
RUN node scripts/ensure-build.mjs \
 && npm prune --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE}
# The image has no git: the commit is stamped at build time (build-info metric, Sentry release).
ARG BUILD_COMMIT=unknown
ENV NODE_ENV=production \
    BUILD_COMMIT=${BUILD_COMMIT}
WORKDIR /app
# Owned by root and read-only to the service: a compromised process cannot rewrite its own code.
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/dist dist
COPY --from=build /app/public public
USER node
EXPOSE 3000
# Node is PID 1: the service installs its own SIGTERM/SIGINT handlers (graceful drain, then exit
# 0), which is what PID 1 needs, and it starts no child processes, so nothing is left to reap.
STOPSIGNAL SIGTERM
# For `docker run`/`podman run` (`--format docker`); Kubernetes uses the manifests' probes.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
CMD ["node", "dist/main.js"]
