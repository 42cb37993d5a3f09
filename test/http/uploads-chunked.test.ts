import { describe, expect, it } from 'vitest';
import { randomBlob, sha256 } from '../support/images.js';
import { expectOciError, failOnServerErrors, guardedApp } from '../support/oci-errors.js';
import { expectCreated, expectNotVisible, finish, patch, startUpload, withQuery } from '../support/uploads.js';

/**
 * Uploads sent in pieces (spec.md#pushing-a-blob-in-chunks): streamed PATCHes without
 * Content-Range, chunked PATCHes with it, bodies of unknown length, and bodies that do not
 * match what their headers declare.
 */

failOnServerErrors();

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

  it.each([['abc'], ['10-5'], ['-5'], ['0-'], ['bytes */42']])('a malformed Content-Range %s is 400 (416 is for a chunk at the wrong offset)', async (range) => {
    const t = guardedApp();
    const location = await startUpload(t);
    await expectOciError(await patch(t, location, randomBlob(5).bytes, range), { status: 400, code: 'BLOB_UPLOAD_INVALID' });
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
