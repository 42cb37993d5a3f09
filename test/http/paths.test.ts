import { describe, expect, it } from 'vitest';
import { nodeConnection } from '../../src/entry/node-server.js';
import { hasDotSegment } from '../../src/http/request.js';
import { image } from '../support/images.js';
import { expectOciError, failOnServerErrors, guardedApp } from '../support/oci-errors.js';

/**
 * Paths are taken exactly as the client sent them: a name is never what is left after URL
 * resolution moved it (issue 7, item 5), and a malformed last segment is refused with the error
 * of what that segment should have been.
 */

failOnServerErrors();

describe('dot-segments', () => {
  // The request target as a client sends it; the runtime's URL parser would resolve each one to /v2/b/...
  const targets = [
    '/v2/a/../b/manifests/x',
    '/v2/a/%2e%2e/b/manifests/x',
    '/v2/a/%2E%2E/b/manifests/x',
    '/v2/a/.%2e/b/manifests/x',
    '/v2/a/%2e./b/manifests/x',
    '/v2/./b/manifests/x',
    '/v2/b/./manifests/x',
    '/v2/a/..\\b/manifests/x',
    '/v2/a\\..\\b/manifests/x',
    '/v2/b/blobs/uploads/../../manifests/x',
    '/v2/a/../b/blobs/uploads/?digest=sha256:0',
  ];

  it.each(targets)('%s is 404 NAME_INVALID on every method, and nothing is written to the repository it resolves to', async (target) => {
    const t = guardedApp({}, { connection: nodeConnection });
    const img = image();
    for (const method of ['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE']) {
      const resolved = new URL(target, 'http://outpost').pathname;
      const res = await t.app.request(
        resolved,
        { method, body: ['PUT', 'POST', 'PATCH'].includes(method) ? new Uint8Array(img.manifest.bytes) : undefined },
        // @hono/node-server's env: Node's IncomingMessage, whose url is the target as sent (nodeConnection reads it).
        { incoming: { url: target } },
      );
      await expectOciError(res, { status: 404, code: 'NAME_INVALID', head: method === 'HEAD' });
    }
    expect(await t.index.list('repos', { limit: 10 })).toEqual([]);
    expect((await t.store.list('', { limit: 10 })).keys).toEqual([]);
  });

  it.each([
    ['/v2/a..b/manifests/x', false],
    ['/v2/a/b.c/manifests/v1.0', false],
    ['/v2/a/manifests/..x', false],
    ['/v2/a/.../b', false],
    ['/v2/a/%2e%2e%2e/b', false],
    ['/v2/a/../b?x=1', true],
    ['/v2/a/b?x=/../c', false],
    ['/v2/a/%2e', true],
  ])('hasDotSegment(%s) is %s', (target, expected) => {
    expect(hasDotSegment(target)).toBe(expected);
  });

  it('a path without dot-segments is served as usual when the runtime gives the target as sent', async () => {
    const t = guardedApp({}, { connection: nodeConnection });
    const img = image();
    await t.pushImage('b', img, 'x');
    const res = await t.app.request('/v2/b/manifests/x', {}, { incoming: { url: '/v2/b/manifests/x' } });
    expect(res.status).toBe(200);
  });
});

describe('malformed percent-encoding in the last segment', () => {
  it.each([
    ['GET', '/v2/repo/blobs/sha256%3Zzz', 400, 'DIGEST_INVALID'],
    ['HEAD', '/v2/repo/blobs/%E0%A4%A', 400, 'DIGEST_INVALID'],
    ['DELETE', '/v2/repo/blobs/%', 400, 'DIGEST_INVALID'],
    ['GET', '/v2/repo/referrers/%zz', 400, 'DIGEST_INVALID'],
    ['GET', '/v2/repo/manifests/%zz', 400, 'MANIFEST_INVALID'],
    ['PATCH', '/v2/repo/blobs/uploads/%zz', 404, 'BLOB_UPLOAD_UNKNOWN'],
  ])('%s %s is %d %s', async (method, path, status, code) => {
    const t = guardedApp({}, { connection: nodeConnection });
    await expectOciError(await t.request(path, { method }), { status, code, head: method === 'HEAD' });
  });
});
