import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { blob, randomBlob, sha256, type Blob } from '../support/images.js';
import { expectOciError, failOnServerErrors, guardedApp } from '../support/oci-errors.js';

/**
 * POST/GET/PATCH/PUT/DELETE /v2/<name>/blobs/uploads/ (spec.md#pushing-blobs): monolithic,
 * POST+PUT, streamed and chunked uploads, mounts, cancellation and expiry.
 */

failOnServerErrors();

type App = ReturnType<typeof guardedApp>;

/** Appends a query parameter to a Location that may already carry a query. */
function withQuery(location: string, key: string, value: string): string {
  return `${location}${location.includes('?') ? '&' : '?'}${key}=${encodeURIComponent(value)}`;
}

async function startUpload(t: App, name = 'repo'): Promise<string> {
  const res = await t.request(`/v2/${name}/blobs/uploads/`, { method: 'POST', headers: { 'Content-Length': '0' } });
  expect(res.status).toBe(202);
  const location = res.headers.get('location')!;
  expect(location.startsWith(`/v2/${name}/blobs/uploads/`)).toBe(true);
  return location;
}

function patch(t: App, location: string, bytes: Uint8Array, range?: string, headers: Record<string, string> = {}) {
  return t.request(location, {
    method: 'PATCH',
    body: new Uint8Array(bytes),
    headers: { 'Content-Type': 'application/octet-stream', ...(range ? { 'Content-Range': range } : {}), ...headers },
  });
}

function finish(t: App, location: string, digest: string, bytes?: Uint8Array, headers: Record<string, string> = {}) {
  return t.request(withQuery(location, 'digest', digest), {
    method: 'PUT',
    body: bytes && new Uint8Array(bytes),
    headers: { 'Content-Type': 'application/octet-stream', ...headers },
  });
}

async function expectCreated(t: App, res: Response, name: string, b: Blob) {
  expect(res.status, await res.clone().text()).toBe(201);
  expect(res.headers.get('location')).toBe(`/v2/${name}/blobs/${b.digest}`);
  expect(res.headers.get('docker-content-digest')).toBe(b.digest);
  const got = await t.request(`/v2/${name}/blobs/${b.digest}`);
  expect(got.status).toBe(200);
  expect(Buffer.from(await got.arrayBuffer()).equals(b.bytes)).toBe(true);
}

async function expectNotVisible(t: App, name: string, digest: string) {
  await expectOciError(await t.request(`/v2/${name}/blobs/${digest}`), { status: 404, code: 'BLOB_UNKNOWN' });
}

async function expectUploadGone(t: App, location: string) {
  await expectOciError(await t.request(location), { status: 404, code: 'BLOB_UPLOAD_UNKNOWN' });
}

function sha512(bytes: Uint8Array): string {
  return `sha512:${createHash('sha512').update(bytes).digest('hex')}`;
}

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

describe('streamed upload: PATCH without Content-Range', () => {
  it('one PATCH then PUT with no body: 202 with Location and Range, then 201', async () => {
    const t = guardedApp();
    const b = randomBlob(42);
    const location = await startUpload(t);
    const res = await patch(t, location, b.bytes);
    expect(res.status).toBe(202);
    expect(res.headers.get('range')).toBe('0-41');
    const next = res.headers.get('location')!;
    expect(next).toBeTruthy();
    await expectCreated(t, await finish(t, next, b.digest, undefined, { 'Content-Length': '0' }), 'repo', b);
  });

  it('several PATCHes are appended in order', async () => {
    const t = guardedApp();
    const b = randomBlob(3000);
    const location = await startUpload(t);
    for (const [from, to] of [
      [0, 1000],
      [1000, 2500],
      [2500, 3000],
    ]) {
      const res = await patch(t, location, b.bytes.subarray(from, to));
      expect(res.status).toBe(202);
      expect(res.headers.get('range')).toBe(`0-${to! - 1}`);
    }
    await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
  });

  it('a final chunk may come with the PUT', async () => {
    const t = guardedApp();
    const b = randomBlob(100);
    const location = await startUpload(t);
    expect((await patch(t, location, b.bytes.subarray(0, 60))).status).toBe(202);
    await expectCreated(t, await finish(t, location, b.digest, b.bytes.subarray(60)), 'repo', b);
  });

  it('an empty PATCH changes nothing', async () => {
    const t = guardedApp();
    const b = randomBlob(10);
    const location = await startUpload(t);
    const res = await patch(t, location, new Uint8Array(0));
    expect(res.status).toBe(202);
    expect(res.headers.get('range')).toBe('0-0');
    await expectCreated(t, await finish(t, location, b.digest, b.bytes), 'repo', b);
  });
});

