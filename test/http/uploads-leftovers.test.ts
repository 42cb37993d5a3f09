import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { nodeHash } from '../../src/adapters/crypto/node-hash.js';
import { FsBlobStore } from '../../src/adapters/local/fs-blob-store.js';
import { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';
import { MemoryMetaIndex } from '../../src/adapters/memory/meta-index.js';
import { reclaimUploads } from '../../src/core/registry/leftovers.js';
import { createRegistry } from '../../src/core/registry/registry.js';
import { createApp } from '../../src/http/app.js';
import type { BlobStore } from '../../src/ports/blob-store.js';
import { TestClock } from '../support/clock.js';
import { randomBlob } from '../support/images.js';
import { expectCreated, expectUploadGone, finish, gate, intercept, never, patch, startUpload, until, uploadIdOf } from '../support/uploads.js';

/**
 * reclaimUploads (core/registry/leftovers.ts): the chunks of uploads whose state is gone
 * (expired, cancelled or committed by a process that died before deleting them) are deleted
 * once older than the grace period; a live upload's chunks never are, an append in flight
 * included. On the memory store and on the fs store.
 */

const MINUTE = 60_000;
const TTL = 60 * MINUTE;

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

const STORES: Array<[string, (clock: TestClock) => Promise<BlobStore>]> = [
  ['memory', async (clock) => new MemoryBlobStore(clock)],
  [
    'fs',
    async () => {
      const dir = await mkdtemp(join(tmpdir(), 'outpost-leftovers-'));
      dirs.push(dir);
      return new FsBlobStore(dir);
    },
  ],
];

describe.each(STORES)('reclaimUploads on the %s store', (_, makeStore) => {
  /** An app over the store; the clock starts at the wall clock, since the fs store dates files by it. */
  async function setup() {
    const clock = new TestClock(Date.now());
    const store = await makeStore(clock);
    const index = new MemoryMetaIndex(clock);
    const registry = createRegistry({ store, index, hash: nodeHash, clock, options: { uploadTtlMs: TTL } });
    const app = createApp({ registry });
    const t = { store, index, clock, registry, request: (path: string, init?: RequestInit) => app.request(path, init) };
    const reclaim = (olderThanMs: number) => reclaimUploads({ store, index, clock }, { olderThanMs });
    return { ...t, reclaim };
  }

  async function keysUnder(store: BlobStore, prefix: string): Promise<string[]> {
    const out: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await store.list(prefix, { after, limit: 1000 });
      out.push(...page.keys.map((k) => k.key));
      if (!page.next) return out;
      after = page.next;
    }
  }

  /** An upload with `chunks` chunks of 5 bytes; returns its Location. */
  async function upload(t: Awaited<ReturnType<typeof setup>>, chunks: number): Promise<string> {
    const location = await startUpload(t);
    for (let i = 0; i < chunks; i++) expect((await patch(t, location, randomBlob(5).bytes, `${i * 5}-${i * 5 + 4}`)).status).toBe(202);
    return location;
  }

  it('deletes the chunks of expired and of committed-but-not-cleaned uploads, and keeps a live upload', async () => {
    const t = await setup();
    const expired = await upload(t, 2);
    t.clock.advance(30 * MINUTE);
    const live = await upload(t, 2);

    // A commit whose process died after the commit point, before it deleted the chunks.
    const b = randomBlob(10);
    const committed = await startUpload(t);
    expect((await patch(t, committed, b.bytes.subarray(0, 5))).status).toBe(202);
    expect((await patch(t, committed, b.bytes.subarray(5))).status).toBe(202);
    let dead = false;
    const restore = intercept(t.store, 'delete', (original, ...args) => {
      if (String(args[0]).startsWith('uploads/')) {
        dead = true;
        return never();
      }
      return (original as (...a: unknown[]) => unknown)(...args);
    });
    void finish(t, committed, b.digest);
    await until(() => dead, 'the commit to reach its clean-up');
    restore();
    await expectUploadGone(t, committed);
    expect((await t.request(`/v2/repo/blobs/${b.digest}`)).status).toBe(200);

    t.clock.advance(31 * MINUTE);
    await expectUploadGone(t, expired);
    const report = await t.reclaim(10 * MINUTE);
    expect(report).toMatchObject({ deleted: 4, kept: 2 });
    expect(await keysUnder(t.store, `uploads/${uploadIdOf(expired)}/`)).toEqual([]);
    expect(await keysUnder(t.store, `uploads/${uploadIdOf(committed)}/`)).toEqual([]);
    expect(await keysUnder(t.store, `uploads/${uploadIdOf(live)}/`)).toHaveLength(2);
    // The live upload is untouched and completes.
    expect((await t.request(live)).headers.get('range')).toBe('0-9');
    expect((await t.reclaim(0)).deleted).toBe(0);
  });

  it('never deletes the chunk of an append in flight, however small the grace period', async () => {
    const t = await setup();
    const b = randomBlob(10);
    const location = await upload(t, 0);
    expect((await patch(t, location, b.bytes.subarray(0, 5), '0-4')).status).toBe(202);
    // The second chunk is stored, its part item not yet written.
    const held = gate();
    intercept(t.index, 'putIfAbsent', async (original, ...args) => {
      if ((args[0] as { pk: string }).pk.startsWith('upload#')) await held.wait();
      return (original as (...a: unknown[]) => unknown)(...args);
    });
    const inFlight = patch(t, location, b.bytes.subarray(5), '5-9');
    await until(() => held.arrived === 1, 'the append to store its chunk');
    t.clock.advance(TTL - MINUTE);
    expect(await t.reclaim(0)).toMatchObject({ deleted: 0, kept: 2 });
    held.open();
    expect((await inFlight).status).toBe(202);
    await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
  });

  it('keeps the chunks of a gone upload that are younger than the grace period, or whose age the store does not report', async () => {
    const t = await setup();
    const gone = await upload(t, 2);
    expect((await t.request(gone, { method: 'DELETE' })).status).toBe(204);
    // A cancel whose clean-up never ran: put the chunks back as it would have left them.
    await t.store.put(`uploads/${uploadIdOf(gone)}/0-0123456789abcdef`, new Blob([new Uint8Array(5)]).stream());
    t.clock.advance(5 * MINUTE);
    expect(await t.reclaim(10 * MINUTE)).toMatchObject({ deleted: 0, kept: 1 });
    const restore = intercept(t.store, 'list', async (original, ...args) => {
      const page = await (original as (...a: unknown[]) => Promise<{ keys: Array<{ lastModified?: number }> }>)(...args);
      return { ...page, keys: page.keys.map(({ lastModified: _, ...rest }) => rest) };
    });
    expect(await t.reclaim(0)).toMatchObject({ deleted: 0, kept: 1 });
    restore();
    expect(await t.reclaim(0)).toMatchObject({ deleted: 1, kept: 0 });
  });

  it('pages through the listing, and leaves keys it did not write alone', async () => {
    const t = await setup();
    const gone = [await upload(t, 2), await upload(t, 3), await upload(t, 1)];
    const live = await upload(t, 2);
    for (const location of gone) expect((await t.request(location, { method: 'DELETE' })).status).toBe(204);
    // Chunks a cancel's clean-up did not reach, between and after the live ones.
    for (const location of gone) {
      await t.store.put(`uploads/${uploadIdOf(location)}/0-00000000000000aa`, new Blob([new Uint8Array(3)]).stream());
      await t.store.put(`uploads/${uploadIdOf(location)}/1-00000000000000bb`, new Blob([new Uint8Array(3)]).stream());
    }
    await t.store.put('uploads/stray', new Blob([new Uint8Array(1)]).stream());
    intercept(t.store, 'list', (original, ...args) => {
      const [prefix, options] = args as [string, { after?: string; limit: number }];
      return (original as (...a: unknown[]) => unknown)(prefix, { ...options, limit: Math.min(options.limit, 2) });
    });
    t.clock.advance(20 * MINUTE);
    expect(await t.reclaim(10 * MINUTE)).toMatchObject({ deleted: 6, kept: 3 });
    expect((await keysUnder(t.store, 'uploads/')).sort()).toEqual(
      [...(await keysUnder(t.store, `uploads/${uploadIdOf(live)}/`)), 'uploads/stray'].sort(),
    );
  });
});
