import { createAdaptorServer } from '@hono/node-server';
import { Hono } from 'hono';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readlinkSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { request, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { takeFileSend } from '../../src/adapters/local/file-body.js';
import { FsBlobStore } from '../../src/adapters/local/fs-blob-store.js';
import { nodeConnection, sendingFiles } from '../../src/entry/node-server.js';

/**
 * The bodies node:http carries without @hono/node-server's web-stream adapter. Blob answers read
 * from local files are sent straight from the file (sendingFiles): the bytes and ranges are
 * exact, a failing file cuts the response, a client that leaves closes the file, and every
 * other answer is left to the adapter. Request bodies are read as the socket's own Buffers
 * (nodeConnection.requestBody): every byte in order under backpressure, and an error, never a
 * clean end, when the client goes away mid-body.
 */

const dirs: string[] = [];
const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const SIZE = 5 * 1024 * 1024 + 123;

/** Piece sizes of the composed blob: uneven, one smaller than a send buffer, one empty. */
const PIECES = [2 * 1024 * 1024 + 5, 100_000, 0, SIZE - 2 * 1024 * 1024 - 5 - 100_000];

/** A server of one blob of SIZE bytes: one file, or (`composed`) pieces composed from parts. */
async function start(o: { composed?: boolean } = {}) {
  const root = mkdtempSync(join(tmpdir(), 'outpost-file-send-'));
  dirs.push(root);
  const store = new FsBlobStore(root);
  const bytes = randomBytes(SIZE);
  if (o.composed) {
    const keys: string[] = [];
    for (const [i, n] of PIECES.entries()) {
      const at = PIECES.slice(0, i).reduce((a, b) => a + b, 0);
      keys.push(`parts/${i}`);
      await store.put(`parts/${i}`, new Response(bytes.subarray(at, at + n)).body ?? new Response('').body!, n, { scratch: true });
    }
    await store.compose!(keys, 'blob');
  } else {
    await store.put('blob', new Response(bytes).body!);
  }
  const app = new Hono();
  let taken: boolean | undefined;
  const sent: ReadableStream[] = [];
  app.get('/blob', async (c) => {
    const range = c.req.query('offset') === undefined ? undefined : { offset: Number(c.req.query('offset')), length: Number(c.req.query('length')) };
    const object = (await store.get('blob', range))!;
    if (c.req.query('truncate') !== undefined) truncateSync(join(root, 'blob'), 1024 * 1024);
    const length = range?.length ?? object.size;
    sent.push(object.body);
    return new Response(object.body, { headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(length) } });
  });
  app.get('/json', async () => {
    const object = (await store.get('blob'))!;
    return new Response(object.body, { headers: { 'Content-Type': 'application/json' } });
  });
  app.get('/read-first', async () => {
    const object = (await store.get('blob'))!;
    const reader = object.body.getReader();
    const first = await reader.read();
    reader.releaseLock();
    taken = takeFileSend(object.body) !== undefined;
    const rest = object.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({ start: (c) => c.enqueue(first.value!) }),
    );
    return new Response(rest, { headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(SIZE) } });
  });
  const server = createAdaptorServer({ fetch: sendingFiles(app.fetch) }) as Server;
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, root, bytes, taken: () => taken, sent };
}

interface Got {
  status: number;
  body: Buffer;
  complete: boolean;
  error?: string;
}

function get(port: number, path: string, stopAfter?: number): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = request({ port, path, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let n = 0;
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        n += c.byteLength;
        if (stopAfter !== undefined && n >= stopAfter) {
          req.destroy();
          resolve({ status: res.statusCode!, body: Buffer.concat(chunks), complete: false });
        }
      });
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks), complete: res.complete }));
      res.on('error', (err) => resolve({ status: res.statusCode!, body: Buffer.concat(chunks), complete: false, error: err.message }));
      res.on('aborted', () => undefined);
    });
    req.on('error', (err) => (stopAfter === undefined ? reject(err) : undefined));
    req.end();
  });
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
/** Descriptors this process holds open on files under `root`. */
function openFiles(root: string): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith(root);
    } catch {
      return false; // closed meanwhile
    }
  }).length;
}

