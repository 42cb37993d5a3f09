import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { image } from '../support/images.js';
import { pushBlob, pushManifest } from './support/registry-client.js';
import { startOutpost, type OutpostProcess } from './support/server.js';

/**
 * Requests no well-behaved client library sends, written byte for byte on a socket to the real
 * Node server: Node's HTTP parser and @hono/node-server sit between them and the routes, and
 * what they resolve or refuse cannot be seen through app.request().
 */

let work: string;
let outpost: OutpostProcess;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-raw-'));
  outpost = await startOutpost(join(work, 'data'));
});

afterAll(async () => {
  await outpost?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

/** One HTTP/1.1 request as written; the status line and body of the answer. */
async function raw(request: string): Promise<{ status: number; body: string }> {
  const socket = connect(outpost.port, '127.0.0.1');
  socket.end(request);
  let answer = '';
  for await (const chunk of socket) answer += chunk;
  const [head = '', ...rest] = answer.split('\r\n\r\n');
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), body: rest.join('\r\n\r\n') };
}

function ociCode(body: string): string | undefined {
  return (JSON.parse(body) as { errors: Array<{ code: string }> }).errors[0]?.code;
}

describe('requests the HTTP adapter cannot turn into a URL get OCI errors too', () => {
  it.each([
    ['the target *', 'OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'],
    ['GET *', 'GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'],
    ['a backslash in a name', 'GET /v2/good\\repo/manifests/v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'],
    ['HTTP/1.1 without Host', 'GET /v2/ HTTP/1.1\r\nConnection: close\r\n\r\n'],
  ])('%s: 400 with an OCI error body and the API version header', async (_, request) => {
    const socket = connect(outpost.port, '127.0.0.1');
    socket.end(request);
    let answer = '';
    for await (const chunk of socket) answer += chunk;
    const [head = '', body = ''] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(head.toLowerCase()).toContain('docker-distribution-api-version: registry/2.0');
    expect(ociCode(body)).toBe('UNSUPPORTED');
  });

  it('HTTP/1.0 without Host is served (Host is an HTTP/1.1 requirement)', async () => {
    const socket = connect(outpost.port, '127.0.0.1');
    socket.end('GET /v2/ HTTP/1.0\r\n\r\n');
    let answer = '';
    for await (const chunk of socket) answer += chunk;
    expect(answer).toMatch(/^HTTP\/1\.[01] 200 /);
  });
});

describe('dot-segments on the real server', () => {
  it.each(['/v2/a/../b/manifests/x', '/v2/a/%2e%2e/b/manifests/x', '/v2/a/%2E./b/manifests/x'])(
    'PUT %s is 404 NAME_INVALID and repository b stays empty',
    async (target) => {
      const img = image({ layers: [10] });
      for (const b of [img.config, ...img.layers]) await pushBlob(outpost, 'b', b);
      const body = Buffer.from(img.manifest.bytes);
      const res = await raw(
        `PUT ${target} HTTP/1.1\r\nHost: x\r\nContent-Type: ${img.manifest.mediaType}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body.toString('latin1')}`,
      );
      expect(res.status).toBe(404);
      expect((JSON.parse(res.body) as { errors: Array<{ code: string }> }).errors[0]!.code).toBe('NAME_INVALID');
      expect((await fetch(`${outpost.url}/v2/b/manifests/x`)).status).toBe(404);
    },
  );

  it('a backslash in the target is refused (400, an OCI error) before routing; b stays empty', async () => {
    const res = await raw('PUT /v2/a\\..\\b/manifests/z HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}');
    expect(res.status).toBe(400);
    expect(ociCode(res.body)).toBe('UNSUPPORTED');
    expect((await fetch(`${outpost.url}/v2/b/manifests/z`)).status).toBe(404);
  });

  it('the same manifest PUT to the resolved path is stored (the refusal is of the path, not the content)', async () => {
    const img = image({ layers: [10] });
    for (const b of [img.config, ...img.layers]) await pushBlob(outpost, 'b', b);
    await pushManifest(outpost, 'b', 'y', img.manifest);
    expect((await fetch(`${outpost.url}/v2/b/manifests/y`)).status).toBe(200);
  });
});
