import { describe, expect, it } from 'vitest';
import { blob, randomBlob, sha256 } from '../support/images.js';
import { expectOciError, failOnServerErrors, guardedApp } from '../support/oci-errors.js';
import { expectCreated, expectNotVisible, expectUploadGone, finish, patch, sha512, startUpload } from '../support/uploads.js';

/**
 * Uploads completed by one request with the whole blob (spec.md#pushing-blobs): POST ?digest=,
 * and POST then PUT; and what completing with a wrong or missing digest does.
 */

failOnServerErrors();

describe('monolithic upload: POST ?digest=', () => {
  it.each([
    ['a small blob', randomBlob(100)],
    ['a 1 MiB blob', randomBlob(1024 * 1024)],
    ['a zero-byte blob', blob('')],
  ])('%s is 201 with Location and Docker-Content-Digest', async (_, b) => {
    const t = guardedApp();
    const res = await t.request(`/v2/repo/blobs/uploads/?digest=${b.digest}`, {
      method: 'POST',
      body: new Uint8Array(b.bytes),
      headers: { 'Content-Type': 'application/octet-stream' },
    });
    await expectCreated(t, res, 'repo', b);
  });

  it('a digest that does not match is 400 DIGEST_INVALID and nothing is stored', async () => {
    const t = guardedApp();
    const b = randomBlob(100);
    const claimed = sha256('something else');
    const res = await t.request(`/v2/repo/blobs/uploads/?digest=${claimed}`, { method: 'POST', body: new Uint8Array(b.bytes) });
    await expectOciError(res, { status: 400, code: 'DIGEST_INVALID' });
    await expectNotVisible(t, 'repo', claimed);
    await expectNotVisible(t, 'repo', b.digest);
  });

  it('an invalid digest is 400 DIGEST_INVALID', async () => {
    const t = guardedApp();
    const res = await t.request('/v2/repo/blobs/uploads/?digest=sha256:nothex', { method: 'POST', body: 'x' });
    await expectOciError(res, { status: 400, code: 'DIGEST_INVALID' });
  });

  it('a body shorter than its Content-Length is refused', async () => {
    const t = guardedApp();
    const b = randomBlob(10);
    const res = await t.request(`/v2/repo/blobs/uploads/?digest=${b.digest}`, {
      method: 'POST',
      body: new Uint8Array(b.bytes),
      headers: { 'Content-Length': '20' },
    });
    await expectOciError(res, { status: 400, code: 'SIZE_INVALID' });
    await expectNotVisible(t, 'repo', b.digest);
  });

  it('a sha512 digest works', async () => {
    const t = guardedApp();
    const bytes = randomBlob(300).bytes;
    const b = { ...blob(bytes), digest: sha512(bytes) };
    const res = await t.request(`/v2/repo/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: new Uint8Array(bytes) });
    await expectCreated(t, res, 'repo', b);
  });
});

describe('upload sessions: POST, then PUT', () => {
  it('POST without parameters opens a session: 202 with Location, Range and Docker-Upload-UUID', async () => {
    const t = guardedApp();
    const res = await t.request('/v2/repo/blobs/uploads/', { method: 'POST' });
    expect(res.status).toBe(202);
    const location = res.headers.get('location')!;
    expect(location).toMatch(/^\/v2\/repo\/blobs\/uploads\/[A-Za-z0-9-]+$/);
    expect(res.headers.get('docker-upload-uuid')).toBe(location.split('/').pop());
    expect(res.headers.get('range')).toBe('0-0');
    expect(res.headers.get('oci-chunk-min-length')).toBeNull();
  });

  it('advertises OCI-Chunk-Min-Length when the store needs one', async () => {
    const t = guardedApp({ chunkMinLength: 5 * 1024 * 1024 });
    const res = await t.request('/v2/repo/blobs/uploads/', { method: 'POST' });
    expect(res.status).toBe(202);
    expect(res.headers.get('oci-chunk-min-length')).toBe(String(5 * 1024 * 1024));
  });

  it.each([
    ['a blob', randomBlob(4096)],
    ['a zero-byte blob', blob('')],
  ])('PUT with the whole body completes %s: 201', async (_, b) => {
    const t = guardedApp();
    const location = await startUpload(t);
    await expectCreated(t, await finish(t, location, b.digest, b.bytes), 'repo', b);
    await expectUploadGone(t, location);
  });

  it('a zero-byte blob can be completed with no body at all', async () => {
    const t = guardedApp();
    const location = await startUpload(t);
    await expectCreated(t, await finish(t, location, sha256('')), 'repo', blob(''));
  });

  it('the digest may follow a query the Location already has', async () => {
    const t = guardedApp();
    const b = randomBlob(10);
    const location = `${await startUpload(t)}?_state=opaque`;
    await expectCreated(t, await finish(t, location, b.digest, b.bytes), 'repo', b);
  });

  it('sha512: POST, PATCH, PUT', async () => {
    const t = guardedApp();
    const bytes = randomBlob(1000).bytes;
    const b = { ...blob(bytes), digest: sha512(bytes) };
    const location = await startUpload(t);
    expect((await patch(t, location, bytes.subarray(0, 400), '0-399')).status).toBe(202);
    expect((await patch(t, location, bytes.subarray(400), '400-999')).status).toBe(202);
    await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
  });

  it('sha512: a mismatching digest is 400 DIGEST_INVALID', async () => {
    const t = guardedApp();
    const location = await startUpload(t);
    const wrong = sha512(Buffer.from('other'));
    await expectOciError(await finish(t, location, wrong, Buffer.from('bytes')), { status: 400, code: 'DIGEST_INVALID' });
    await expectNotVisible(t, 'repo', wrong);
  });
});

describe('completing with a wrong or missing digest', () => {
  it.each([
    ['the whole body in the PUT', [] as number[][], true],
    ['one streamed PATCH', [[0, 50]], false],
    ['one chunk plus a PUT body', [[0, 20]], true],
    ['several chunks', [[0, 20], [20, 50]], false],
  ])('a digest mismatch after %s is 400 DIGEST_INVALID; the blob is not visible and the upload stays as it was', async (_, chunks, putBody) => {
    const t = guardedApp();
    const b = randomBlob(50);
    const claimed = sha256('not the content');
    const location = await startUpload(t);
    let sent = 0;
    for (const [from, to] of chunks) {
      expect((await patch(t, location, b.bytes.subarray(from!, to!))).status).toBe(202);
      sent = to!;
    }
    const res = await finish(t, location, claimed, putBody ? b.bytes.subarray(sent) : undefined);
    const error = await expectOciError(res, { status: 400, code: 'DIGEST_INVALID' });
    expect(error!.detail).toMatchObject({ expected: claimed });
    await expectNotVisible(t, 'repo', claimed);
    await expectNotVisible(t, 'repo', b.digest);
    // Unlike Distribution, which cancels the upload on a failed commit (see core/registry/uploads.ts).
    const status = await t.request(location);
    expect(status.status).toBe(204);
    expect(status.headers.get('range')).toBe(sent ? `0-${sent - 1}` : '0-0');
    await expectCreated(t, await finish(t, location, b.digest, putBody ? b.bytes.subarray(sent) : undefined), 'repo', b);
  });

  it('PUT without ?digest= is 400 DIGEST_INVALID and the upload stays open', async () => {
    const t = guardedApp();
    const b = randomBlob(10);
    const location = await startUpload(t);
    const res = await t.request(location, { method: 'PUT', body: new Uint8Array(b.bytes) });
    await expectOciError(res, { status: 400, code: 'DIGEST_INVALID', message: 'digest' });
    expect((await t.request(location)).status).toBe(204);
    await expectCreated(t, await finish(t, location, b.digest, b.bytes), 'repo', b);
  });

  it('PUT with a malformed ?digest= is 400 DIGEST_INVALID', async () => {
    const t = guardedApp();
    const location = await startUpload(t);
    await expectOciError(await finish(t, location, 'sha256:xyz', Buffer.from('x')), { status: 400, code: 'DIGEST_INVALID' });
  });

  it('a PUT body shorter than its Content-Range is 400 SIZE_INVALID and nothing is visible', async () => {
    const t = guardedApp();
    const b = randomBlob(20);
    const location = await startUpload(t);
    const res = await finish(t, location, b.digest, b.bytes.subarray(0, 10), { 'Content-Range': '0-19' });
    await expectOciError(res, { status: 400, code: 'SIZE_INVALID' });
    await expectNotVisible(t, 'repo', b.digest);
  });
});