describe('chunked upload: PATCH with Content-Range', () => {
  it('chunks in order: Range is cumulative from 0, then PUT with no body is 201', async () => {
    const t = guardedApp();
    const b = randomBlob(42);
    const location = await startUpload(t);
    const first = await patch(t, location, b.bytes.subarray(0, 22), '0-21', { 'Content-Length': '22' });
    expect(first.status).toBe(202);
    expect(first.headers.get('range')).toBe('0-21');
    expect(first.headers.get('location')).toBeTruthy();
    const second = await patch(t, first.headers.get('location')!, b.bytes.subarray(22), '22-41', { 'Content-Length': '20' });
    expect(second.status).toBe(202);
    expect(second.headers.get('range')).toBe('0-41');
    await expectCreated(t, await finish(t, second.headers.get('location')!, b.digest, undefined, { 'Content-Length': '0' }), 'repo', b);
  });

  it.each([['0-21'], ['bytes 0-21'], ['bytes=0-21'], ['0-21/42'], ['0-21/*']])('accepts Content-Range spelled %s', async (range) => {
    const t = guardedApp();
    const location = await startUpload(t);
    const res = await patch(t, location, randomBlob(22).bytes, range);
    expect(res.status).toBe(202);
    expect(res.headers.get('range')).toBe('0-21');
  });

  it('the final chunk may come with the PUT, with its Content-Range', async () => {
    const t = guardedApp();
    const b = randomBlob(42);
    const location = await startUpload(t);
    expect((await patch(t, location, b.bytes.subarray(0, 22), '0-21')).status).toBe(202);
    const res = await finish(t, location, b.digest, b.bytes.subarray(22), { 'Content-Range': '22-41' });
    await expectCreated(t, res, 'repo', b);
  });

  it.each([
    ['a first chunk that does not start at 0', [], '22-41', '0-0'],
    ['a chunk that repeats the last one', [[0, 22]], '0-21', '0-21'],
    ['a chunk that skips ahead', [[0, 22]], '30-41', '0-21'],
    ['a chunk that overlaps', [[0, 22]], '20-41', '0-21'],
  ] as Array<[string, Array<[number, number]>, string, string]>)(
    '%s is 416 with a Range header showing the current offset',
    async (_, accepted, range, current) => {
      const t = guardedApp();
      const b = randomBlob(42);
      const location = await startUpload(t);
      for (const [from, to] of accepted) {
        expect((await patch(t, location, b.bytes.subarray(from, to), `${from}-${to - 1}`)).status).toBe(202);
      }
      const [start, end] = range.split('-').map(Number) as [number, number];
      const res = await patch(t, location, b.bytes.subarray(start, end + 1), range);
      expect(res.headers.get('range')).toBe(current);
      expect(res.headers.get('docker-upload-uuid')).toBe(location.split('/').pop());
      const error = await expectOciError(res, { status: 416, code: 'BLOB_UPLOAD_INVALID' });
      const offset = accepted.reduce((n, [from, to]) => n + to - from, 0);
      expect(error!.detail).toMatchObject({ offset });

      // The session survives, at the same offset, and can still be completed.
      const status = await t.request(location);
      expect(status.status).toBe(204);
      expect(status.headers.get('range')).toBe(current);
      const rest = b.bytes.subarray(offset);
      expect((await patch(t, location, rest, `${offset}-41`)).status).toBe(202);
      await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
    },
  );

  it('a final PUT chunk at the wrong offset is 416 and the upload stays', async () => {
    const t = guardedApp();
    const b = randomBlob(42);
    const location = await startUpload(t);
    expect((await patch(t, location, b.bytes.subarray(0, 22), '0-21')).status).toBe(202);
    const res = await finish(t, location, b.digest, b.bytes.subarray(22), { 'Content-Range': '30-49' });
    expect(res.headers.get('range')).toBe('0-21');
    await expectOciError(res, { status: 416, code: 'BLOB_UPLOAD_INVALID' });
    expect((await t.request(location)).status).toBe(204);
  });

  it.each([['abc'], ['10-5'], ['-5'], ['0-'], ['bytes */42']])('a malformed Content-Range %s is 416', async (range) => {
    const t = guardedApp();
    const location = await startUpload(t);
    await expectOciError(await patch(t, location, randomBlob(5).bytes, range), { status: 416, code: 'BLOB_UPLOAD_INVALID' });
    expect((await t.request(location)).headers.get('range')).toBe('0-0');
  });

  it('Content-Length that does not match Content-Range is 400 SIZE_INVALID and nothing is appended', async () => {
    const t = guardedApp();
    const location = await startUpload(t);
    const res = await patch(t, location, randomBlob(10).bytes, '0-19', { 'Content-Length': '10' });
    await expectOciError(res, { status: 400, code: 'SIZE_INVALID', message: /Content-Length 10.*20 bytes/ });
    expect((await t.request(location)).headers.get('range')).toBe('0-0');
  });

  it('a body that does not match Content-Range is 400 SIZE_INVALID and nothing is appended', async () => {
    const t = guardedApp();
    const b = randomBlob(20);
    const location = await startUpload(t);
    await expectOciError(await patch(t, location, b.bytes.subarray(0, 10), '0-19'), { status: 400, code: 'SIZE_INVALID' });
    expect((await t.request(location)).headers.get('range')).toBe('0-0');
    expect((await patch(t, location, b.bytes, '0-19')).status).toBe(202);
    await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
  });

  it('an invalid Content-Length is 400 SIZE_INVALID', async () => {
    const t = guardedApp();
    const location = await startUpload(t);
    const res = await patch(t, location, randomBlob(10).bytes, undefined, { 'Content-Length': 'ten' });
    await expectOciError(res, { status: 400, code: 'SIZE_INVALID' });
  });

  it('two PATCHes racing for the same offset: one is 202, the other 416', async () => {
    const t = guardedApp();
    const location = await startUpload(t);
    const [a, b] = await Promise.all([
      patch(t, location, randomBlob(10).bytes, '0-9'),
      patch(t, location, randomBlob(10).bytes, '0-9'),
    ]);
    expect([a.status, b.status].sort()).toEqual([202, 416]);
    expect((await t.request(location)).headers.get('range')).toBe('0-9');
  });
});

