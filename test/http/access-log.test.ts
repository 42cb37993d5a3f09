import { describe, expect, it } from 'vitest';
import { nodeHash } from '../../src/adapters/crypto/node-hash.js';
import { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';
import { MemoryMetaIndex } from '../../src/adapters/memory/meta-index.js';
import { createRegistry } from '../../src/core/registry/registry.js';
import { MAX_PATH_CHARS, MAX_QUERY_CHARS, type AccessRecord, type ConnectionInfo } from '../../src/http/access-log.js';
import { createApp } from '../../src/http/app.js';
import { blob } from '../support/images.js';
import { TestClock } from '../support/clock.js';

/** An app over memory adapters whose access records land in `records`. */
function loggedApp(connection?: ConnectionInfo) {
  const clock = new TestClock();
  const registry = createRegistry({ store: new MemoryBlobStore(), index: new MemoryMetaIndex(clock), hash: nodeHash, clock, options: {} });
  const records: AccessRecord[] = [];
  // A copy: the middleware owns the object it hands over.
  const app = createApp({ registry, accessLog: (r) => records.push({ ...r }), connection });
  return { app, records };
}

const FRESH_ID = /^[0-9a-f]{16}-[0-9a-z]+$/;

describe('access log: one record per request', () => {
  it('records method, path, status, declared bytes, duration and the request id it returns', async () => {
    const { app, records } = loggedApp();
    const res = await app.request('/v2/');
    expect(res.status).toBe(200);
    const id = res.headers.get('x-request-id');
    expect(id).toMatch(FRESH_ID);
    expect(records).toHaveLength(1);
    expect(records[0]).toEqual({
      msg: 'access',
      requestId: id,
      method: 'GET',
      path: '/v2/',
      status: 200,
      bytes: 2,
      durationMs: expect.any(Number),
      outcome: 'returned',
    });
    expect(records[0]!.durationMs).toBeGreaterThanOrEqual(0);
  });

  it.each([
    ['a HEAD (no body is sent)', '/v2/', 'HEAD', 200, 0],
    ['an OCI error answered by the error mapper', '/v2/team/app/blobs/sha256:' + 'a'.repeat(64), 'GET', 404, expect.any(Number)],
    ['an unknown route', '/nowhere', 'GET', 404, expect.any(Number)],
    ['a redirect (no body)', '/v2', 'GET', 301, 0],
  ])('records %s', async (_, path, method, status, bytes) => {
    const { app, records } = loggedApp();
    const res = await app.request(path, { method });
    expect(res.status).toBe(status);
    expect(res.headers.get('x-request-id')).toBe(records[0]!.requestId);
    expect(records).toEqual([expect.objectContaining({ method, path, status, bytes, outcome: 'returned' })]);
  });

  it('records a push: the status and path of each step', async () => {
    const { app, records } = loggedApp();
    const content = blob('hello', 'application/octet-stream');
    const res = await app.request(`/v2/team/app/blobs/uploads/?digest=${content.digest}`, { method: 'POST', body: new Uint8Array(content.bytes) });
    expect(res.status).toBe(201);
    expect(records).toEqual([expect.objectContaining({ method: 'POST', path: '/v2/team/app/blobs/uploads/', query: `digest=${content.digest}`, status: 201 })]);
  });

  it('takes a well-formed X-Request-Id from the client and replaces any other', async () => {
    const { app, records } = loggedApp();
    const sent = ['trace-01.abc:DEF_9', 'x'.repeat(128)];
    for (const id of sent) {
      const res = await app.request('/v2/', { headers: { 'X-Request-Id': id } });
      expect(res.headers.get('x-request-id')).toBe(id);
    }
    const refused = ['x'.repeat(129), 'has space', 'quote"inside', 'semi;colon', 'new\tline', ''];
    for (const id of refused) {
      const res = await app.request('/v2/', { headers: { 'X-Request-Id': id } });
      expect(res.headers.get('x-request-id'), JSON.stringify(id)).toMatch(FRESH_ID);
    }
    expect(records.map((r) => r.requestId).slice(0, 2)).toEqual(sent);
  });

  it('gives every request its own id', async () => {
    const { app } = loggedApp();
    const ids = await Promise.all(Array.from({ length: 20 }, async () => (await app.request('/v2/')).headers.get('x-request-id')));
    expect(new Set(ids).size).toBe(20);
  });

  it('returns X-Request-Id even with the access log off', async () => {
    const clock = new TestClock();
    const registry = createRegistry({ store: new MemoryBlobStore(), index: new MemoryMetaIndex(clock), hash: nodeHash, clock, options: {} });
    const res = await createApp({ registry }).request('/v2/');
    expect(res.headers.get('x-request-id')).toMatch(FRESH_ID);
  });
});

describe('access log: never a secret', () => {
  const secrets = ['Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.c2ln', 'Basic dXNlcjpodW50ZXIy', 'hunter2-password', 'sekrit-token-value'];

  it('logs no header and no value of a query parameter that is not an OCI one', async () => {
    const { app, records } = loggedApp();
    await app.request(
      `/v2/team/app/tags/list?n=10&last=v1&token=${secrets[3]}&password=${secrets[2]}&X-Amz-Signature=abc123&X-Amz-Credential=AKIAEXAMPLE&flag`,
      { headers: { Authorization: secrets[0]!, Cookie: `session=${secrets[2]}`, 'Proxy-Authorization': secrets[1]! } },
    );
    const line = JSON.stringify(records);
    for (const secret of [...secrets, 'abc123', 'AKIAEXAMPLE']) expect(line).not.toContain(secret);
    expect(records[0]!.query).toBe('n=10&last=v1&token=[redacted]&password=[redacted]&X-Amz-Signature=[redacted]&X-Amz-Credential=[redacted]&flag');
    expect(records[0]!.path).toBe('/v2/team/app/tags/list');
  });

  it('redacts a bare query name that may itself be a token', async () => {
    const { app, records } = loggedApp();
    await app.request(`/v2/?${'eyJhbGciOiJIUzI1NiJ9'.repeat(3)}`);
    expect(records[0]!.query).toBe('[redacted]');
  });

  it('bounds the path and the query', async () => {
    const { app, records } = loggedApp();
    await app.request(`/v2/${'a/'.repeat(1000)}manifests/x?ns=${'b'.repeat(1000)}&${'n=1&'.repeat(300)}`);
    const r = records[0]!;
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.path.length).toBe(MAX_PATH_CHARS + 3);
    expect(r.path.endsWith('...')).toBe(true);
    expect(r.query!.length).toBeLessThanOrEqual(MAX_QUERY_CHARS + 3);
    expect(r.query).toMatch(/^ns=b{200}\.\.\.&n=1&/);
  });
});

