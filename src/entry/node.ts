import { getRequestListener } from '@hono/node-server';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { OciError } from '../core/errors.js';
import { ociErrorResponse } from '../http/errors.js';
import { closeSync, openSync, readSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { FsBlobStore } from '../adapters/local/fs-blob-store.js';
import { SqliteMetaIndex } from '../adapters/local/sqlite-meta-index.js';
import { nodeFetch } from '../adapters/upstream/node-fetch.js';
import { DEFAULT_RECLAIM_AGE_MS, type BlobStore } from '../ports/blob-store.js';
import { systemClock } from '../ports/clock.js';
import type { MetaIndex } from '../ports/meta-index.js';
import { cloudAdapters } from './cloud.js';
import { MAX_DOCUMENT_BYTES } from './config/document.js';
import type { Auth } from '../core/auth/auth.js';
import { PasswordHashError } from '../core/auth/passwords.js';
import { KeyImportError } from '../core/auth/tokens.js';
import { readConfig, type Config, type ConfigInput } from './config.js';
import type { Log } from './log.js';
import { drainable, nodeConnection, sendingFiles } from './node-server.js';
import { outpostApp } from './outpost.js';
import { publicGoodTrustedRoot } from './public-good.js';
import { gcOptions, gcSummary } from './upkeep.js';
import { listenError, openIndex, prepareDataDir, StartupError } from './startup-errors.js';

export interface NodeServer {
  port: number;
  /** Where the data is, for the start-up line. */
  where: string;
  /** Responses in flight. */
  inFlight(): number;
  /**
   * Graceful stop: no new connections, requests in flight finish for up to `deadlineMs`, then
   * the remaining connections are cut and the index is closed. Resolves with the cut count.
   */
  stop(deadlineMs: number): Promise<{ cut: number }>;
}

/**
 * Outpost as a Node server: on the local store (files + SQLite under a data directory, which
 * several processes may share) or on the cloud store (S3 + DynamoDB). The store and the index
 * are opened before the port, so a server that listens can serve. Operator mistakes (a data
 * directory that cannot be used, an index that cannot be opened, a port that cannot be bound)
 * throw a StartupError: one line for the operator, no stack.
 */
export interface OpenedAdapters {
  store: BlobStore;
  index: MetaIndex;
  /** Where the data is, for the start-up line. */
  where: string;
  close(): void;
}

/** The store and the index the configuration names, opened (the server's and `outpost gc`'s). */
export function openAdapters(config: Config): OpenedAdapters {
  if (config.store.kind === 'local') {
    const dataDir = resolve(config.store.dataDir);
    prepareDataDir(dataDir);
    const file = join(dataDir, 'index.db');
    const sqlite = openIndex(file, () => new SqliteMetaIndex(file, systemClock));
    return { store: new FsBlobStore(dataDir), index: sqlite, where: `data in ${dataDir}`, close: () => sqlite.close() };
  }
  const { store, index } = cloudAdapters(config.store, systemClock);
  return {
    store,
    index,
    where: `blobs in s3://${config.store.s3.bucket}/${config.store.s3.prefix}, index in DynamoDB table ${config.store.dynamodb.table}`,
    close: () => {},
  };
}

export async function startNode(config: Config, log?: Log): Promise<NodeServer> {
  const { store, index, where, close: closeIndex } = openAdapters(config);
  // Upstream bodies arrive as the socket's own Buffers (undici's fetch copies each chunk).
  const upstreamFetch = nodeFetch();
  // @hono/node-server writes each chunk of a response to the socket and lets go of it.
  const { app, registry, auth } = outpostApp(config, { store, index }, { metricsRoute: true, log, connection: nodeConnection, runtimeKeepsBuffers: true, fetch: upstreamFetch });
  await checkAuth(auth).catch((err: unknown) => {
    closeIndex();
    upstreamFetch.close();
    throw err;
  });
  const listener = getRequestListener(sendingFiles(app.fetch), { errorHandler: unservable });
  // Host is checked here rather than by node:http, whose refusal is an empty 400.
  const server = createServer({ requireHostHeader: false }, (req, res) => {
    if (req.headers.host === undefined) {
      // HTTP/1.1 requires Host (RFC 9112 section 3.2), HTTP/1.0 does not; the adapter builds the URL from it.
      if (req.httpVersion !== '1.0') return void writeResponse(res, unservable(malformed('HTTP/1.1 requires a Host header')));
      req.headers.host = 'localhost';
    }
    void listener(req, res);
  });
  // Node's default cuts any request whose body takes over 5 minutes (a 10 GiB push at 30 MB/s);
  // a connection silent for IDLE_TIMEOUT_MS is cut instead, and headers must arrive within 60 s.
  server.requestTimeout = 0;
  server.timeout = IDLE_TIMEOUT_MS;
  const drain = drainable(server);
  let port: number;
  try {
    port = await listen(server, config.host, config.port);
  } catch (err) {
    closeIndex();
    throw err;
  }
  warnUnauthenticated(config);
  // Leftovers of crashes and abandoned uploads, at start-up and hourly, and garbage collection
  // every gc.interval; never awaited, so a slow store delays nothing. Every instance may run
  // both at once: each removes only what is over for good (core/gc/collect.ts, leftovers.ts).
  const reclaim = background(log, 'reclaiming leftovers', () =>
    registry.reclaim({ olderThanMs: DEFAULT_RECLAIM_AGE_MS }).then((report) => log?.write('info', { msg: 'reclaimed leftovers', ...report })),
  );
  const collect = background(log, 'garbage collection', () =>
    registry.gc(gcOptions(config.gc)).then((report) => log?.write('info', { msg: 'garbage collection', ...gcSummary(report) })),
  );
  reclaim.run();
  const timers = [setInterval(reclaim.run, RECLAIM_INTERVAL_MS)];
  if (config.gc.intervalMs > 0) timers.push(setInterval(collect.run, config.gc.intervalMs));
  for (const timer of timers) timer.unref();
  return {
    port,
    where,
    inFlight: drain.inFlight,
    stop: async (deadlineMs) => {
      for (const timer of timers) clearInterval(timer);
      const result = await drain.drain(deadlineMs);
      // Fills that outlived their clients hand over what they stored (their leases released),
      // so that no follower elsewhere waits for a lease to expire; bounded like the passes below.
      await atMost(ABANDON_WAIT_MS, registry.mirror.fills.abandon());
      // A pass still running gets a moment to finish; past it, closing the index fails its next step, which is logged.
      await atMost(2000, Promise.all([reclaim.running(), collect.running()]));
      closeIndex();
      upstreamFetch.close();
      return result;
    },
  };
}

/**
 * Authentication is ready before the first connection (keys imported, passwords hashed), and
 * what it leaves open is said at start-up: token keys generated by this process (its tokens are
 * refused by every other instance) here, no `auth:` while listening beyond loopback (anyone who
 * reaches the port can push, overwrite and delete) once listening.
 */
async function checkAuth(auth: Promise<Auth> | undefined): Promise<void> {
  if (!auth) return;
  let ready: Auth;
  try {
    ready = await auth;
  } catch (err) {
    if (err instanceof KeyImportError || err instanceof PasswordHashError) throw new StartupError(`auth: ${err.message}`);
    throw err;
  }
  if (ready.config.rules.length === 0) {
    console.error('outpost: WARNING: auth has no rules: every request is refused (README "Users, access rules and immutable tags")');
  }
  if (ready.tokens.ephemeral) {
    console.error('outpost: note: auth.tokenKeys is not set: this process signs tokens with a key of its own, which other instances refuse (set tokenKeys when running more than one; outpost token-key makes one)');
  }
}

/** Said once listening, so that a server that could not listen says only why. */
function warnUnauthenticated(config: Config): void {
  if (config.auth || isLoopback(config.host)) return;
  console.error(
    `outpost: WARNING: no auth section in the configuration: listening on ${config.host}, anyone who reaches this port can pull, push, overwrite and delete. Add auth: (README "Authentication") or listen on 127.0.0.1.`,
  );
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\./.test(host);
}

/**
 * The answer to a request the adapter could not turn into a Request (a target that is not a
 * path, such as `*` or one with a backslash; HTTP/1.1 without Host), or whose handling threw
 * outside Hono: an OCI error like every other, never an empty 400.
 */
function unservable(err: unknown): Response {
  const res = err instanceof Error && err.name === 'RequestError'
    ? ociErrorResponse(new OciError('REQUEST_MALFORMED', `the request cannot be served: ${err.message.slice(0, 100)}`))
    : ociErrorResponse(new OciError('INTERNAL'));
  res.headers.set('Docker-Distribution-API-Version', 'registry/2.0');
  return res;
}

function malformed(message: string): Error {
  return Object.assign(new Error(message), { name: 'RequestError' });
}

/** Work that runs now and then, one pass at a time; a failure is logged, never thrown. */
function background(log: Log | undefined, what: string, pass: () => Promise<unknown>) {
  let current: Promise<void> | undefined;
  return {
    run: () => {
      current ??= pass()
        .then(
          () => undefined,
          (err: unknown) => log?.write('warn', { msg: `${what} failed`, error: String(err).slice(0, 300) }),
        )
        .finally(() => (current = undefined));
    },
    running: () => current ?? Promise.resolve(),
  };
}

/** A small, whole Response written to node:http (the error answers above). */
async function writeResponse(res: ServerResponse, response: Response): Promise<void> {
  const body = Buffer.from(await response.arrayBuffer());
  res.writeHead(response.status, Object.fromEntries(response.headers));
  res.end(body);
}

/** Waits for `work` for at most `ms` (a timer that keeps no process alive), whatever it settles to. */
async function atMost(ms: number, work: Promise<unknown>): Promise<void> {
  await Promise.race([work.catch(() => undefined), new Promise((r) => setTimeout(r, ms).unref())]);
}

/** A connection that sends and receives nothing for this long is cut (slow or vanished clients). */
const IDLE_TIMEOUT_MS = 2 * 60 * 1000;
/**
 * The most a stop waits for its fills to hand over (Fills.abandon: a part write in flight, a
 * commit under way, one index write each); past it the index closes and their leases expire.
 */
const ABANDON_WAIT_MS = 5000;
/** How often leftovers are reclaimed (see core/registry/leftovers.ts). */
const RECLAIM_INTERVAL_MS = 60 * 60 * 1000;

function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolveListen, reject) => {
    const onError = (err: Error) => {
      server.off('listening', onListening);
      reject(listenError(err, host, port) ?? err);
    };
    const onListening = () => {
      server.off('error', onError);
      const address = server.address();
      resolveListen(typeof address === 'object' && address ? address.port : port);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, host);
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
  // Files the document names are relative to the document (or to the working directory when it is inline).
  const base = file ? dirname(resolve(file)) : process.cwd();
  return readConfig(env, 'node', {
    ...(file ? readConfigFile(file) : {}),
    readFile: (path) => readNamedFile(resolve(base, path), path),
    publicGoodRoot: publicGoodTrustedRoot,
  });
}

/** A key or trusted-root file the document names: at most MAX_DOCUMENT_BYTES, UTF-8. */
function readNamedFile(path: string, named: string): string | { error: string } {
  const read = readConfigFile(path);
  if (read.configText !== undefined) return read.configText;
  return { error: (read.configReadError ?? 'cannot be read').replace(`OUTPOST_CONFIG_FILE: cannot read "${path.slice(0, 200)}"`, `cannot read "${named.slice(0, 200)}"`) };
}