describe('request bodies without Content-Length (chunked transfer)', () => {
  /** A body of several chunks of unknown total length, as a chunked request arrives. */
  function chunked(bytes: Uint8Array, cuts: number[]): RequestInit {
    const bounds = [0, ...cuts, bytes.byteLength];
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i + 1 < bounds.length; i++) c.enqueue(bytes.slice(bounds[i], bounds[i + 1]));
        c.close();
      },
    });
    return { body, duplex: 'half' } as RequestInit;
  }

  it('monolithic POST ?digest=', async () => {
    const t = guardedApp();
    const b = randomBlob(1000);
    const res = await t.request(`/v2/repo/blobs/uploads/?digest=${b.digest}`, { method: 'POST', ...chunked(b.bytes, [1, 400]) });
    await expectCreated(t, res, 'repo', b);
  });

  it('streamed PATCHes, then a PUT with the last bytes', async () => {
    const t = guardedApp();
    const b = randomBlob(1000);
    const location = await startUpload(t);
    const first = await t.request(location, { method: 'PATCH', ...chunked(b.bytes.subarray(0, 600), [100, 300]) });
    expect(first.status).toBe(202);
    expect(first.headers.get('range')).toBe('0-599');
    const res = await t.request(withQuery(location, 'digest', b.digest), { method: 'PUT', ...chunked(b.bytes.subarray(600), [1]) });
    await expectCreated(t, res, 'repo', b);
  });

  it('a streamed body that does not match the digest is 400 DIGEST_INVALID', async () => {
    const t = guardedApp();
    const b = randomBlob(100);
    const claimed = sha256('other');
    const res = await t.request(`/v2/repo/blobs/uploads/?digest=${claimed}`, { method: 'POST', ...chunked(b.bytes, [50]) });
    await expectOciError(res, { status: 400, code: 'DIGEST_INVALID' });
    await expectNotVisible(t, 'repo', claimed);
  });
});

describe('requests that declare bytes but carry none', () => {
  it.each([
    ['PATCH, no body', 'PATCH', undefined, { 'Content-Range': '0-9' }],
    ['PATCH, an empty body', 'PATCH', new Uint8Array(0), { 'Content-Range': '0-9' }],
    ['PATCH, Content-Length only', 'PATCH', undefined, { 'Content-Length': '10' }],
    ['PUT, no body', 'PUT', undefined, { 'Content-Range': '0-9' }],
    ['PUT, an empty body', 'PUT', new Uint8Array(0), { 'Content-Range': '0-9' }],
  ] as Array<[string, string, Uint8Array | undefined, Record<string, string>]>)('%s is 400 SIZE_INVALID', async (_, method, body, headers) => {
    const t = guardedApp();
    const b = randomBlob(10);
    const location = await startUpload(t);
    const target = method === 'PUT' ? withQuery(location, 'digest', b.digest) : location;
    await expectOciError(await t.request(target, { method, body: body && new Uint8Array(body), headers }), { status: 400, code: 'SIZE_INVALID', message: /declared 10/ });
    await expectNotVisible(t, 'repo', b.digest);
    if (method === 'PATCH') expect((await t.request(location)).headers.get('range')).toBe('0-0');
  });
});

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

