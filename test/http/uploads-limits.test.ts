import { describe, expect, it } from 'vitest';
import { listCandidates, listReferences } from '../../src/core/gc/references.js';
import { MAX_UPLOAD_PARTS } from '../../src/core/registry/uploads.js';
import { sha256 } from '../support/images.js';
import { testApp } from '../support/app.js';
import { expectOciError } from '../support/oci-errors.js';
import { emptyStreamBody, finish, partObjects, patch, patchBytes, startUpload, withQuery } from '../support/uploads.js';

describe('upload limits and server faults', () => {
  it(`refuses chunk ${MAX_UPLOAD_PARTS + 1} with 400 naming the limit, and the upload still completes`, async () => {
    const t = testApp();
    const location = await startUpload(t);
    const byte = new Uint8Array([7]);
    for (let i = 0; i < MAX_UPLOAD_PARTS; i++) expect((await patch(t, location, byte)).status).toBe(202);
    const refused = await patch(t, location, byte);
    const entry = await expectOciError(refused, { status: 400, code: 'BLOB_UPLOAD_INVALID' });
    expect(entry?.message).toContain(String(MAX_UPLOAD_PARTS));
    const all = new Uint8Array(MAX_UPLOAD_PARTS).fill(7);
    expect((await finish(t, location, sha256(all))).status).toBe(201);
  });

  // On Node every request has a body stream, even an empty one: an empty body must add no chunk.
  it.each([
    ['an empty stream', () => emptyStreamBody()],
    ['an empty buffer', (): RequestInit => ({ body: new Uint8Array(0), headers: { 'Content-Length': '0' } })],
    ['no body at all', (): RequestInit => ({})],
  ])(`an upload of exactly ${MAX_UPLOAD_PARTS} chunks completes with a final PUT of %s`, async (_, init) => {
    const t = testApp();
    const location = await startUpload(t);
    await patchBytes(t, location, MAX_UPLOAD_PARTS);
    const all = new Uint8Array(MAX_UPLOAD_PARTS).fill(7);
    const res = await t.request(withQuery(location, 'digest', sha256(all)), { method: 'PUT', ...init() });
    expect(res.status, await res.clone().text()).toBe(201);
    expect(Buffer.from(await (await t.request(`/v2/repo/blobs/${sha256(all)}`)).arrayBuffer()).equals(Buffer.from(all))).toBe(true);
    expect(partObjects(t, location)).toEqual([]);
  });

  it(`a PATCH with an empty body at ${MAX_UPLOAD_PARTS} chunks is 202 and changes nothing`, async () => {
    const t = testApp();
    const location = await startUpload(t);
    await patchBytes(t, location, MAX_UPLOAD_PARTS);
    for (const init of [emptyStreamBody(), { body: new Uint8Array(0) }]) {
      const res = await t.request(location, { method: 'PATCH', ...init });
      expect(res.status, await res.clone().text()).toBe(202);
      expect(res.headers.get('range')).toBe(`0-${MAX_UPLOAD_PARTS - 1}`);
    }
    expect(partObjects(t, location)).toHaveLength(MAX_UPLOAD_PARTS);
    expect((await finish(t, location, sha256(new Uint8Array(MAX_UPLOAD_PARTS).fill(7)))).status).toBe(201);
  });

  it(`a final PUT with the last bytes completes an upload of ${MAX_UPLOAD_PARTS} chunks (its body is not stored as a chunk)`, async () => {
    const t = testApp();
    const location = await startUpload(t);
    await patchBytes(t, location, MAX_UPLOAD_PARTS);
    const all = new Uint8Array(MAX_UPLOAD_PARTS + 3).fill(7);
    all.set([1, 2, 3], MAX_UPLOAD_PARTS);
    const res = await finish(t, location, sha256(all), new Uint8Array([1, 2, 3]));
    expect(res.status, await res.clone().text()).toBe(201);
  });

  it('answers a stored part that vanished before commit with 500, not as the client’s fault', async () => {
    const t = testApp();
    const location = await startUpload(t);
    expect((await patch(t, location, new Uint8Array([1, 2]))).status).toBe(202);
    expect((await patch(t, location, new Uint8Array([3]))).status).toBe(202);
    for (const key of [...t.store.objects.keys()]) if (key.startsWith('uploads/')) t.store.objects.delete(key);
    const res = await finish(t, location, sha256(new Uint8Array([1, 2, 3])));
    expect(res.status).toBe(500);
    expect(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]!.code).toBe('UNKNOWN');
  });
});

describe('references of blob links', () => {
  /** The repositories whose link holds the blob (core/gc/references.ts). */
  const linked = async (t: ReturnType<typeof testApp>, digest: string) => {
    const found: string[] = [];
    for await (const r of listReferences({ index: t.index }, digest)) if (r.kind === 'link') found.push(r.repository);
    return found;
  };

  it('one reference per repository linking a blob, however often it is pushed; an unlink takes its own away', async () => {
    const t = testApp();
    const blob = { digest: sha256('abc'), size: 3, bytes: Buffer.from('abc'), mediaType: 'application/octet-stream' };
    await t.pushBlob('a', blob);
    await t.pushBlob('a', blob);
    await t.pushBlob('b', blob);
    expect(await linked(t, blob.digest)).toEqual(['a', 'b']);
    expect((await t.request(`/v2/a/blobs/${blob.digest}`, { method: 'DELETE' })).status).toBe(202);
    expect(await linked(t, blob.digest)).toEqual(['b']);
    expect((await t.request(`/v2/b/blobs/${blob.digest}`, { method: 'DELETE' })).status).toBe(202);
    expect(await linked(t, blob.digest)).toEqual([]);
    expect((await listCandidates({ index: t.index }, { limit: 10 })).map((c) => c.digest)).toContain(blob.digest);
  });

  it.each([
    ['the reference write', 'put', (key: { pk: string }) => key.pk.startsWith('ref#')],
    ['the link write', 'putIfAbsent', (key: { pk: string }) => key.pk === 'blob#a'],
  ] as const)('err high, never low, when %s fails and the push is retried', async (_, method, matches) => {
    const t = testApp();
    const blob = { digest: sha256('xyz'), size: 3, bytes: Buffer.from('xyz'), mediaType: 'application/octet-stream' };
    const original = t.index[method].bind(t.index) as (...args: unknown[]) => Promise<unknown>;
    let failed = false;
    (t.index as unknown as Record<string, unknown>)[method] = async (...args: unknown[]) => {
      if (!failed && matches(args[0] as { pk: string })) {
        failed = true;
        throw new Error('index unavailable');
      }
      return original(...args);
    };
    const first = await t.request(`/v2/a/blobs/uploads/?digest=${blob.digest}`, { method: 'POST', body: new Uint8Array(blob.bytes) });
    expect(first.status).toBe(500);
    expect(failed).toBe(true);
    await t.pushBlob('a', blob);
    // The repository links the blob through a reference: without one a GC would delete bytes in use.
    expect(await linked(t, blob.digest)).toEqual(['a']);
    expect((await t.index.get({ pk: 'blob#a', sk: blob.digest }))?.value).toMatchObject({ ref: expect.any(Number) });
  });
});
