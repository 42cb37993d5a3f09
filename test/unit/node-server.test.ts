import { createAdaptorServer } from '@hono/node-server';
import { Hono } from 'hono';
import { Agent, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { drainable, nodeConnection } from '../../src/entry/node-server.js';
import { requestLog, type AccessRecord } from '../../src/http/access-log.js';

/**
 * The Node side of the access log and of graceful shutdown, on a real node:http server in
 * this process: bytes as the socket took them, a client that goes away, and a drain that lets
 * requests in flight finish, refuses new connections and cuts what is left at the deadline.
 */

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

function chunked(parts: string[], delayMs: number): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream({
    async pull(controller) {
      if (i === parts.length) return controller.close();
      if (i > 0) await new Promise((r) => setTimeout(r, delayMs));
      controller.enqueue(new TextEncoder().encode(parts[i++]));
    },
  });
}

/** A server with a streamed route, a slow route and one that never answers. */
async function start() {
  const records: AccessRecord[] = [];
  const app = new Hono();
  const log = requestLog((r) => records.push({ ...r }), nodeConnection);
  app.use('*', async (c, next) => {
    const begun = log.begin(c);
    await next();
    log.end(c, begun);
  });
  app.get('/stream', () => new Response(chunked(['ab', 'cde', 'fghi'], 5)));
  app.get('/sized', () => new Response(chunked(['ab', 'cde', 'fghi'], 5), { headers: { 'Content-Length': '9' } }));
  app.on(['GET', 'HEAD'], '/small', () => new Response('12345', { headers: { 'Content-Length': '5' } }));
  app.get('/endless', () => new Response(chunked(Array.from({ length: 10_000 }, () => 'x'.repeat(1024)), 20)));
  app.get('/slow', async () => {
    await new Promise((r) => setTimeout(r, 300));
    return new Response('done');
  });
  app.get('/never', () => new Promise<Response>(() => undefined));
  const server = createAdaptorServer({ fetch: app.fetch }) as Server;
  const drain = drainable(server);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return { server, drain, port, records };
}

interface Answer {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
}

function get(port: number, path: string, options: { method?: string; agent?: Agent | false } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: options.method ?? 'GET', agent: options.agent ?? false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('the access log on node:http', () => {
  it('counts the body bytes the socket took, and records when the body has gone', async () => {
    const { port, records } = await start();
    const res = await get(port, '/sized');
    expect(res.body).toBe('abcdefghi');
    await until(() => records.length === 1, 'the record');
    expect(records[0]).toMatchObject({ path: '/sized', status: 200, bytes: 9, outcome: 'finished', remote: '127.0.0.1' });
    expect(res.headers['x-request-id']).toBe(records[0]!.requestId);
    // The record was written after the last chunk, 2 delays after the first.
    expect(records[0]!.durationMs).toBeGreaterThanOrEqual(9);
  });

  it('counts a chunked body with its framing: 9 bytes in 3 chunks and the last one', async () => {
    const { port, records } = await start();
    expect((await get(port, '/stream')).headers['transfer-encoding']).toBe('chunked');
    await until(() => records.length === 1, 'the record');
    // "2\r\nab\r\n" "3\r\ncde\r\n" "4\r\nfghi\r\n" "0\r\n\r\n"
    expect(records[0]).toMatchObject({ path: '/stream', bytes: 7 + 8 + 9 + 5, outcome: 'finished' });
  });

  it('counts no body for HEAD, and the whole of a small answer', async () => {
    const { port, records } = await start();
    await get(port, '/small', { method: 'HEAD' });
    await get(port, '/small');
    await until(() => records.length === 2, 'the records');
    expect(records.map((r) => [r.method, r.bytes, r.outcome])).toEqual([
      ['HEAD', 0, 'finished'],
      ['GET', 5, 'finished'],
    ]);
  });

  it('says "aborted" when the client goes away mid-body', async () => {
    const { port, records } = await start();
    await new Promise<void>((resolve) => {
      const req = request({ host: '127.0.0.1', port, path: '/endless', agent: false }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.end();
    });
    await until(() => records.length === 1, 'the record');
    expect(records[0]).toMatchObject({ path: '/endless', status: 200, outcome: 'aborted' });
    expect(records[0]!.bytes).toBeGreaterThan(0);
    expect(records[0]!.bytes).toBeLessThan(10_000 * 1024);
  });
});

describe('draining a node:http server', () => {
  it('lets a request in flight finish with Connection: close, refuses new connections, closes idle ones', async () => {
    const { server, drain, port } = await start();
    const agent = new Agent({ keepAlive: true });
    // An idle keep-alive connection, and a request in flight on another.
    expect((await get(port, '/small', { agent })).headers.connection).toBe('keep-alive');
    const inFlight = get(port, '/slow', { agent: false });
    await until(() => drain.inFlight() === 1, 'the slow request to arrive');
    const drained = drain.drain(5000);
    await expect(get(port, '/small')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    const answer = await inFlight;
    expect(answer).toMatchObject({ status: 200, body: 'done' });
    expect(answer.headers.connection).toBe('close');
    expect(await drained).toEqual({ cut: 0 });
    expect(server.listening).toBe(false);
    agent.destroy();
  });

  it('closes a keep-alive connection once its response in flight has finished', async () => {
    const { drain, port } = await start();
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const streamed = get(port, '/stream', { agent });
    await until(() => drain.inFlight() === 1, 'the request to arrive');
    const started = Date.now();
    const drained = drain.drain(5000);
    expect((await streamed).body).toBe('abcdefghi');
    expect(await drained).toEqual({ cut: 0 });
    expect(Date.now() - started).toBeLessThan(2000);
    agent.destroy();
  });

  it('cuts what is still open at the deadline and says how many', async () => {
    const { drain, port } = await start();
    const hung = get(port, '/never').catch((err: NodeJS.ErrnoException) => err.code);
    await until(() => drain.inFlight() === 1, 'the request to arrive');
    const started = Date.now();
    expect(await drain.drain(200)).toEqual({ cut: 1 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(await hung).toBe('ECONNRESET');
  });
});
