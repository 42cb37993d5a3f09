import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { request, type ClientRequest, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { randomBlob } from '../support/images.js';
import { outpostCli } from './support/cli.js';
import { baseEnv, startOutpost, type OutpostProcess } from './support/server.js';

/**
 * Outpost started and stopped as an operator does: `outpost serve` (dist/entry/cli.js) with
 * settings in the environment, stopped with SIGTERM or SIGINT, and `npm start` under a
 * supervisor that signals npm. What is checked: requests in flight finish, new connections are
 * refused, the exit status, the index closed (SQLite's WAL checkpointed and removed), the
 * deadline, start-up mistakes as one line with status 2, and the access log on stdout.
 */

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const MiB = 1024 * 1024;

let work: string;
let count = 0;
const started: OutpostProcess[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-ops-'));
});

afterAll(async () => {
  await Promise.all(started.map((s) => s.stop()));
  if (work) await rm(work, { recursive: true, force: true });
});

function dataDir(): string {
  return join(work, `data-${++count}`);
}

async function serve(data: string, env: Record<string, string> = {}): Promise<OutpostProcess> {
  const server = await startOutpost(data, env);
  started.push(server);
  return server;
}

/** Runs the command to its end (for commands that must not start): status and output. */
const run = (args: string[], env: Record<string, string> = {}) => outpostCli(args, { env, timeoutMs: 15_000 });

