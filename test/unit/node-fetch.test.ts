import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Agent as HttpsAgent, createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { nodeFetch, type NodeFetch } from '../../src/adapters/upstream/node-fetch.js';
import { RegistryUpstream } from '../../src/adapters/upstream/registry-upstream.js';
import { recordingSleep } from '../support/fake-upstream.js';

/**
 * The Node upstream fetch (src/adapters/upstream/node-fetch.ts) against real node:http(s)
 * servers in this process: what transport.ts asks of a fetch, the body's backpressure and
 * aborts, failures shaped like fetch's, and the upstream client running on it.
 */

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

const servers: Server[] = [];
const fetches: NodeFetch[] = [];
afterEach(async () => {
  for (const f of fetches.splice(0)) f.close();
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

async function listen(server: Server, protocol = 'http'): Promise<{ url: string; connections: Socket[] }> {
  servers.push(server);
  const connections: Socket[] = [];
  server.on('connection', (s: Socket) => connections.push(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { url: `${protocol}://127.0.0.1:${port}`, connections };
}

async function serve(handler: Handler) {
  return listen(createServer(handler));
}

function client(...args: Parameters<typeof nodeFetch>): NodeFetch {
  const f = nodeFetch(...args);
  fetches.push(f);
  return f;
}

/** Every chunk of `body`, read to its end. */
async function chunksOf(body: ReadableStream<Uint8Array>): Promise<Uint8Array[]> {
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return chunks;
    chunks.push(value);
  }
}

const GET = { method: 'GET', redirect: 'manual' } as const;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Writes `total` bytes as fast as the socket takes them, counting what it took. */
function firehose(total: number, chunk = 64 * 1024) {
  const state = { written: 0, done: false };
  const handler: Handler = (_req, res) => {
    res.writeHead(200, { 'content-length': String(total) });
    const piece = Buffer.alloc(chunk, 7);
    const more = () => {
      while (state.written < total) {
        const n = Math.min(chunk, total - state.written);
        state.written += n;
        if (!res.write(n === chunk ? piece : piece.subarray(0, n))) return void res.once('drain', more);
      }
      state.done = true;
      res.end();
    };
    more();
  };
  return { state, handler };
}

describe('nodeFetch', () => {
  it('sends the method and headers as given, and answers status, headers and a streamed body of Buffers', async () => {
    const seen: IncomingMessage[] = [];
    const { url } = await serve((req, res) => {
      seen.push(req);
      res.setHeader('x-multi', ['a', 'b']);
      res.setHeader('content-type', 'application/octet-stream');
      res.writeHead(206, 'Partial Content');
      res.write('hello ');
      setTimeout(() => res.end('world'), 20);
    });
    const f = client();
    const res = await f(`${url}/v2/x/blobs/sha256:1`, { ...GET, headers: { authorization: 'Bearer t', range: 'bytes=0-10', accept: 'application/json' } });
    expect(res.status).toBe(206);
    expect(res.statusText).toBe('Partial Content');
    expect(res.headers.get('x-multi')).toBe('a, b');
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    const chunks = await chunksOf(res.body!);
    expect(chunks.every((c) => Buffer.isBuffer(c))).toBe(true);
    expect(Buffer.concat(chunks).toString()).toBe('hello world');
    expect(seen[0]!.method).toBe('GET');
    expect(seen[0]!.url).toBe('/v2/x/blobs/sha256:1');
    expect(seen[0]!.headers).toMatchObject({ authorization: 'Bearer t', range: 'bytes=0-10', accept: 'application/json' });
    expect(seen[0]!.headers['accept-encoding']).toBeUndefined();
  });

  it('answers a HEAD and a 204 with no body, and reads a whole body through Response', async () => {
    const { url } = await serve((req, res) => {
      if (req.url === '/empty') return void res.writeHead(204).end();
      res.writeHead(200, { 'content-length': '5', 'docker-content-digest': 'sha256:abc' }).end(req.method === 'HEAD' ? undefined : 'bytes');
    });
    const f = client();
    const head = await f(`${url}/x`, { method: 'HEAD', redirect: 'manual' });
    expect(head.status).toBe(200);
    expect(head.body).toBeNull();
    expect(head.headers.get('content-length')).toBe('5');
    expect(head.headers.get('docker-content-digest')).toBe('sha256:abc');
    expect((await f(`${url}/empty`, GET)).body).toBeNull();
    expect(await (await f(`${url}/x`, GET)).text()).toBe('bytes');
  });

  it('answers a redirect as it is, with its Location, without following it', async () => {
    let hits = 0;
    const { url } = await serve((_req, res) => {
      hits++;
      res.writeHead(307, { location: '/elsewhere' }).end('go away');
    });
    const res = await client()(`${url}/v2/x/blobs/sha256:1`, GET);
    expect(res.status).toBe(307);
    expect(res.headers.get('location')).toBe('/elsewhere');
    await res.body?.cancel();
    expect(hits).toBe(1);
  });

  it('keeps one connection for requests in turn, a cancelled body received whole included', async () => {
    const { url, connections } = await serve((_req, res) => res.writeHead(401, { 'www-authenticate': 'Bearer realm="x"' }).end('{"errors":[]}'));
    const f = client();
    for (let i = 0; i < 3; i++) {
      const res = await f(`${url}/v2/`, GET);
      await sleep(5);
      await res.body!.cancel();
    }
    expect(connections).toHaveLength(1);
  });

  it('pauses the socket while the reader waits, so a slow reader holds a bounded amount', async () => {
    const total = 64 * 1024 * 1024;
    const hose = firehose(total);
    const { url } = await serve(hose.handler);
    const res = await client()(`${url}/blob`, GET);
    await sleep(500);
    // Loopback's kernel buffers take a few MiB; without backpressure the whole body would be in memory by now.
    expect(hose.state.written).toBeLessThan(16 * 1024 * 1024);
    expect(hose.state.done).toBe(false);
    const chunks = await chunksOf(res.body!);
    const received = chunks.reduce((n, c) => n + c.byteLength, 0);
    const largest = Math.max(...chunks.map((c) => c.byteLength));
    expect(received).toBe(total);
    // The socket's reads as they came, never joined together.
    expect(largest).toBeLessThanOrEqual(64 * 1024);
  });

  it('errors the body with the reason when aborted mid-body, and closes the connection', async () => {
    let closed = false;
    const { url } = await serve((req, res) => {
      res.writeHead(200, { 'content-length': '1000000' });
      res.write(Buffer.alloc(1000));
      req.socket.on('close', () => (closed = true));
    });
    const controller = new AbortController();
    const res = await client()(`${url}/blob`, { ...GET, signal: controller.signal });
    const reader = res.body!.getReader();
    expect((await reader.read()).value?.byteLength).toBe(1000);
    const pending = reader.read();
    controller.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    await sleep(50);
    expect(closed).toBe(true);
  });

  it('rejects with the reason when aborted before the answer, or already aborted', async () => {
    const { url } = await serve(() => undefined);
    const f = client();
    const controller = new AbortController();
    const pending = f(`${url}/never`, { ...GET, signal: controller.signal });
    await sleep(20);
    controller.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    await expect(f(`${url}/never`, { ...GET, signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('fails like fetch when the connection is refused or reset before the answer', async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const { port } = probe.address() as AddressInfo;
    await new Promise((r) => probe.close(r));
    const f = client();
    const refused = await f(`http://127.0.0.1:${port}/v2/`, GET).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(TypeError);
    expect(refused).toMatchObject({ message: 'fetch failed', cause: { code: 'ECONNREFUSED' } });

    const { url } = await serve((req) => req.socket.destroy());
    const reset = await f(`${url}/v2/`, GET).catch((e: unknown) => e);
    expect(reset).toBeInstanceOf(TypeError);
    expect(reset).toMatchObject({ message: 'fetch failed', cause: { code: 'ECONNRESET' } });
  });

  it('errors the body when the connection breaks off mid-body', async () => {
    const { url } = await serve((req, res) => {
      res.writeHead(200, { 'content-length': '1000000' });
      res.write(Buffer.alloc(1000), () => setTimeout(() => req.socket.destroy(), 20));
    });
    const res = await client()(`${url}/blob`, GET);
    await expect(chunksOf(res.body!)).rejects.toMatchObject({ name: 'TypeError', message: 'terminated' });
  });

  it('refuses what it does not do rather than half-doing it', async () => {
    const f = client();
    await expect(f('http://127.0.0.1:1/', { method: 'GET' })).rejects.toThrow(/redirect: 'manual'/);
    await expect(f('http://127.0.0.1:1/', { method: 'POST', redirect: 'manual' })).rejects.toThrow(/GET and HEAD/);
    await expect(f('ftp://127.0.0.1/', GET)).rejects.toThrow('fetch failed');
  });
});

/** A self-signed certificate for 127.0.0.1, if openssl is here to make one. */
function selfSigned(): { key: Buffer; cert: Buffer } | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-node-fetch-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    return { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) };
  } catch {
    return undefined;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const tls = selfSigned();

describe.skipIf(!tls)('nodeFetch over https', () => {
  it('verifies the certificate: refused by default, accepted by an agent trusting its CA', async () => {
    const { url } = await listen(createHttpsServer({ key: tls!.key, cert: tls!.cert }, (_req, res) => res.end('secret')), 'https');
    expect(url.startsWith('https://')).toBe(true);
    const untrusting = await client()(`${url}/`, GET).catch((e: unknown) => e);
    expect(untrusting).toBeInstanceOf(TypeError);
    expect(untrusting).toMatchObject({ message: 'fetch failed', cause: { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' } });
    const trusting = client({ httpsAgent: new HttpsAgent({ keepAlive: true, ca: tls!.cert }) });
    expect(await (await trusting(`${url}/`, GET)).text()).toBe('secret');
  });
});

describe('the upstream client on nodeFetch', () => {
  it('streams a blob through the body watch and retries a refused connection', async () => {
    const blob = Buffer.alloc(3 * 1024 * 1024 + 17, 1);
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
    const { url } = await serve((req, res) => {
      if (req.url !== `/v2/library/x/blobs/${digest}`) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-length': String(blob.length) }).end(blob);
    });
    const upstream = new RegistryUpstream({ url, fetch: client() });
    const r = await upstream.blob('library/x', digest);
    if (r.kind !== 'ok') throw new Error(JSON.stringify(r));
    const hash = createHash('sha256');
    for (const c of await chunksOf(r.body)) hash.update(c);
    expect(`sha256:${hash.digest('hex')}`).toBe(digest);

    const { sleep: recorded, waits } = recordingSleep();
    const gone = new RegistryUpstream({ url: 'http://127.0.0.1:1', fetch: client(), sleep: recorded, random: () => 0 });
    const refused = await gone.blobHead('library/x', digest);
    expect(refused).toMatchObject({ kind: 'unavailable', message: '127.0.0.1:1: connection failed' });
    expect(waits.length).toBeGreaterThan(0);
  });
});

describe('where nodeFetch is used', () => {
  /** Every file under src/ that `entry` reaches through its relative imports. */
  function reach(entry: string, seen = new Set<string>()): Set<string> {
    if (seen.has(entry)) return seen;
    seen.add(entry);
    const text = readFileSync(entry, 'utf8');
    for (const m of text.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+['"](\.[^'"]+)['"]/gms)) reach(join(entry, '..', m[1]!.replace(/\.js$/, '.ts')), seen);
    return seen;
  }
  const SRC = join(import.meta.dirname, '..', '..', 'src');

  it('is Node only: the Workers entry never reaches it, the Node entry does', () => {
    const file = join(SRC, 'adapters', 'upstream', 'node-fetch.ts');
    expect(reach(join(SRC, 'entry', 'workers.ts')).has(file)).toBe(false);
    expect(reach(join(SRC, 'entry', 'node.ts')).has(file)).toBe(true);
  });
});
