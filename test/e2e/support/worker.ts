import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cloudEnv, type CloudStore } from './cloud-store.js';
import { baseEnv, launch, type OutpostProcess, type StartOptions } from './server.js';

/**
 * Outpost on workerd, the Workers runtime: `wrangler dev` (the project's wrangler, as
 * `npx wrangler dev` runs it) bundles src/entry/workers.ts with wrangler.toml and serves it
 * locally, offline, on a port the OS picks. The OUTPOST_* settings reach the worker from a
 * generated .env file (`--env-file`), which wrangler treats like .dev.vars: its values override
 * wrangler.toml's [vars] and are hidden as secrets, as `wrangler secret put` values are.
 *
 * wrangler runs esbuild and two workerd processes of its own, so it is started as a process
 * group and stopped by signalling the whole group (server.ts `launch`).
 *
 * The worker is reached through `plainHttpFront`, a byte-for-byte TCP relay that refuses TLS:
 * skopeo (with --tls-verify=false) first tries HTTPS and falls back to plain HTTP only once the
 * TLS handshake fails. Node's server answers a ClientHello with 400 at once; workerd's dev
 * listener waits for the end of a request line that never comes, so every skopeo command
 * would stall for Go's 10 s TLS handshake timeout. On Workers, TLS ends at Cloudflare's edge.
 */

const ROOT = resolve(fileURLToPath(import.meta.url), '../../../..');
const WRANGLER = join(ROOT, 'node_modules/wrangler/bin/wrangler.js');
/** Bundling and starting workerd takes a few seconds; much longer on a loaded 2-core machine. */
const START_TIMEOUT_MS = 90_000;

/** What wrangler needs to run without a network, a login or a terminal. */
export function offlineWranglerEnv(logDir: string): NodeJS.ProcessEnv {
  return {
    ...baseEnv(),
    // No request to Cloudflare's API (account, compatibility data) and no telemetry.
    CLOUDFLARE_CF_FETCH_ENABLED: 'false',
    WRANGLER_SEND_METRICS: 'false',
    // The banner is where wrangler asks the npm registry for a newer version of itself.
    WRANGLER_HIDE_BANNER: 'true',
    WRANGLER_LOG_PATH: logDir,
    // No colours and no interactive prompts in the captured output.
    NO_COLOR: '1',
    FORCE_COLOR: '0',
    CI: 'true',
    // Settings come from the --env-file alone: not from .dev.vars, not from this process's environment.
    CLOUDFLARE_LOAD_DEV_VARS_FROM_DOT_ENV: 'true',
    CLOUDFLARE_INCLUDE_PROCESS_ENV: 'false',
  };
}

export interface WorkerOptions extends StartOptions {
  /**
   * wrangler's --log-level: at `info` (the default) wrangler drops what the worker writes with
   * console.log (Outpost's access, audit and metrics lines); `log` keeps it in `logs()`.
   */
  logLevel?: 'info' | 'log';
}

/**
 * `extra` adds settings (OUTPOST_CONFIG, the secrets it names); they arrive as secrets do.
 * `options.authorization` signs in the start-up check, for a worker with `auth:` configured.
 */
export async function startWorker(store: CloudStore, extra: Record<string, string> = {}, options: WorkerOptions = {}): Promise<OutpostProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-e2e-wrangler-'));
  const envFile = join(dir, 'outpost.env');
  const settings = Object.entries({ ...cloudEnv(store), ...extra }).map(([k, v]) => `${k}=${dotenvQuote(v)}`);
  writeFileSync(envFile, `${settings.join('\n')}\n`, { mode: 0o600 });

  let worker: OutpostProcess | undefined;
  try {
    worker = await launch({
      authorization: options.authorization,
      label: 'wrangler dev',
      command: process.execPath,
      args: [
        WRANGLER,
        'dev',
        '--ip',
        '127.0.0.1',
        '--port',
        '0',
        '--inspector-port',
        '0',
        '--env-file',
        envFile,
        '--persist-to',
        join(dir, 'state'),
        '--show-interactive-dev-session=false',
        '--log-level',
        options.logLevel ?? 'info',
      ],
      env: offlineWranglerEnv(join(dir, 'logs')),
      cwd: ROOT,
      group: true,
      // "[wrangler:info] Ready on http://127.0.0.1:<port>"
      port: (output) => {
        const m = /Ready on http:\/\/127\.0\.0\.1:(\d+)/.exec(output);
        return m ? Number(m[1]) : undefined;
      },
      startTimeoutMs: START_TIMEOUT_MS,
      onExit: () => rmSync(dir, { recursive: true, force: true }),
    });
    const front = await plainHttpFront(worker.port);
    const stopWorker = worker.stop;
    return {
      ...worker,
      url: `http://127.0.0.1:${front.port}`,
      host: `127.0.0.1:${front.port}`,
      port: front.port,
      async stop() {
        await front.close();
        await stopWorker();
      },
    };
  } catch (err) {
    await worker?.stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * A value as a .env line holds it: double-quoted (JSON escapes) unless it holds a double quote,
 * which dotenv does not unescape; then single-quoted, which dotenv takes literally. Either way
 * every `$` is written `\$`: wrangler runs dotenv-expand over the parsed values, quoted or not,
 * which would replace `$name` (the salt of a `pbkdf2-sha256$100000$<salt>$<key>` hash, say)
 * by a variable's value or nothing, and turns `\$` back into `$`.
 */
function dotenvQuote(value: string): string {
  const noExpansion = (quoted: string) => quoted.replaceAll('$', () => '\\$');
  if (!value.includes('"')) return noExpansion(JSON.stringify(value));
  if (value.includes("'") || value.includes('\n')) throw new Error('a .env value with both quote kinds or a newline cannot be written');
  return noExpansion(`'${value}'`);
}

/** TLS records start with content type 22 (handshake); no HTTP method does. */
const TLS_HANDSHAKE = 0x16;

/**
 * A TCP relay on a free loopback port to `port`: every connection is piped through unchanged,
 * except one that opens with a TLS handshake, which is answered 400 and closed the way a plain
 * HTTP server answers it.
 */
async function plainHttpFront(port: number): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  };
  const server = createServer((client) => {
    track(client);
    client.once('data', (first: Buffer) => {
      if (first[0] === TLS_HANDSHAKE) {
        client.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      client.pause();
      const upstream = connect(port, '127.0.0.1', () => {
        upstream.write(first);
        client.pipe(upstream).pipe(client);
      });
      track(upstream);
      upstream.once('close', () => client.destroy());
      client.once('close', () => upstream.destroy());
    });
  });
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolveListen);
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((done) => {
        server.close(() => done());
        // close() waits for open connections, which keep-alive clients would hold open.
        for (const socket of sockets) socket.destroy();
      }),
  };
}
