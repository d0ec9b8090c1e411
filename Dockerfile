# licensd production image, for linux/amd64 and linux/arm64 alike: nothing below is
# specific to one architecture (the native addon sodium-native ships prebuilds for both,
# and the image's own Node 22 runs everything).
#   docker build -t licensd .                                   (this machine's architecture)
#   docker buildx build --platform linux/amd64,linux/arm64 -t licensd .   (both)
# See docker-compose.yml for a full setup with PostgreSQL.
FROM node:22-bookworm-slim AS build
WORKDIR /app
# The server and its npm workspace @licensd/client (the CLI uses it).
COPY package.json package-lock.json ./
COPY clients/ts/package.json ./clients/ts/
COPY console/package.json ./console/
# Optional packages are installed here: the console's bundler (Vite, rolldown) loads its
# native binding from one. The image below leaves them out.
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY gen/ts ./gen/ts
COPY clients/ts ./clients/ts
COPY src ./src
COPY console ./console
RUN npm run build

FROM node:22-bookworm-slim
ENV NODE_ENV=production LICENSD_ENV=production LICENSD_HOST=0.0.0.0 LICENSD_PORT=8080 LICENSD_DATA_DIR=/var/lib/licensd
WORKDIR /app
COPY package.json package-lock.json ./
COPY clients/ts/package.json ./clients/ts/
COPY console/package.json ./console/
RUN npm ci --omit=dev --omit=optional --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY --from=build /app/clients/ts/dist ./clients/ts/dist
COPY --from=build /app/console/dist ./console/dist
COPY bin ./bin
RUN mkdir -p /var/lib/licensd && chown node:node /var/lib/licensd
USER node
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD node -e "fetch('http://127.0.0.1:8080/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# Migrations run at start under an advisory lock, so several replicas may start together.
CMD ["node", "bin/licensd.js", "serve"]
