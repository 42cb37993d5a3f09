import { serve } from '@hono/node-server';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { FsBlobStore } from '../adapters/local/fs-blob-store.js';
import { SqliteMetaIndex } from '../adapters/local/sqlite-meta-index.js';
import type { BlobStore } from '../ports/blob-store.js';
import { systemClock } from '../ports/clock.js';
import type { MetaIndex } from '../ports/meta-index.js';
import { cloudAdapters } from './cloud.js';
import { ConfigError, readConfig, type Config } from './config.js';
import { outpostApp } from './outpost.js';

/**
 * Outpost as a Node server: on the local store (files + SQLite under a data directory, which
 * several processes may share) or on the cloud store (S3 + DynamoDB).
 */
export async function startNode(config: Config) {
  let store: BlobStore;
  let index: MetaIndex;
  let closeIndex = () => {};
  let where: string;
  if (config.store.kind === 'local') {
    const dataDir = resolve(config.store.dataDir);
    mkdirSync(dataDir, { recursive: true });
    const sqlite = new SqliteMetaIndex(join(dataDir, 'index.db'), systemClock);
    store = new FsBlobStore(dataDir);
    index = sqlite;
    closeIndex = () => sqlite.close();
    where = `data in ${dataDir}`;
  } else {
    ({ store, index } = cloudAdapters(config.store, systemClock));
    where = `blobs in s3://${config.store.s3.bucket}/${config.store.s3.prefix}, index in DynamoDB table ${config.store.dynamodb.table}`;
  }
  const app = outpostApp(config, { store, index });
  return new Promise<{ port: number; where: string; close: () => Promise<void> }>((resolveStart) => {
    const server = serve({ fetch: app.fetch, hostname: config.host, port: config.port }, (info) => {
      resolveStart({
        port: info.port,
        where,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => {
              closeIndex();
              done();
            });
          }),
      });
    });
  });
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = readConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`outpost: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  const { port, where, close } = await startNode(config);
  console.log(`outpost: serving the OCI Distribution API on http://${config.host}:${port}/v2/ (${where})`);
  const stop = () => void close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  void main();
}
