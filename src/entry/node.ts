import { serve } from '@hono/node-server';
import { closeSync, mkdirSync, openSync, readSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { FsBlobStore } from '../adapters/local/fs-blob-store.js';
import { SqliteMetaIndex } from '../adapters/local/sqlite-meta-index.js';
import type { BlobStore } from '../ports/blob-store.js';
import { systemClock } from '../ports/clock.js';
import type { MetaIndex } from '../ports/meta-index.js';
import { cloudAdapters } from './cloud.js';
import { MAX_DOCUMENT_BYTES } from './config/document.js';
import { ConfigError, readConfig, type Config, type ConfigInput } from './config.js';
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
  const { app } = outpostApp(config, { store, index }, { metricsRoute: true });
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

/**
 * The configuration document OUTPOST_CONFIG_FILE names, as readConfig takes it. At most one
 * byte past the document cap is read, so a wrong path (a device, a disk image) cannot exhaust
 * memory; a file that cannot be read becomes one problem among the others.
 */
export function readConfigFile(path: string): ConfigInput {
  const problem = (why: string): ConfigInput => ({ configSource: path, configReadError: `OUTPOST_CONFIG_FILE: cannot read "${path.slice(0, 200)}": ${why}` });
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    return problem(fileError(err));
  }
  try {
    const buffer = Buffer.alloc(MAX_DOCUMENT_BYTES + 1);
    let length = 0;
    while (length < buffer.length) {
      const n = readSync(fd, buffer, length, buffer.length - length, null);
      if (n === 0) break;
      length += n;
    }
    if (length > MAX_DOCUMENT_BYTES) return problem(`it is larger than ${MAX_DOCUMENT_BYTES} bytes (1 MiB), the most Outpost reads`);
    return { configText: new TextDecoder('utf-8', { fatal: true }).decode(buffer.subarray(0, length)), configSource: path };
  } catch (err) {
    return problem(err instanceof TypeError ? 'it is not UTF-8 text' : fileError(err));
  } finally {
    closeSync(fd);
  }
}

function fileError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'it is a directory';
  return String((err as Error).message).slice(0, 160);
}

/** readConfig over the process environment, with the file OUTPOST_CONFIG_FILE names (when set). */
export function readNodeConfig(env: Record<string, string | undefined>): Config {
  const file = env.OUTPOST_CONFIG_FILE?.trim();
  return readConfig(env, 'node', file ? readConfigFile(file) : {});
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = readNodeConfig(process.env);
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
