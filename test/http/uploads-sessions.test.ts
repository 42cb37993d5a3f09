import { describe, expect, it } from 'vitest';
import { randomBlob } from '../support/images.js';
import { expectOciError, failOnServerErrors, guardedApp } from '../support/oci-errors.js';
import { expectCreated, expectNotVisible, expectUploadGone, finish, patch, startUpload, withQuery } from '../support/uploads.js';

/**
 * The life of an upload session (spec.md#pushing-blobs): its status, cancelling it, racing
 * completions, expiry, and the repository an upload id is bound to.
 */

failOnServerErrors();

describe('racing completions', () => {
  it('two PUTs completing one upload: one is 201, the other 404 BLOB_UPLOAD_UNKNOWN', async () => {
    const t = guardedApp();
    const b = randomBlob(50);
    const location = await startUpload(t);
    const results = await Promise.all([finish(t, location, b.digest, b.bytes), finish(t, location, b.digest, b.bytes)]);
    expect(results.map((r) => r.status).sort()).toEqual([201, 404]);
    await expectOciError(results.find((r) => r.status === 404)!, { status: 404, code: 'BLOB_UPLOAD_UNKNOWN' });
    expect((await t.request(`/v2/repo/blobs/${b.digest}`)).status).toBe(200);
  });
});

describe('upload status: GET', () => {
  it('is 204 with Range, Location and Docker-Upload-UUID; the POST Location stays valid after PATCHes', async () => {
    const t = guardedApp();
    const location = await startUpload(t);
    const fresh = await t.request(location);
    expect(fresh.status).toBe(204);
    expect(fresh.headers.get('range')).toBe('0-0');
    expect(await fresh.text()).toBe('');

    expect((await patch(t, location, randomBlob(22).bytes, '0-21')).status).toBe(202);
    const res = await t.request(location);
    expect(res.status).toBe(204);
    expect(res.headers.get('range')).toBe('0-21');
    expect(res.headers.get('location')).toBe(location);
    expect(res.headers.get('docker-upload-uuid')).toBe(location.split('/').pop());
  });
});

describe('cancelling an upload: DELETE', () => {
  it('is 204, then every request on the session is 404 BLOB_UPLOAD_UNKNOWN', async () => {
    const t = guardedApp();
    const b = randomBlob(20);
    const location = await startUpload(t);
    expect((await patch(t, location, b.bytes.subarray(0, 10), '0-9')).status).toBe(202);
    const res = await t.request(location, { method: 'DELETE' });
    expect(res.status).toBe(204);
    await expectUploadGone(t, location);
    await expectOciError(await patch(t, location, b.bytes.subarray(10), '10-19'), { status: 404, code: 'BLOB_UPLOAD_UNKNOWN' });
    await expectOciError(await finish(t, location, b.digest, b.bytes.subarray(10)), { status: 404, code: 'BLOB_UPLOAD_UNKNOWN' });
    await expectOciError(await t.request(location, { method: 'DELETE' }), { status: 404, code: 'BLOB_UPLOAD_UNKNOWN' });
    await expectNotVisible(t, 'repo', b.digest);
  });
});

describe('upload expiry', () => {
  const ttl = 60_000;

  it.each(['GET', 'PATCH', 'PUT', 'DELETE'])('%s on an upload untouched beyond uploadTtlMs is 404 BLOB_UPLOAD_UNKNOWN', async (method) => {
    const t = guardedApp({ uploadTtlMs: ttl });
    const b = randomBlob(10);
    const location = await startUpload(t);
    t.clock.advance(ttl + 1);
    const target = method === 'PUT' ? withQuery(location, 'digest', b.digest) : location;
    const res = await t.request(target, { method, body: method === 'PATCH' || method === 'PUT' ? new Uint8Array(b.bytes) : undefined });
    await expectOciError(res, { status: 404, code: 'BLOB_UPLOAD_UNKNOWN' });
    await expectNotVisible(t, 'repo', b.digest);
  });

  it('each PATCH extends the session', async () => {
    const t = guardedApp({ uploadTtlMs: ttl });
    const b = randomBlob(30);
    const location = await startUpload(t);
    for (const [from, to] of [
      [0, 10],
      [10, 20],
      [20, 30],
    ]) {
      t.clock.advance(ttl - 1);
      expect((await patch(t, location, b.bytes.subarray(from!, to!), `${from}-${to! - 1}`)).status).toBe(202);
    }
    t.clock.advance(ttl - 1);
    await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
  });
});

describe('upload ids are bound to their repository', () => {
  it.each(['GET', 'PATCH', 'PUT', 'DELETE'])('%s of an upload id under another repository name is 404', async (method) => {
    const t = guardedApp();
    const b = randomBlob(10);
    const location = await startUpload(t, 'mine');
    const foreign = location.replace('/v2/mine/', '/v2/theirs/');
    const target = method === 'PUT' ? withQuery(foreign, 'digest', b.digest) : foreign;
    const res = await t.request(target, { method, body: method === 'PATCH' || method === 'PUT' ? new Uint8Array(b.bytes) : undefined });
    await expectOciError(res, { status: 404, code: 'BLOB_UPLOAD_UNKNOWN' });
    await expectNotVisible(t, 'theirs', b.digest);
    // The session in its own repository is untouched.
    expect((await t.request(location)).headers.get('range')).toBe('0-0');
    await expectCreated(t, await finish(t, location, b.digest, b.bytes), 'mine', b);
  });

  it.each([
    ['a well-formed id never issued', '/v2/repo/blobs/uploads/0b5c4b7e-0000-4000-8000-000000000000'],
    ['an id with odd characters', '/v2/repo/blobs/uploads/not_an%20id'],
    ['a very long id', `/v2/repo/blobs/uploads/${'a'.repeat(300)}`],
  ])('%s is 404 BLOB_UPLOAD_UNKNOWN', async (_, location) => {
    const t = guardedApp();
    for (const method of ['GET', 'PATCH', 'DELETE']) {
      await expectOciError(await t.request(location, { method, body: method === 'PATCH' ? 'x' : undefined }), {
        status: 404,
        code: 'BLOB_UPLOAD_UNKNOWN',
      });
    }
  });

  it('a completed upload cannot be completed again', async () => {
    const t = guardedApp();
    const b = randomBlob(10);
    const location = await startUpload(t);
    expect((await finish(t, location, b.digest, b.bytes)).status).toBe(201);
    await expectOciError(await finish(t, location, b.digest, b.bytes), { status: 404, code: 'BLOB_UPLOAD_UNKNOWN' });
  });
});