describe('completing with a wrong or missing digest', () => {
  it.each([
    ['the whole body in the PUT', [] as number[][], true],
    ['one streamed PATCH', [[0, 50]], false],
    ['one chunk plus a PUT body', [[0, 20]], true],
    ['several chunks', [[0, 20], [20, 50]], false],
  ])('a digest mismatch after %s is 400 DIGEST_INVALID; the blob is not visible and the upload is gone', async (_, chunks, putBody) => {
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
    await expectUploadGone(t, location);
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

describe('cross-repository mount: POST ?mount=&from=', () => {
  it('mounting from a repository that has the blob is 201 with Location and Docker-Content-Digest', async () => {
    const t = guardedApp();
    const b = randomBlob(42);
    await t.pushBlob('source/repo', b);
    const res = await t.request(`/v2/target/blobs/uploads/?mount=${b.digest}&from=${encodeURIComponent('source/repo')}`, {
      method: 'POST',
      headers: { 'Content-Length': '0' },
    });
    await expectCreated(t, res, 'target', b);
    // Each repository holds its own link: deleting one leaves the other.
    expect((await t.request(`/v2/target/blobs/${b.digest}`, { method: 'DELETE' })).status).toBe(202);
    expect((await t.request(`/v2/source/repo/blobs/${b.digest}`)).status).toBe(200);
  });

  it('mounting a blob the target already has is 201', async () => {
    const t = guardedApp();
    const b = randomBlob(10);
    await t.pushBlob('source', b);
    await t.pushBlob('target', b);
    const res = await t.request(`/v2/target/blobs/uploads/?mount=${b.digest}&from=source`, { method: 'POST' });
    await expectCreated(t, res, 'target', b);
  });

  it.each([
    ['a repository lacking the blob', 'empty'],
    ['a repository that does not exist', 'nowhere'],
  ])('mounting from %s is 202 with an upload session', async (_, from) => {
    const t = guardedApp();
    const b = randomBlob(42);
    await t.pushBlob('source', b);
    await t.pushBlob('empty', randomBlob(5));
    const res = await t.request(`/v2/target/blobs/uploads/?mount=${b.digest}&from=${from}`, { method: 'POST' });
    expect(res.status).toBe(202);
    const location = res.headers.get('location')!;
    expect(location.startsWith('/v2/target/blobs/uploads/')).toBe(true);
    await expectNotVisible(t, 'target', b.digest);
    await expectCreated(t, await finish(t, location, b.digest, b.bytes), 'target', b);
  });

  it('mounting an unknown digest without from is 202 with an upload session', async () => {
    const t = guardedApp();
    const res = await t.request(`/v2/target/blobs/uploads/?mount=${sha256('hello world')}`, { method: 'POST' });
    expect(res.status).toBe(202);
    expect(res.headers.get('location')!.startsWith('/v2/target/blobs/uploads/')).toBe(true);
  });

  it('mounting without from is 202 even when another repository has the blob (nothing is revealed across repositories)', async () => {
    const t = guardedApp();
    const b = randomBlob(10);
    await t.pushBlob('source', b);
    const res = await t.request(`/v2/target/blobs/uploads/?mount=${b.digest}`, { method: 'POST' });
    expect(res.status).toBe(202);
    expect(res.headers.get('location')!.startsWith('/v2/target/blobs/uploads/')).toBe(true);
    await expectNotVisible(t, 'target', b.digest);
  });

  it.each([
    ['an invalid mount digest', 'mount=sha256:zz&from=source', 400, 'DIGEST_INVALID'],
    ['an invalid from name', `mount=${sha256('x')}&from=Not_Valid`, 400, 'NAME_INVALID'],
  ])('%s is refused', async (_, query, status, code) => {
    const t = guardedApp();
    await expectOciError(await t.request(`/v2/target/blobs/uploads/?${query}`, { method: 'POST' }), { status, code });
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
