# Outpost on Node, on the embedded store (files + SQLite in /data). Not built by the test suite;
# see "Running in production" in README.md.
#
#   docker build -t outpost .
#   docker run -d -p 5000:5000 -v outpost-data:/data --stop-timeout 30 outpost
#
# --stop-timeout: docker's default of 10 s is shorter than OUTPOST_SHUTDOWN_SECONDS (25 s), the
# time requests in flight get to finish after the SIGTERM of `docker stop`.

FROM node:20-slim AS build
WORKDIR /app
# better-sqlite3 compiles from source where no prebuilt binary fits.
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY scripts/prepare.mjs ./scripts/
COPY src ./src
# npm ci runs the prepare script, which builds dist/; then the dev dependencies go.
RUN npm ci && npm prune --omit=dev

FROM node:20-slim
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
RUN ln -s /app/dist/entry/cli.js /usr/local/bin/outpost \
  && mkdir /data && chown node:node /data
ENV NODE_ENV=production \
    OUTPOST_HOST=0.0.0.0 \
    OUTPOST_PORT=5000 \
    OUTPOST_DATA_DIR=/data
VOLUME /data
EXPOSE 5000
USER node
STOPSIGNAL SIGTERM
# Outpost itself is PID 1: it handles SIGTERM and SIGINT (no shell or npm in between).
ENTRYPOINT ["outpost"]
CMD ["serve"]
