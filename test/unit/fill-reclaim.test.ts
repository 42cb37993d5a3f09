import { describe, expect, it } from 'vitest';
import { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';
import { MemoryMetaIndex } from '../../src/adapters/memory/meta-index.js';
import { reclaimFills } from '../../src/core/mirror/fill-reclaim.js';
import type { FillState } from '../../src/core/mirror/fill-state.js';
import { parseDigest } from '../../src/core/oci/digest.js';
import { keys, objects } from '../../src/core/registry/keys.js';
import { streamOf } from '../../src/core/streams.js';
import type { Json } from '../../src/ports/meta-index.js';
import { TestClock } from '../support/clock.js';

/** Leftover fill parts (src/core/mirror/fill-reclaim.ts): what goes, what stays, and that a fill taken over later is whole. */

const HOUR = 60 * 60_000;
const D = parseDigest(`sha256:${'ab'.repeat(32)}`);

function subject() {
  const clock = new TestClock();
  const index = new MemoryMetaIndex(clock);
  const store = new MemoryBlobStore(clock);
  const ctx = { index, store, clock };
  const parts = () => [...store.objects.keys()].filter((k) => k.startsWith('fills/')).sort();
  const putPart = (offset: number, token: number) => store.put(objects.fillPart(D, offset, token), streamOf(new Uint8Array(8)), 8);
  /** A leader that stored two parts and then stopped: left `phase`, released or just gone. */
  async function leader(phase: FillState['phase'], release: boolean, ttl = 30_000) {
    const r = await index.acquireLease(keys.fill(D.value), 'leader', ttl);
    if (!r.acquired) throw new Error('not acquired');
    await putPart(0, r.lease.token);
    await putPart(8, r.lease.token);
    const state: FillState = { phase, token: r.lease.token, stored: 16, segments: [{ token: r.lease.token, start: 0, part: 8 }] };
    const lease = await index.updateLease(r.lease, state as unknown as Json, ttl);
    if (release) await index.releaseLease(lease!, state as unknown as Json);
    return lease!;
  }
  const reclaim = () => reclaimFills(ctx, { olderThanMs: HOUR, owner: 'reclaimer' });
  return { clock, index, store, parts, putPart, leader, reclaim };
}

describe('reclaiming fill parts', () => {
  it('deletes the parts a committed fill left, once they are old', async () => {
    const s = subject();
    await s.leader('committed', true);
    expect(await s.reclaim()).toEqual({ deleted: 0, kept: 2 });
    s.clock.advance(HOUR);
    expect(await s.reclaim()).toEqual({ deleted: 2, kept: 0 });
    expect(s.parts()).toEqual([]);
  });

  it('keeps the parts of a fill whose holder is live, however old they are', async () => {
    const s = subject();
    let lease = await s.leader('filling', false, HOUR);
    for (let i = 0; i < 8; i++) {
      s.clock.advance(HOUR / 4);
      lease = (await s.index.renewLease(lease, HOUR))!;
    }
    expect(await s.reclaim()).toEqual({ deleted: 0, kept: 2 });
  });

  it('keeps the parts of a fill abandoned recently, which the next request resumes from', async () => {
    const s = subject();
    await s.leader('filling', true);
    s.clock.advance(HOUR - 1);
    expect((await s.reclaim()).deleted).toBe(0);
    expect((await s.index.readLease<FillState & Json>(keys.fill(D.value)))?.state?.stored).toBe(16);
  });

  it('resets a fill abandoned long ago before deleting its parts, so a later leader starts from nothing', async () => {
    const s = subject();
    await s.leader('filling', false);
    s.clock.advance(2 * HOUR);
    expect(await s.reclaim()).toEqual({ deleted: 2, kept: 0 });
    const view = await s.index.readLease<FillState & Json>(keys.fill(D.value));
    expect(view?.state).toMatchObject({ phase: 'filling', stored: 0, segments: [] });
    // A leader that takes over now writes parts with a larger token, which a later pass keeps
    // while it holds the fill.
    const next = await s.index.acquireLease(keys.fill(D.value), 'next', 4 * HOUR);
    expect(next.acquired && next.lease.token).toBeGreaterThan(view!.token - 1);
    if (next.acquired) await s.putPart(0, next.lease.token);
    s.clock.advance(2 * HOUR);
    expect((await s.reclaim()).deleted).toBe(0);
    expect(s.parts()).toHaveLength(1);
  });

  it('deletes old parts that belong to no fill item at all', async () => {
    const s = subject();
    await s.putPart(0, 3);
    s.clock.advance(2 * HOUR);
    expect(await s.reclaim()).toEqual({ deleted: 1, kept: 0 });
  });
});
