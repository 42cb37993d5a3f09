import { serve } from '@hono/node-server';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createRegistry } from '../core/registry/registry.js';
import { createApp } from '../http/app.js';
import { nodeHash } from '../adapters/crypto/node-hash.js';
import { FsBlobStore } from '../adapters/local/fs-blob-store.js';
import { SqliteMetaIndex } from '../adapters/local/sqlite-meta-index.js';
import { systemClock } from '../ports/clock.js';
import { ConfigError, readNodeConfig, type NodeConfig } from './config.js';

/**
 * Outpost on Node with the embedded store: blobs on the filesystem, the index in SQLite.
 * Several processes may share one data directory (see the adapters for how).
 */
export function startNode(config: NodeConfig) {
  mkdirSync(config.dataDir, { recursive: true });
  const index = new SqliteMetaIndex(join(config.dataDir, 'index.db'), systemClock);
  const registry = createRegistry({
    store: new FsBlobStore(config.dataDir),
    index,
    hash: nodeHash,
    clock: systemClock,
    options: { uploadTtlMs: config.uploadTtlSeconds * 1000 },
  });
  const app = createApp({ registry });
  return new Promise<{ port: number; close: () => Promise<void> }>((resolveStart) => {
    const server = serve({ fetch: app.fetch, hostname: config.host, port: config.port }, (info) => {
      resolveStart({
        port: info.port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => {
              index.close();
              done();
            });
          }),
      });
    });
  });
}

async function main(): Promise<void> {
  let config: NodeConfig;
  try {
    config = readNodeConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`outpost: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  const { port, close } = await startNode(config);
  console.log(`outpost: serving the OCI Distribution API on http://${config.host}:${port}/v2/ (data in ${config.dataDir})`);
  const stop = () => void close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  void main();
}
