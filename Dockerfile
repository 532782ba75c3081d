# syntax=docker/dockerfile:1
# Backhaul: multi-stage build on Node 24. Runs the TypeScript sources with Node's type stripping.

FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# postinstall: connection-loss guards for postgres.js (see the script)
COPY scripts/patch-postgres.mjs ./scripts/
# Production dependencies only; install scripts are those approved in package.json (allowScripts).
RUN npm ci --omit=dev --no-audit --no-fund

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
COPY openapi ./openapi
# A container needs an external database: the embedded one is for local development.
# DATABASE_URL and BACKHAUL_ENCRYPTION_KEY must be set at run time.
USER node
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["node", "--max-semi-space-size=8", "bin/backhaul.js"]
CMD ["serve"]