/** A request whose body the test sends piece by piece; `answer` settles with the response. */
function openPut(url: string, length: number): { req: ClientRequest; answer: Promise<{ res: IncomingMessage; body: string }> } {
  const req = request(url, { method: 'PUT', agent: false, headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(length) } });
  const answer = new Promise<{ res: IncomingMessage; body: string }>((done, reject) => {
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => done({ res, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
  return { req, answer };
}

function write(req: ClientRequest, bytes: Uint8Array): Promise<void> {
  return new Promise((done, reject) => req.write(bytes, (err) => (err ? reject(err) : done())));
}

/** The upload URL for the final PUT of a monolithic-by-PUT upload. */
async function startUpload(server: OutpostProcess, name: string, digest: string): Promise<string> {
  const res = await fetch(`${server.url}/v2/${name}/blobs/uploads/`, { method: 'POST' });
  expect(res.status).toBe(202);
  const location = new URL(res.headers.get('location')!, server.url);
  location.searchParams.set('digest', digest);
  return location.href;
}

/** A fresh connection (no keep-alive pool): resolves with the status, or rejects with the connection error. */
function freshGet(url: string): Promise<number> {
  return new Promise((done, reject) => {
    const req = request(url, { agent: false }, (res) => {
      res.resume();
      res.on('end', () => done(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function accessRecords(logs: string): Array<Record<string, unknown>> {
  return logs
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((r) => r.msg === 'access');
}

describe('stopping outpost serve', () => {
  it('on SIGTERM, finishes a blob PUT whose body is still arriving, refuses new connections, exits 0', async () => {
    const data = dataDir();
    const server = await serve(data, { OUTPOST_SHUTDOWN_SECONDS: '30' });
    const content = randomBlob(4 * MiB, 'application/octet-stream');
    const { req, answer } = openPut(await startUpload(server, 'e2e/ops', content.digest), content.size);
    await write(req, content.bytes.subarray(0, MiB));
    // Give the server the first MiB, so the request is in flight when the signal arrives.
    await new Promise((r) => setTimeout(r, 300));

    const signalled = Date.now();
    server.signal('SIGTERM');
    await until(() => server.logs().includes('outpost: SIGTERM: stopping; 1 request(s) in flight'), 'the stopping line');
    await expect(freshGet(`${server.url}/v2/`)).rejects.toMatchObject({ code: 'ECONNREFUSED' });

    await write(req, content.bytes.subarray(MiB));
    req.end();
    const { res, body } = await answer;
    expect(res.statusCode, body).toBe(201);
    expect(res.headers.connection).toBe('close');
    expect(await server.exited).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalled).toBeLessThan(10_000);
    expect(server.logs()).toContain('outpost: stopped');
    // The index was closed: SQLite checkpointed its WAL into index.db and removed it.
    expect(existsSync(join(data, 'index.db-wal'))).toBe(false);
    const put = accessRecords(server.logs()).find((r) => r.method === 'PUT');
    expect(put).toMatchObject({ status: 201, outcome: 'finished' });

    // What the request stored is there for the next process on the same data directory.
    const again = await serve(data);
    const pulled = await fetch(`${again.url}/v2/e2e/ops/blobs/${content.digest}`);
    expect(pulled.status).toBe(200);
    expect(Buffer.from(await pulled.arrayBuffer()).equals(content.bytes)).toBe(true);
    await again.stop();
  });

  it.each(['SIGTERM', 'SIGINT'] as const)('on %s while idle (a keep-alive connection open), exits 0 at once and closes the index', async (sig) => {
    const data = dataDir();
    const server = await serve(data);
    // Leaves a kept-alive connection in fetch's pool, and a WAL with content behind it.
    const res = await fetch(`${server.url}/v2/e2e/idle/blobs/uploads/`, { method: 'POST' });
    expect(res.status).toBe(202);
    await res.arrayBuffer();
    expect(existsSync(join(data, 'index.db-wal'))).toBe(true);

    const signalled = Date.now();
    server.signal(sig);
    expect(await server.exited).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalled).toBeLessThan(2_000);
    expect(existsSync(join(data, 'index.db-wal'))).toBe(false);
    expect(server.logs()).toContain(`outpost: ${sig}: stopping; 0 request(s) in flight`);

    const second = await serve(data);
    expect((await fetch(`${second.url}/v2/`)).status).toBe(200);
    await second.stop();
  });

  it('past OUTPOST_SHUTDOWN_SECONDS, cuts the request still in flight, says so, and exits 0', async () => {
    const server = await serve(dataDir(), { OUTPOST_SHUTDOWN_SECONDS: '1' });
    const content = randomBlob(2 * MiB, 'application/octet-stream');
    const { req, answer } = openPut(await startUpload(server, 'e2e/stalled', content.digest), content.size);
    const cut = answer.then(
      () => 'answered',
      (err: NodeJS.ErrnoException) => err.code,
    );
    await write(req, content.bytes.subarray(0, 64 * 1024));
    await new Promise((r) => setTimeout(r, 200));

    const signalled = Date.now();
    server.signal('SIGTERM');
    expect(await server.exited).toEqual({ code: 0, signal: null });
    const took = Date.now() - signalled;
    expect(took).toBeGreaterThanOrEqual(950);
    expect(took).toBeLessThan(5_000);
    expect(await cut).toMatch(/^(ECONNRESET|EPIPE)$/);
    expect(server.logs()).toContain('outpost: the shutdown deadline (1 s, OUTPOST_SHUTDOWN_SECONDS) passed: cut 1 request(s) in flight');
    req.destroy();
  });

  it('on SIGTERM, connections still sending their headers (no request yet) are closed at once, not waited for', async () => {
    const server = await serve(dataDir(), { OUTPOST_SHUTDOWN_SECONDS: '30' });
    const { connect } = await import('node:net');
    const stalled = Array.from({ length: 20 }, () => {
      const socket = connect(server.port, '127.0.0.1');
      socket.on('error', () => undefined);
      socket.write('GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ');
      return socket;
    });
    await new Promise((r) => setTimeout(r, 300));
    const stopping = Date.now();
    server.signal('SIGTERM');
    expect(await server.exited).toEqual({ code: 0, signal: null });
    expect(Date.now() - stopping).toBeLessThan(5_000);
    for (const socket of stalled) socket.destroy();
  });

  it('exits at once on a second signal, with 128 + its number', async () => {
    const server = await serve(dataDir(), { OUTPOST_SHUTDOWN_SECONDS: '60' });
    const content = randomBlob(MiB, 'application/octet-stream');
    const { req, answer } = openPut(await startUpload(server, 'e2e/impatient', content.digest), content.size);
    answer.catch(() => undefined);
    await write(req, content.bytes.subarray(0, 1024));
    await new Promise((r) => setTimeout(r, 200));

    server.signal('SIGTERM');
    await until(() => server.logs().includes('stopping'), 'the stopping line');
    // Later than the window in which a copy of the first signal is ignored (cli.ts SIGNAL_ECHO_MS).
    await new Promise((r) => setTimeout(r, 700));
    const again = Date.now();
    server.signal('SIGINT');
    expect(await server.exited).toEqual({ code: 130, signal: null });
    expect(Date.now() - again).toBeLessThan(2_000);
    expect(server.logs()).toContain('outpost: SIGINT again: exiting now, 1 request(s) still in flight');
    req.destroy();
  });

  it('under `npm start`, a SIGTERM to npm stops the server too (no orphan left serving)', async () => {
    const data = dataDir();
    // A process group of its own, so that whatever npm leaves behind can be killed at the end.
    const npm = spawn('npm', ['start', '--silent'], {
      cwd: ROOT,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...baseEnv(), OUTPOST_STORE: 'local', OUTPOST_DATA_DIR: data, OUTPOST_HOST: '127.0.0.1', OUTPOST_PORT: '0' },
    });
    let output = '';
    npm.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    npm.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    const npmExited = new Promise((done) => npm.once('exit', done));
    try {
      await until(() => /on http:\/\/127\.0\.0\.1:\d+\/v2\//.test(output), 'the start-up line', 20_000);
      const port = Number(/on http:\/\/127\.0\.0\.1:(\d+)\/v2\//.exec(output)![1]);
      // The server is a child of npm; the e2e teardown kills it if this test cannot.
      const children = readFileSync(`/proc/${npm.pid}/task/${npm.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
      for (const child of children) writeFileSync(join(inject('e2ePidDir'), child), child);
      expect(await freshGet(`http://127.0.0.1:${port}/v2/`)).toBe(200);

      // The supervisor signals the process it started: npm, not its group.
      process.kill(npm.pid!, 'SIGTERM');
      await npmExited;
      await until(() => output.includes('outpost: stopped'), 'the server to stop', 5_000);
      await expect(freshGet(`http://127.0.0.1:${port}/v2/`)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
      expect(existsSync(join(data, 'index.db-wal'))).toBe(false);
    } finally {
      try {
        process.kill(-npm.pid!, 'SIGKILL');
      } catch {
        // The whole group is gone already: what this test expects.
      }
    }
  });
});

describe('start-up mistakes: one line, no stack, exit 2', () => {
  function expectOneLine(result: { status: number | null; stdout: string; stderr: string }, pattern: RegExp): void {
    expect(result.status, result.stdout + result.stderr).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(pattern);
    expect(result.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(result.stderr).not.toMatch(/\n\s+at /);
  }

  it('a port that is already in use', async () => {
    const holder = await serve(dataDir());
    const result = await run(['serve'], { OUTPOST_DATA_DIR: dataDir(), OUTPOST_HOST: '127.0.0.1', OUTPOST_PORT: String(holder.port) });
    expectOneLine(result, new RegExp(`^outpost: cannot listen on 127\\.0\\.0\\.1:${holder.port} \\(OUTPOST_HOST, OUTPOST_PORT\\): the port is already in use .*\\(EADDRINUSE\\)\\n$`));
  });

  it('an address this machine does not have', async () => {
    // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): assigned to no host.
    const result = await run(['serve'], { OUTPOST_DATA_DIR: dataDir(), OUTPOST_HOST: '192.0.2.1', OUTPOST_PORT: '0' });
    expectOneLine(result, /^outpost: cannot listen on 192\.0\.2\.1:0 \(OUTPOST_HOST, OUTPOST_PORT\): this machine has no such address \(EADDRNOTAVAIL\)\n$/);
  });

  it('a data directory below a regular file (which fails even for root)', async () => {
    const file = join(work, 'a-file');
    writeFileSync(file, 'not a directory');
    const result = await run(['serve'], { OUTPOST_DATA_DIR: join(file, 'data'), OUTPOST_PORT: '0' });
    expectOneLine(result, /^outpost: cannot use the data directory ".*a-file\/data" \(OUTPOST_DATA_DIR\): a part of the path is a file, not a directory \(ENOTDIR\)\n$/);
    const itself = await run(['serve'], { OUTPOST_DATA_DIR: file, OUTPOST_PORT: '0' });
    expectOneLine(itself, /^outpost: cannot use the data directory ".*a-file" \(OUTPOST_DATA_DIR\): it exists and is not a directory \(EEXIST\)\n$/);
  });

  it('an index that cannot be opened', async () => {
    const data = dataDir();
    mkdirSync(join(data, 'index.db'), { recursive: true });
    const result = await run(['serve'], { OUTPOST_DATA_DIR: data, OUTPOST_PORT: '0' });
    expectOneLine(result, /^outpost: cannot open the index ".*index\.db": unable to open database file \(SQLITE_CANTOPEN\)\n$/);
  });

  it('an unknown command prints the usage; --help prints it on stdout and exits 0', async () => {
    const unknown = await run(['frob']);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(/^outpost: unknown command "frob"\n\nusage: outpost <command>\n/);
    const help = await run(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^usage: outpost <command>\n[\s\S]*\n {2}serve /);
  });
});

describe('the access log', () => {
  it('writes one JSON line per request on stdout, with the fields and without credentials', async () => {
    const server = await serve(dataDir());
    const secret = 'c2VjcmV0LXRva2VuLXZhbHVl';
    const res = await fetch(`${server.url}/v2/e2e/logged/tags/list?n=5&token=${secret}`, {
      headers: { Authorization: `Bearer ${secret}-bearer`, 'X-Request-Id': 'e2e-trace-1' },
    });
    expect(res.status).toBe(404);
    expect(res.headers.get('x-request-id')).toBe('e2e-trace-1');
    await res.arrayBuffer();
    const ok = await fetch(`${server.url}/v2/`, { headers: { Authorization: 'Basic dXNlcjpodW50ZXIy' } });
    const generated = ok.headers.get('x-request-id');
    expect(generated).toMatch(/^[0-9a-f]{16}-[0-9a-z]+$/);
    await ok.arrayBuffer();

    // The harness's own GET /v2/ (waiting for the start) is logged too: find ours by their ids.
    const byId = (id: string | null) => accessRecords(server.logs()).find((r) => r.requestId === id);
    await until(() => byId(generated) !== undefined, 'the access lines');
    const traced = byId('e2e-trace-1');
    expect(traced).toEqual({
      time: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      level: 'info',
      msg: 'access',
      requestId: 'e2e-trace-1',
      method: 'GET',
      path: '/v2/e2e/logged/tags/list',
      query: 'n=5&token=[redacted]',
      status: 404,
      bytes: expect.any(Number),
      durationMs: expect.any(Number),
      remote: '127.0.0.1',
      outcome: 'finished',
    });
    expect(traced!.bytes).toBeGreaterThan(0);
    expect(byId(generated)).toMatchObject({ path: '/v2/', status: 200, bytes: 2, outcome: 'finished' });
    // Every line on stdout is either the start-up line or a JSON object.
    for (const line of server.logs().split('\n').filter(Boolean)) {
      if (!line.startsWith('outpost: ')) expect(() => JSON.parse(line), line).not.toThrow();
    }
    expect(server.logs()).not.toContain(secret);
    expect(server.logs()).not.toContain('dXNlcjpodW50ZXIy');
    expect(server.logs()).not.toMatch(/authorization/i);
  });

  it('is off below info (OUTPOST_LOG_LEVEL=warn), and X-Request-Id is still returned', async () => {
    const server = await serve(dataDir(), { OUTPOST_LOG_LEVEL: 'warn' });
    const res = await fetch(`${server.url}/v2/`);
    expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f]{16}-[0-9a-z]+$/);
    await res.arrayBuffer();
    await server.stop();
    expect(accessRecords(server.logs())).toEqual([]);
  });
});
