# syntax=docker/dockerfile:1
# Backhaul: multi-stage build on Node 24. Runs the TypeScript sources with Node's type stripping,
# so the image needs no compiler: production dependencies only.

FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=dev: no TypeScript, tap, drizzle-kit. --omit=optional: no embedded PostgreSQL binaries
# (~60 MB; a container uses DATABASE_URL) and no pg-cloudflare. No dependency left needs an
# install script.
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund && npm cache clean --force
# The postgres.js connection-loss guards (npm's postinstall, skipped by --ignore-scripts): applied
# here because the runtime image's node_modules belongs to root and the server runs as node.
COPY scripts/patch-postgres.mjs ./scripts/
RUN node scripts/patch-postgres.mjs && grep -q 'backhaul-guard' node_modules/postgres/src/connection.js

FROM node:24-bookworm-slim AS runtime
ENV NODE_ENV=production \
    BACKHAUL_REQUIRE_DATABASE_URL=true \
    HOST=0.0.0.0 \
    PORT=3000
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY src ./src
COPY migrations ./migrations
# A container needs an external database: the embedded one is for local use.
# DATABASE_URL and BACKHAUL_ENCRYPTION_KEY must be set at run time.
USER node
EXPOSE 3000
# serve answers /healthz on PORT; `worker` on BACKHAUL_METRICS_PORT when set (else it has no listener).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s CMD node -e "Promise.any([process.env.PORT||3000,process.env.BACKHAUL_METRICS_PORT].filter(Boolean).map(p=>fetch('http://127.0.0.1:'+p+'/healthz').then(r=>{if(!r.ok)throw r.status}))).then(()=>process.exit(0),()=>process.exit(1))"
ENTRYPOINT ["node", "--max-semi-space-size=8", "bin/backhaul.js"]
CMD ["serve"]
