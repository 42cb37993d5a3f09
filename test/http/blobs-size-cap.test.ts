import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { nodeHash } from '../../src/adapters/crypto/node-hash.js';
import { FsBlobStore } from '../../src/adapters/local/fs-blob-store.js';
import { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';
import { MemoryMetaIndex } from '../../src/adapters/memory/meta-index.js';
import { DEFAULT_MAX_BLOB_BYTES } from '../../src/core/registry/context.js';
import { createRegistry } from '../../src/core/registry/registry.js';
import { createApp } from '../../src/http/app.js';
import type { BlobStore } from '../../src/ports/blob-store.js';
import { TestClock } from '../support/clock.js';
import { sha256 } from '../support/images.js';
import { expectOciError } from '../support/oci-errors.js';
import { finish, patch, startUpload, withQuery, type App } from '../support/uploads.js';

/**
 * The blob size cap (RegistryOptions.maxBlobBytes): a declared length above it is refused at
 * once, before any byte is stored, and a body of undeclared length is cut off as it passes it;
 * either way nothing becomes visible, in the repository or in the store. On the memory store
 * and on the file store (whose staging directory must stay empty too).
 */

const CAP = 1000;
const roots: string[] = [];
afterAll(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

const stores: Array<[string, () => { store: BlobStore; staged: () => string[] }]> = [
  ['memory', () => ({ store: new MemoryBlobStore(), staged: () => [] })],
  [
    'fs',
    () => {
      const root = mkdtempSync(join(tmpdir(), 'outpost-cap-'));
      roots.push(root);
      const staged = () => {
        try {
          return readdirSync(join(root, '.tmp'));
        } catch {
          return [];
        }
      };
      return { store: new FsBlobStore(root), staged };
    },
  ],
];

/** An app over a fresh store from `make`, with the cap `maxBlobBytes` (null: the default). */
function app(make: () => { store: BlobStore; staged: () => string[] }, maxBlobBytes: number | null = CAP) {
  const { store, staged } = make();
  const clock = new TestClock();
  const index = new MemoryMetaIndex(clock);
  const registry = createRegistry({ store, index, hash: nodeHash, clock, options: maxBlobBytes === null ? {} : { maxBlobBytes } });
  const hono = createApp({ registry });
  const request = (path: string, init?: RequestInit) => hono.request(path, init);
  const objects = async () => (await store.list('', { limit: 1000 })).keys.map((o) => o.key);
  // The upload helpers only send requests; they are typed for testApp(), whose store this app replaces.
  return { ...({ request } as unknown as App), request, objects, staged, store };
}

/** A body of `size` bytes in chunks of 100 that counts the chunks pulled from it; no length is declared. */
function streamed(size: number) {
  const state = { pulled: 0 };
  let sent = 0;
  const body = new ReadableStream<Uint8Array>(
    {
      pull(c) {
        if (sent >= size) return c.close();
        const n = Math.min(100, size - sent);
        sent += n;
        state.pulled++;
        c.enqueue(new Uint8Array(n).fill(9));
      },
    },
    { highWaterMark: 0 },
  );
  return { init: { body, duplex: 'half' } as RequestInit, state };
}

const tooLarge = { status: 413, code: 'SIZE_INVALID', message: `limit of ${CAP} bytes` };

describe.each(stores)('the blob size cap on the %s store', (_, make) => {
  it('refuses a monolithic push declaring more than the cap, reading nothing and storing nothing', async () => {
    const t = app(make);
    const bytes = new Uint8Array(CAP + 1).fill(1);
    for (const declared of [CAP + 1, 4e12, 999_999_999_999_999]) {
      const body = streamed(CAP + 1);
      const res = await t.request(`/v2/repo/blobs/uploads/?digest=${sha256(bytes)}`, {
        method: 'POST',
        ...body.init,
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(declared) },
      });
      await expectOciError(res, tooLarge);
      expect(body.state.pulled, `declared ${declared}`).toBeLessThanOrEqual(1);
    }
    await expectOciError(await t.request(`/v2/repo/blobs/${sha256(bytes)}`), { status: 404, code: 'BLOB_UNKNOWN' });
    expect(await t.objects()).toEqual([]);
    expect(t.staged()).toEqual([]);
  });

  it('cuts off a monolithic push of undeclared length as it passes the cap; nothing becomes visible', async () => {
    const t = app(make);
    const bytes = new Uint8Array(3 * CAP).fill(9);
    const body = streamed(3 * CAP);
    const res = await t.request(`/v2/repo/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', ...body.init });
    await expectOciError(res, tooLarge);
    // It stopped reading at the cap (a chunk or two of 100 bytes past it at most).
    expect(body.state.pulled).toBeLessThanOrEqual(CAP / 100 + 2);
    await expectOciError(await t.request(`/v2/repo/blobs/${sha256(bytes)}`), { status: 404, code: 'BLOB_UNKNOWN' });
    expect(await t.objects()).toEqual([]);
    expect(t.staged()).toEqual([]);
  });

  it('takes a blob of exactly the cap, declared or not', async () => {
    const t = app(make);
    const bytes = new Uint8Array(CAP).fill(9);
    const declared = await t.request(`/v2/repo/blobs/uploads/?digest=${sha256(bytes)}`, {
      method: 'POST',
      body: bytes,
      headers: { 'Content-Length': String(CAP) },
    });
    expect(declared.status, await declared.text()).toBe(201);
    const undeclared = await t.request(`/v2/other/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', ...streamed(CAP).init });
    expect(undeclared.status, await undeclared.text()).toBe(201);
  });

  it('refuses a PUT-only upload and a PATCH declaring more than the cap; the session stays usable', async () => {
    const t = app(make);
    const bytes = new Uint8Array(CAP + 1).fill(2);
    const put = await startUpload(t);
    await expectOciError(await finish(t, put, sha256(bytes), bytes, { 'Content-Length': String(CAP + 1) }), tooLarge);

    const location = await startUpload(t);
    await expectOciError(await patch(t, location, bytes, undefined, { 'Content-Length': String(CAP + 1) }), tooLarge);
    await expectOciError(await patch(t, location, bytes, `0-${CAP}`), tooLarge);
    await expectOciError(await t.request(location, { method: 'PATCH', ...streamed(CAP + 1).init }), tooLarge);
    expect(await t.objects()).toEqual([]);
    expect(t.staged()).toEqual([]);
    // Nothing was appended: the session is at 0 and takes a chunk that fits.
    const status = await t.request(location);
    expect(status.status).toBe(204);
    expect(status.headers.get('range')).toBe('0-0');
    const fits = bytes.subarray(0, CAP);
    expect((await patch(t, location, fits, `0-${CAP - 1}`)).status).toBe(202);
    expect((await finish(t, location, sha256(fits))).status).toBe(201);
  });

  it('refuses at once the chunk that would take an upload past the cap; the upload stays as it was', async () => {
    const t = app(make);
    const bytes = new Uint8Array(CAP + 200).fill(3);
    const location = await startUpload(t);
    expect((await patch(t, location, bytes.subarray(0, 600), '0-599')).status).toBe(202);
    const before = await t.objects();
    // Declared by Content-Range, by Content-Length, or not at all (cut off at the room left).
    await expectOciError(await patch(t, location, bytes.subarray(600), `600-${bytes.length - 1}`), tooLarge);
    await expectOciError(await patch(t, location, bytes.subarray(600), undefined, { 'Content-Length': String(bytes.length - 600) }), tooLarge);
    await expectOciError(await t.request(location, { method: 'PATCH', ...streamed(bytes.length - 600).init }), tooLarge);
    await expectOciError(await finish(t, location, sha256(bytes), bytes.subarray(600), { 'Content-Range': `600-${bytes.length - 1}` }), tooLarge);
    await expectOciError(await t.request(withQuery(location, 'digest', sha256(bytes)), { method: 'PUT', ...streamed(bytes.length - 600).init }), tooLarge);
    await expectOciError(await t.request(`/v2/repo/blobs/${sha256(bytes)}`), { status: 404, code: 'BLOB_UNKNOWN' });
    expect(await t.objects()).toEqual(before);
    expect(t.staged()).toEqual([]);
    // Still at 600 bytes, and a chunk that fits completes it.
    const status = await t.request(location);
    expect(status.headers.get('range')).toBe('0-599');
    const whole = bytes.subarray(0, CAP);
    const done = await finish(t, location, sha256(whole), whole.subarray(600), { 'Content-Range': `600-${CAP - 1}` });
    expect(done.status, await done.text()).toBe(201);
  });
});

describe('the default blob size cap', () => {
  it(`is ${DEFAULT_MAX_BLOB_BYTES} bytes (64 GiB), and a declared 4e12 or 999,999,999,999,999 is refused at once`, async () => {
    expect(DEFAULT_MAX_BLOB_BYTES).toBe(64 * 1024 ** 3);
    const t = app(stores[0]![1], null);
    const digest = sha256('tiny');
    for (const declared of [4e12, 999_999_999_999_999, DEFAULT_MAX_BLOB_BYTES + 1]) {
      const started = Date.now();
      const res = await t.request(withQuery('/v2/repo/blobs/uploads/', 'digest', digest), {
        method: 'POST',
        body: new TextEncoder().encode('tiny'),
        headers: { 'Content-Length': String(declared) },
      });
      await expectOciError(res, { status: 413, code: 'SIZE_INVALID', message: `limit of ${DEFAULT_MAX_BLOB_BYTES} bytes` });
      expect(Date.now() - started).toBeLessThan(1000);
    }
    const location = await startUpload(t);
    await expectOciError(await patch(t, location, new Uint8Array(4), '0-3999999999999'), { status: 413, code: 'SIZE_INVALID' });
    expect(await t.objects()).toEqual([]);
  });
});