describe('access log: the runtime observes the end of the response', () => {
  /** A runtime that reports the end of each response when the test says so. */
  function fakeConnection() {
    const ends: Array<(result: { bytes: number; finished: boolean }) => void> = [];
    const connection: ConnectionInfo = {
      remoteAddress: () => '192.0.2.7',
      onResponseEnd: (_c, end) => {
        ends.push(end);
        return true;
      },
    };
    return { connection, ends };
  }

  it('writes the record only when the runtime says the body has gone, with its bytes', async () => {
    const { connection, ends } = fakeConnection();
    const { app, records } = loggedApp(connection);
    const res = await app.request('/v2/');
    await res.arrayBuffer();
    expect(records).toHaveLength(0);
    ends[0]!({ bytes: 2, finished: true });
    expect(records).toEqual([expect.objectContaining({ status: 200, bytes: 2, outcome: 'finished', remote: '192.0.2.7' })]);
  });

  it('says so when the connection closed before the body was sent', async () => {
    const { connection, ends } = fakeConnection();
    const { app, records } = loggedApp(connection);
    await app.request('/v2/');
    ends[0]!({ bytes: 0, finished: false });
    expect(records).toEqual([expect.objectContaining({ bytes: 0, outcome: 'aborted' })]);
  });

  it('falls back to the declared length when the runtime cannot observe the end', async () => {
    const { app, records } = loggedApp({ remoteAddress: () => '2001:db8::1' });
    await app.request('/v2/');
    expect(records).toEqual([expect.objectContaining({ bytes: 2, outcome: 'returned', remote: '2001:db8::1' })]);
  });
});