async function until(check: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('blob bodies sent straight from local files', () => {
  it('sends every byte of the whole file and of ranges that end inside a buffer and at its edge', async () => {
    const s = await start();
    const whole = await get(s.port, '/blob');
    expect(whole.status).toBe(200);
    expect(whole.complete).toBe(true);
    expect(sha(whole.body)).toBe(sha(s.bytes));
    for (const [offset, length] of [
      [0, 1],
      [7, 512 * 1024],
      [512 * 1024 - 1, 3 * 512 * 1024 + 2],
      [SIZE - 10, 10],
    ] as const) {
      const part = await get(s.port, `/blob?offset=${offset}&length=${length}`);
      expect(part.body.byteLength).toBe(length);
      expect(part.body.equals(s.bytes.subarray(offset, offset + length))).toBe(true);
    }
    await until(() => openFiles(s.root) === 0);
    // Sent from the file: nothing ever read the web streams.
    expect(s.sent).toHaveLength(5);
    expect(s.sent.every((b) => !b.locked)).toBe(true);
  });

  it('sends a composed object from its pieces one after another, whole and in ranges across them', async () => {
    const s = await start({ composed: true });
    const whole = await get(s.port, '/blob');
    expect(whole.complete).toBe(true);
    expect(sha(whole.body)).toBe(sha(s.bytes));
    for (const [offset, length] of [
      [0, 1],
      [2 * 1024 * 1024, 10],
      [2 * 1024 * 1024 + 4, 100_002],
      [7, SIZE - 8],
      [SIZE - 10, 10],
    ] as const) {
      const part = await get(s.port, `/blob?offset=${offset}&length=${length}`);
      expect(part.complete).toBe(true);
      expect(part.body.equals(s.bytes.subarray(offset, offset + length)), `${offset}+${length}`).toBe(true);
    }
    await until(() => openFiles(s.root) === 0);
    expect(s.sent.every((b) => !b.locked)).toBe(true);
    // Read through the web stream, the same bytes.
    const read = await get(s.port, '/read-first');
    expect(s.taken()).toBe(false);
    expect(sha(read.body)).toBe(sha(s.bytes));
  });

  it('cuts the response of a composed object whose next piece is gone, never a clean short body', async () => {
    const s = await start({ composed: true });
    const pieces = readdirSync(join(s.root, '.pieces'))[0]!;
    rmSync(join(s.root, '.pieces', pieces, '000003'));
    const got = await get(s.port, '/blob');
    expect(got.complete).toBe(false);
    expect(got.body.byteLength).toBeLessThan(SIZE);
    await until(() => openFiles(s.root) === 0);
  });

  it('leaves a body that was read already to the web stream, which still sends it whole', async () => {
    const s = await start();
    const got = await get(s.port, '/read-first');
    expect(s.taken()).toBe(false);
    expect(got.complete).toBe(true);
    expect(sha(got.body)).toBe(sha(s.bytes));
  });

  it('leaves answers of other media types to the adapter', async () => {
    const s = await start();
    const got = await get(s.port, '/json');
    expect(got.status).toBe(200);
    expect(sha(got.body)).toBe(sha(s.bytes));
  });

  it('cuts the response when the file ends early, never a clean short body', async () => {
    const s = await start();
    const got = await get(s.port, '/blob?truncate');
    expect(got.complete).toBe(false);
    expect(got.body.byteLength).toBeLessThan(SIZE);
    await until(() => openFiles(s.root) === 0);
  });

  it('cuts a range that runs past a file shrunk since the stat', async () => {
    const s = await start();
    const got = await get(s.port, `/blob?truncate&offset=${512 * 1024}&length=${2 * 1024 * 1024}`);
    expect(got.complete).toBe(false);
    expect(got.body.byteLength).toBeLessThan(2 * 1024 * 1024);
    await until(() => openFiles(s.root) === 0);
  });

  it('closes the files of pipelined answers when the connection dies, the queued one too', async () => {
    const s = await start();
    const socket = connect(s.port, '127.0.0.1');
    socket.on('error', () => undefined);
    // Never read: the first answer stalls on the socket, the second waits behind it.
    socket.pause();
    socket.write('GET /blob HTTP/1.1\r\nHost: x\r\n\r\nGET /blob HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => openFiles(s.root) === 2);
    socket.destroy();
    await until(() => openFiles(s.root) === 0);
  });

  it('closes the file when the client goes away mid-body', async () => {
    const s = await start();
    const got = await get(s.port, '/blob', 64 * 1024);
    expect(got.complete).toBe(false);
    await until(() => openFiles(s.root) === 0);
    // The server still answers the next request.
    expect(sha((await get(s.port, '/blob')).body)).toBe(sha(s.bytes));
  });

  it('takes a file body once', async () => {
    const root = mkdtempSync(join(tmpdir(), 'outpost-file-send-'));
    dirs.push(root);
    const store = new FsBlobStore(root);
    writeFileSync(join(root, 'k'), 'abc');
    const object = (await store.get('k'))!;
    expect(takeFileSend(object.body)).toBeTypeOf('function');
    expect(takeFileSend(object.body)).toBeUndefined();
    expect(takeFileSend(new Response('x').body)).toBeUndefined();
    expect(takeFileSend(null)).toBeUndefined();
    await object.body.cancel();
  });
});

describe('request bodies read from the socket', () => {
  async function bodyServer() {
    const results: Array<{ digest?: string; bytes: number; error?: string; same: boolean }> = [];
    const app = new Hono();
    app.put('/push', async (c) => {
      // Work before the body is read (authorisation does some): the client may be gone by then.
      if (c.req.query('late') !== undefined) await new Promise((r) => setTimeout(r, 200));
      const body = nodeConnection.requestBody!(c)!;
      const same = nodeConnection.requestBody!(c) === body;
      const hash = createHash('sha256');
      let bytes = 0;
      try {
        const reader = body.getReader();
        for (;;) {
          const next = await reader.read();
          if (next.done) break;
          hash.update(next.value);
          bytes += next.value.byteLength;
          // A slow reader: the socket must be paused, and nothing lost or reordered.
          if (bytes % (1024 * 1024) < next.value.byteLength) await new Promise((r) => setTimeout(r, 20));
        }
        results.push({ digest: hash.digest('hex'), bytes, same });
        return new Response('ok');
      } catch (err) {
        results.push({ bytes, error: String(err), same });
        return new Response('cut', { status: 400 });
      }
    });
    app.get('/push', (c) => new Response(String(nodeConnection.requestBody!(c))));
    const server = createAdaptorServer({ fetch: app.fetch }) as Server;
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { port: (server.address() as AddressInfo).port, results };
  }

  function put(port: number, chunks: Uint8Array[], cut = false, path = '/push'): Promise<string> {
    return new Promise((resolve) => {
      const req = request({ port, path, method: 'PUT', agent: false }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve(text));
      });
      req.on('error', (err) => resolve(err.message));
      const next = (i: number) => {
        if (i === chunks.length) return cut ? setTimeout(() => req.destroy(), 50) : req.end();
        if (req.write(chunks[i]!)) setImmediate(() => next(i + 1));
        else req.once('drain', () => next(i + 1));
      };
      next(0);
    });
  }

  it('reads every byte in order under backpressure, one stream per request', async () => {
    const s = await bodyServer();
    const bytes = randomBytes(6 * 1024 * 1024 + 7);
    const chunks = Array.from({ length: Math.ceil(bytes.byteLength / 40_000) }, (_, i) => bytes.subarray(i * 40_000, (i + 1) * 40_000));
    expect(await put(s.port, chunks)).toBe('ok');
    expect(s.results).toEqual([{ digest: sha(bytes), bytes: bytes.byteLength, same: true }]);
  });

  it('errors the stream when the client goes away before the body ends', async () => {
    const s = await bodyServer();
    const bytes = randomBytes(512 * 1024);
    await put(s.port, [bytes.subarray(0, 256 * 1024)], true);
    await until(() => s.results.length === 1);
    expect(s.results[0]!.error).toBeDefined();
    expect(s.results[0]!.digest).toBeUndefined();
  });

  it('errors, never hangs, when the client went away before the body was first read', async () => {
    const s = await bodyServer();
    // A declared length, part of the body, and gone 50 ms later, long before the handler reads.
    const socket = connect(s.port, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.write(`PUT /push?late HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n${'a'.repeat(1000)}`);
    await new Promise((r) => setTimeout(r, 50));
    socket.destroy();
    await until(() => s.results.length === 1, 3000);
    expect(s.results[0]!.error).toBeDefined();
  });

  it('has no body stream for GET', async () => {
    const s = await bodyServer();
    expect((await get(s.port, '/push')).body.toString()).toBe('undefined');
  });
});
