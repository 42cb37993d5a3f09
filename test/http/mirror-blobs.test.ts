import { describe, expect, it } from 'vitest';
import { errorCode } from '../support/app.js';
import { image, randomBlob } from '../support/images.js';
import { detach, detachingStore, mirrorTest } from '../support/mirror.js';
import { keys } from '../../src/core/registry/keys.js';
import { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';

async function pull(t: { request: (p: string, i?: RequestInit) => Response | Promise<Response> }, path: string, init?: RequestInit) {
  const res = await t.request(path, init);
  try {
    const body = Buffer.from(await res.arrayBuffer());
    return { status: res.status, headers: res.headers, body, aborted: false };
  } catch {
    return { status: res.status, headers: res.headers, body: Buffer.alloc(0), aborted: true };
  }
}

/** The fake upstream with one image whose layers are `sizes` bytes, its manifest pulled (vouching for the layers). */
async function seeded(sizes: number[], options: Parameters<typeof mirrorTest>[0] = {}) {
  const t = mirrorTest(options);
  const img = image({ layers: sizes });
  t.up.addImage('library/app', 'v1', img);
  for (const inst of t.instances) await (await inst.request('/v2/up/library/app/manifests/v1')).arrayBuffer();
  return { t, img, layer: img.layers[0]! };
}

describe('mirrored blobs: fills', () => {
  it('serves a blob it never had, verified, and then from the cache', async () => {
    const { t, layer } = await seeded([300_000]);
    const first = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(first.status).toBe(200);
    expect(first.headers.get('Content-Length')).toBe(String(layer.size));
    expect(first.body.equals(layer.bytes)).toBe(true);
    const again = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(again.body.equals(layer.bytes)).toBe(true);
    expect(t.blobGets(layer.digest)).toHaveLength(1);
    // Parts are removed once composed.
    expect((await t.store.list('fills/', { limit: 100 })).keys).toHaveLength(0);
  });

  it('exactly one upstream download for 24 concurrent pulls over three instances', async () => {
    const { t, layer } = await seeded([1_000_000], { instances: 3 });
    t.up.fault({ kind: 'slow', chunkBytes: 32 * 1024, delayMs: 2, match: { path: '/blobs/' } });
    const results = await Promise.all(
      Array.from({ length: 24 }, (_, i) => pull(t.instances[i % 3]!, `/v2/up/library/app/blobs/${layer.digest}`)),
    );
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.aborted).toBe(false);
      expect(r.body.equals(layer.bytes)).toBe(true);
    }
    expect(t.blobGets(layer.digest)).toHaveLength(1);
    const led = t.instances.reduce((n, i) => n + i.metrics.get('outpost_fills_led_total'), 0);
    expect(led).toBe(1);
    // The log says who led, from which byte, and that it committed: one line each.
    const events = t.fillLog.filter((e) => e.digest === layer.digest);
    expect(events.map((e) => [e.level, e.msg])).toEqual([
      ['info', 'fill.lead'],
      ['info', 'fill.commit'],
    ]);
    expect(events[0]).toMatchObject({ upstream: 'up', repository: 'library/app', from: 0, token: expect.any(Number) });
    expect(events[1]).toMatchObject({ instance: events[0]!.instance, bytes: layer.size, released: true });
  });

  it('wrong bytes from the upstream: the response is aborted, nothing is committed, the next pull refills', async () => {
    const { t, layer } = await seeded([200_000]);
    t.up.fault({ kind: 'wrong-bytes', match: { path: '/blobs/' } });
    const bad = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(bad.aborted || bad.status >= 500).toBe(true);
    expect(bad.body.equals(layer.bytes)).toBe(false);
    expect(await t.store.stat(`blobs/sha256/${layer.digest.slice(7, 9)}/${layer.digest.slice(7)}`)).toBeUndefined();
    expect(t.fillLog.find((e) => e.msg === 'fill.fail')).toMatchObject({ level: 'warn', digest: layer.digest, kind: 'UPSTREAM_INVALID', received: layer.size });
    const good = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(good.status).toBe(200);
    expect(good.body.equals(layer.bytes)).toBe(true);
  });

  it('a stream that breaks off is resumed with a Range request: no byte downloaded twice', async () => {
    const { t, layer } = await seeded([500_000]);
    t.up.fault({ kind: 'disconnect', afterBytes: 200_000, match: { path: '/blobs/' } });
    const res = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(res.status).toBe(200);
    expect(res.body.equals(layer.bytes)).toBe(true);
    const gets = t.blobGets(layer.digest);
    expect(gets).toHaveLength(2);
    expect(gets[1]!.headers.range).toMatch(/^bytes=\d+-/);
    expect(t.metrics.get('outpost_upstream_bytes_total', { upstream: 'up' })).toBe(layer.size);
    const resumed = t.fillLog.filter((e) => e.msg === 'fill.resume');
    expect(resumed).toHaveLength(1);
    expect(resumed[0]).toMatchObject({ level: 'warn', digest: layer.digest, why: 'broke off', from: Number(/bytes=(\d+)-/.exec(gets[1]!.headers.range!)![1]) });
  });

  it('truncation (a clean early end) is resumed with Range, and never served short', async () => {
    const { t, layer } = await seeded([300_000]);
    t.up.fault({ kind: 'truncate', afterBytes: 100_000, match: { path: '/blobs/' }, times: Infinity });
    const resumed = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(resumed.body.equals(layer.bytes)).toBe(true);
    expect(t.blobGets(layer.digest).map((r) => r.headers.range)).toEqual([undefined, 'bytes=100000-', 'bytes=200000-']);
    // A body shorter than its Content-Length errors (never ends cleanly): logged as a break.
    expect(t.fillLog.filter((e) => e.msg === 'fill.resume').map((e) => [e.why, e.from, e.cause])).toEqual([
      ['broke off', 100_000, expect.stringMatching(/body ended after 100000 of 300000 bytes/)],
      ['broke off', 200_000, expect.stringMatching(/body ended after 100000 of 200000 bytes/)],
    ]);

    // An upstream that truncates and ignores Range never completes: the client sees an abort.
    const other = await seeded([300_000]);
    other.t.up.fault({ kind: 'ignore-range', times: Infinity });
    other.t.up.fault({ kind: 'truncate', afterBytes: 100_000, match: { path: '/blobs/' }, times: Infinity });
    const short = await pull(other.t, `/v2/up/library/app/blobs/${other.layer.digest}`);
    expect(short.aborted || short.status >= 500).toBe(true);
    expect(short.body.byteLength).toBeLessThan(other.layer.size);
  });

  it('a new leader takes over an expired fill and resumes from the stored parts', async () => {
    const { t, layer } = await seeded([400_000], { instances: 2, partBytes: 64 * 1024 });
    // Instance 0 leads and stalls after 200 KB (three parts stored); its lease then expires.
    t.up.fault({ kind: 'stall', afterBytes: 200_000, match: { path: '/blobs/' } });
    const stalled = t.instances[0]!.request(`/v2/up/library/app/blobs/${layer.digest}`);
    const res0 = await stalled;
    const reader = res0.body!.getReader();
    let got = 0;
    while (got < 64 * 1024) got += (await reader.read()).value!.byteLength;
    await new Promise((r) => setTimeout(r, 50));
    t.clock.advance(31_000);
    const res = await pull(t.instances[1]!, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(res.status).toBe(200);
    expect(res.body.equals(layer.bytes)).toBe(true);
    expect(t.instances[1]!.metrics.get('outpost_fill_takeovers_total')).toBe(1);
    // The successor's lead line says where it resumed.
    const leads = t.fillLog.filter((e) => e.msg === 'fill.lead');
    expect(leads.map((e) => e.instance)).toEqual(['i0', 'i1']);
    expect(leads[1]!.from).toBeGreaterThanOrEqual(3 * 64 * 1024);
    expect(leads[1]!.token).toBeGreaterThan(leads[0]!.token as number);
    const gets = t.blobGets(layer.digest);
    expect(gets).toHaveLength(2);
    const resumedAt = Number(/bytes=(\d+)-/.exec(gets[1]!.headers.range ?? '')![1]);
    expect(resumedAt).toBeGreaterThanOrEqual(3 * 64 * 1024);
    await reader.cancel();
  });

  it('a stopping instance hands its fills over: the lease is released with the stored parts, and another resumes at once', async () => {
    const { t, img, layer } = await seeded([400_000, 100_000], { instances: 2, partBytes: 64 * 1024 });
    // Instance 0 leads, its client goes away, and the upstream stalls after 200 KB (three parts stored).
    t.up.fault({ kind: 'stall', afterBytes: 200_000, match: { path: `/blobs/${layer.digest}` } });
    const res0 = await t.instances[0]!.request(`/v2/up/library/app/blobs/${layer.digest}`);
    const reader = res0.body!.getReader();
    let got = 0;
    while (got < 64 * 1024) got += (await reader.read()).value!.byteLength;
    await reader.cancel();
    await new Promise((r) => setTimeout(r, 50));
    // The stalled body is let go: abandon() returns although the upstream never sends the rest.
    await t.instances[0]!.registry.mirror.fills.abandon();
    const lease = await t.index.readLease<{ phase: string; stored: number }>(keys.fill(layer.digest));
    expect(lease?.holder).toBeUndefined();
    expect(lease?.state).toMatchObject({ phase: 'filling', stored: 3 * 64 * 1024 });
    // No clock advance: the successor does not wait for a lease to expire.
    const res = await pull(t.instances[1]!, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(res.status).toBe(200);
    expect(res.body.equals(layer.bytes)).toBe(true);
    expect(t.instances[1]!.metrics.get('outpost_fill_takeovers_total')).toBe(1);
    const gets = t.blobGets(layer.digest);
    expect(gets).toHaveLength(2);
    expect(gets[1]!.headers.range).toBe(`bytes=${3 * 64 * 1024}-`);
    expect(t.fillLog.filter((e) => e.msg === 'fill.fail')).toEqual([expect.objectContaining({ instance: 'i0', message: 'this instance is stopping; try again' })]);
    expect(t.fillLog.filter((e) => e.msg === 'fill.resume')).toEqual([]);
    // The stopping instance leads no new fill: its (drained) requests are answered 503.
    const refused = await t.instances[0]!.request(`/v2/up/library/app/blobs/${img.layers[1]!.digest}`);
    expect(refused.status).toBe(503);
    expect(await errorCode(refused)).toBe('UNAVAILABLE');
  });

  it('a stopping instance lets a verified fill finish its commit', async () => {
    const { MemoryBlobStore } = await import('../../src/adapters/memory/blob-store.js');
    const inner = new MemoryBlobStore();
    let composing: (() => void) | undefined;
    const store = Object.assign(Object.create(inner) as typeof inner, {
      compose: async (parts: string[], to: string) => {
        await new Promise<void>((r) => (composing = r));
        return inner.compose!(parts, to);
      },
    });
    const { t, layer } = await seeded([300_000], { store });
    // Its client has every byte once they are verified; the body ends with the commit.
    const first = pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    while (!composing) await new Promise((r) => setTimeout(r, 5));
    let abandoned = false;
    const abandoning = t.instances[0]!.registry.mirror.fills.abandon().then(() => (abandoned = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(abandoned).toBe(false);
    composing();
    await abandoning;
    expect((await first).body.equals(layer.bytes)).toBe(true);
    expect(await t.store.stat(`blobs/sha256/${layer.digest.slice(7, 9)}/${layer.digest.slice(7)}`)).toMatchObject({ size: layer.size });
    expect(t.fillLog.filter((e) => e.digest === layer.digest).map((e) => e.msg)).toEqual(['fill.lead', 'fill.commit']);
  });

  it('HEAD of an uncached blob answers from the upstream; a blob the upstream lacks is BLOB_UNKNOWN', async () => {
    const t = mirrorTest();
    const b = randomBlob(5000);
    t.up.addBlob('library/app', b.bytes);
    const head = await t.request(`/v2/up/library/app/blobs/${b.digest}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('Content-Length')).toBe('5000');
    const missing = await t.request(`/v2/up/library/app/blobs/sha256:${'0'.repeat(64)}`);
    expect(missing.status).toBe(404);
    expect(await errorCode(missing)).toBe('BLOB_UNKNOWN');
  });

  it('no cross-repository leak: a blob filled for A is served for B only when the upstream vouches for B', async () => {
    const t = mirrorTest();
    const secret = randomBlob(10_000);
    t.up.addBlob('private/a', secret.bytes);
    const a = await pull(t, `/v2/up/private/a/blobs/${secret.digest}`);
    expect(a.body.equals(secret.bytes)).toBe(true);
    const b = await t.request(`/v2/up/public/b/blobs/${secret.digest}`);
    expect(b.status).toBe(404);
    // Once the upstream has it in B too, B is served from the cache, without a second download.
    t.up.addBlob('public/b', secret.bytes);
    const b2 = await pull(t, `/v2/up/public/b/blobs/${secret.digest}`);
    expect(b2.body.equals(secret.bytes)).toBe(true);
    expect(t.blobGets(secret.digest)).toHaveLength(1);
  });

  it('a Range on an uncached blob is answered by a ranged upstream request, at once', async () => {
    const { t, layer } = await seeded([200_000]);
    const res = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`, { headers: { Range: 'bytes=1000-1999' } });
    expect(res.status).toBe(206);
    expect(res.headers.get('Content-Range')).toBe(`bytes 1000-1999/${layer.size}`);
    expect(res.body.equals(layer.bytes.subarray(1000, 2000))).toBe(true);
    // Also when the upstream ignores Range.
    t.up.fault({ kind: 'ignore-range' });
    const whole = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`, { headers: { Range: 'bytes=5000-5099' } });
    expect(whole.body.equals(layer.bytes.subarray(5000, 5100))).toBe(true);
  });

  it('a cached blob keeps Range support', async () => {
    const { t, layer } = await seeded([100_000]);
    await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    const res = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`, { headers: { Range: 'bytes=-10' } });
    expect(res.status).toBe(206);
    expect(res.body.equals(layer.bytes.subarray(layer.size - 10))).toBe(true);
  });

  it('an unreachable upstream with nothing cached is 503; rate-limited is 429 with Retry-After', async () => {
    const { t, layer } = await seeded([10_000]);
    t.up.fault({ kind: 'connection-error', times: Infinity, match: { path: '/blobs/' } });
    const down = await t.request(`/v2/up/library/app/blobs/${layer.digest}`);
    expect(down.status).toBe(503);
    expect(await errorCode(down)).toBe('UNAVAILABLE');
  });

  it('the fill survives its client: a client that goes away does not stop the download', async () => {
    const { t, layer } = await seeded([600_000]);
    t.up.fault({ kind: 'slow', chunkBytes: 32 * 1024, delayMs: 2, match: { path: '/blobs/' } });
    const res = await t.request(`/v2/up/library/app/blobs/${layer.digest}`);
    await res.body!.cancel();
    for (let i = 0; i < 200 && t.metrics.get('outpost_fills_led_total') === 1 && !(await t.store.stat(`blobs/sha256/${layer.digest.slice(7, 9)}/${layer.digest.slice(7)}`)); i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const cached = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(cached.body.equals(layer.bytes)).toBe(true);
    expect(t.blobGets(layer.digest)).toHaveLength(1);
  });

  it('a client that falls behind its fill catches up in reads spanning upstream chunks, at most 512 KiB each, every byte right', async () => {
    // One part for the whole blob: every byte stays in the leader's window until the end.
    const { t, layer } = await seeded([2_000_000], { partBytes: 4 * 1024 * 1024 });
    t.up.fault({ kind: 'slow', chunkBytes: 16 * 1024, delayMs: 1, match: { path: '/blobs/' } });
    const res = await t.request(`/v2/up/library/app/blobs/${layer.digest}`);
    const reader = res.body!.getReader();
    const chunks: Uint8Array[] = [];
    for (;;) {
      const next = await reader.read();
      if (next.done) break;
      chunks.push(next.value);
      // Behind the upstream for a while after the first read: the window fills meanwhile.
      if (chunks.length === 1) await new Promise((r) => setTimeout(r, 60));
    }
    expect(Buffer.concat(chunks).equals(layer.bytes)).toBe(true);
    const sizes = chunks.map((c) => c.byteLength);
    expect(Math.max(...sizes.slice(0, -1))).toBeGreaterThan(16 * 1024);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(512 * 1024);
    expect(t.blobGets(layer.digest)).toHaveLength(1);
  });
});

describe("the registry's blob size cap", () => {
  it('a mirrored blob larger than the cap is 403 DENIED naming the limit, before any download; smaller ones are filled', async () => {
    const { t, img } = await seeded([300_000, 50_000], { options: { maxBlobBytes: 100_000 } });
    const [big, small] = img.layers as [(typeof img.layers)[0], (typeof img.layers)[0]];
    const refused = await t.request(`/v2/up/library/app/blobs/${big.digest}`);
    expect(refused.status).toBe(403);
    expect(await refused.text()).toMatch(/limit of 100000 bytes/);
    expect(t.blobGets(big.digest)).toHaveLength(0);
    expect((await t.store.list('', { limit: 100 })).keys.map((k) => k.key).filter((k) => k.includes(big.digest.slice(7)))).toEqual([]);
    const served = await pull(t, `/v2/up/library/app/blobs/${small.digest}`);
    expect(served.status).toBe(200);
    expect(served.body.equals(small.bytes)).toBe(true);
  });
});

describe('buffers handed to a runtime', () => {
  it('a store and clients that detach the buffers they receive still get the right bytes', async () => {
    const store = detachingStore();
    const { t, layer } = await seeded([700_000], { store, partBytes: 64 * 1024 });
    t.up.fault({ kind: 'slow', chunkBytes: 16 * 1024, delayMs: 1, match: { path: '/blobs/' } });
    const read = async () => {
      const res = await t.request(`/v2/up/library/app/blobs/${layer.digest}`);
      const reader = res.body!.getReader();
      const got: Buffer[] = [];
      for (;;) {
        const next = await reader.read();
        if (next.done) break;
        got.push(Buffer.from(next.value));
        detach(next.value);
      }
      return Buffer.concat(got);
    };
    const results = await Promise.all([read(), read(), read()]);
    for (const r of results) expect(r.equals(layer.bytes)).toBe(true);
    expect((await pullCached(t, layer.digest)).equals(layer.bytes)).toBe(true);
  });
});

describe('part writes', () => {
  /** A memory store that records the length of every chunk a fill's part write hands it. */
  function recordingStore() {
    const inner = new MemoryBlobStore();
    const chunks: number[] = [];
    const store = Object.assign(Object.create(inner) as MemoryBlobStore, {
      put: (key: string, body: ReadableStream<Uint8Array>, size?: number) => {
        if (!key.startsWith('fills/')) return inner.put(key, body, size);
        const seen = body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({ transform: (c, out) => (chunks.push(c.byteLength), out.enqueue(c)) }));
        return inner.put(key, seen, size);
      },
    });
    return { store, chunks };
  }

  it.each([
    [true, 'are handed the upstream chunks themselves where the runtime keeps buffers (Node)'],
    [false, 'are handed copies gathered into pieces where it may detach them (workerd)'],
  ])('%s: part writes %s', async (keeps) => {
    const { store, chunks } = recordingStore();
    const { t, layer } = await seeded([300_000], { store, partBytes: 64 * 1024, runtimeKeepsBuffers: keeps });
    t.up.fault({ kind: 'slow', chunkBytes: 16 * 1024, delayMs: 0, match: { path: '/blobs/' } });
    const served = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(served.body.equals(layer.bytes)).toBe(true);
    expect((await pullCached(t, layer.digest)).equals(layer.bytes)).toBe(true);
    expect(chunks.reduce((a, b) => a + b, 0)).toBe(layer.size);
    // The upstream sent 16 KiB at a time; a copying write gathers a whole 64 KiB part into one piece.
    if (keeps) expect(Math.max(...chunks)).toBeLessThanOrEqual(16 * 1024);
    else expect(Math.max(...chunks)).toBe(64 * 1024);
  });
});

async function pullCached(t: ReturnType<typeof mirrorTest>, digest: string): Promise<Buffer> {
  return Buffer.from(await (await t.request(`/v2/up/library/app/blobs/${digest}`)).arrayBuffer());
}

describe('the fill memory budget', () => {
  it('fills beyond the budget wait for room, and all complete', async () => {
    const partBytes = 64 * 1024;
    const t = mirrorTest({ partBytes, fillMemoryBytes: 2 * partBytes });
    const img = image({ layers: [300_000, 300_000, 300_000] });
    t.up.addImage('library/app', 'v1', img);
    await (await t.request('/v2/up/library/app/manifests/v1')).arrayBuffer();
    t.up.fault({ kind: 'slow', chunkBytes: 32 * 1024, delayMs: 1, match: { path: '/blobs/' }, times: Infinity });
    const budget = (t.instances[0]!.registry.mirror.fills as unknown as { deps: { budget: { inUse: number } } }).deps.budget;
    let peak = 0;
    const watch = setInterval(() => (peak = Math.max(peak, budget.inUse)), 1);
    const results = await Promise.all(img.layers.map((l) => pull(t, `/v2/up/library/app/blobs/${l.digest}`)));
    clearInterval(watch);
    results.forEach((r, i) => expect(r.body.equals(img.layers[i]!.bytes)).toBe(true));
    expect(peak).toBeLessThanOrEqual(2 * partBytes);
    expect(budget.inUse).toBe(0);
  });
});

describe('a fill whose commit failed after every part was stored', () => {
  it('is finished by the next request from the stored parts, with no second download', async () => {
    const { MemoryBlobStore } = await import('../../src/adapters/memory/blob-store.js');
    const inner = new MemoryBlobStore();
    let failures = 1;
    const store = Object.assign(Object.create(inner) as typeof inner, {
      compose: async (parts: string[], to: string) => {
        if (failures-- > 0) throw new Error('injected: the store failed during compose');
        return inner.compose!(parts, to);
      },
    });
    const { t, layer } = await seeded([300_000], { store, partBytes: 64 * 1024 });
    const first = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    // The client had every verified byte before the commit failed.
    expect(first.body.equals(layer.bytes)).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    const second = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(second.body.equals(layer.bytes)).toBe(true);
    expect(t.blobGets(layer.digest)).toHaveLength(1);
    expect(await t.store.stat(`blobs/sha256/${layer.digest.slice(7, 9)}/${layer.digest.slice(7)}`)).toMatchObject({ size: layer.size });
  });
});

describe('a store or an index that fails for a moment during a fill', () => {
  /**
   * A memory index whose `method` fails `times` times, for the calls whose state `when` picks:
   * the conditional write lands first (or not, `landed`), and the caller hears only an error.
   */
  async function failing(method: 'updateLease' | 'releaseLease', landed: boolean, when: (state: unknown) => boolean = () => true, times = 1) {
    const { MemoryMetaIndex } = await import('../../src/adapters/memory/meta-index.js');
    const { TestClock } = await import('../support/clock.js');
    const inner = new MemoryMetaIndex(new TestClock());
    let failures = times;
    const call = (args: unknown[]) => (inner[method] as (...a: unknown[]) => Promise<unknown>).apply(inner, args);
    return Object.assign(Object.create(inner) as typeof inner, {
      [method]: async (...args: unknown[]) => {
        if (when(args[1]) && failures-- > 0) {
          if (landed) await call(args);
          throw new Error('injected: the index did not answer');
        }
        return call(args);
      },
    });
  }

  /** A memory store whose first `failures` writes of fill parts throw after reading some of the body. */
  async function flakyParts(failures: number) {
    const { MemoryBlobStore } = await import('../../src/adapters/memory/blob-store.js');
    const inner = new MemoryBlobStore();
    const puts: string[] = [];
    const store = Object.assign(Object.create(inner) as typeof inner, {
      put: async (key: string, body: ReadableStream<Uint8Array>, size?: number) => {
        if (key.startsWith('fills/')) puts.push(key);
        if (key.startsWith('fills/') && failures > 0) {
          failures--;
          await body.getReader().read();
          throw new Error('injected: the store failed during a part write');
        }
        return inner.put(key, body, size);
      },
    });
    return { store, puts };
  }

  it('a part write that fails once is made again from the window: one download, every byte right', async () => {
    // One part only (the blob is smaller than a part): before retries, its failed write made the
    // fill give up with nothing stored, and the next request downloaded the whole blob again.
    const { store, puts } = await flakyParts(1);
    const { t, layer } = await seeded([300_000], { store, partBytes: 1024 * 1024 });
    const res = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(res.status).toBe(200);
    expect(res.aborted).toBe(false);
    expect(res.body.equals(layer.bytes)).toBe(true);
    expect(t.blobGets(layer.digest)).toHaveLength(1);
    expect(puts).toHaveLength(2);
    expect(puts[1]).toBe(puts[0]);
    expect(t.metrics.get('outpost_fill_retries_total', { what: 'part' })).toBe(1);
    expect(t.fillLog.filter((e) => e.digest === layer.digest).map((e) => [e.msg, e.what ?? null])).toEqual([
      ['fill.lead', null],
      ['fill.retry', 'part'],
      ['fill.commit', null],
    ]);
    expect(await t.store.stat(`blobs/sha256/${layer.digest.slice(7, 9)}/${layer.digest.slice(7)}`)).toMatchObject({ size: layer.size });
  });

  it('a store that keeps failing ends the fill after three attempts; its client follows the fill that takes over', async () => {
    const { store, puts } = await flakyParts(3);
    const { t, layer } = await seeded([300_000], { store, partBytes: 1024 * 1024 });
    const res = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(res.body.equals(layer.bytes)).toBe(true);
    // Three attempts, then the fill gave up with nothing stored: the next one downloads again.
    expect(puts).toHaveLength(4);
    expect(t.blobGets(layer.digest)).toHaveLength(2);
    expect(t.fillLog.filter((e) => e.digest === layer.digest).map((e) => e.msg)).toEqual(['fill.lead', 'fill.retry', 'fill.retry', 'fill.fail', 'fill.lead', 'fill.commit']);
    expect(t.fillLog.find((e) => e.msg === 'fill.fail')).toMatchObject({ kind: 'INTERNAL', message: expect.stringMatching(/could not be stored: injected/) });
  });

  it('a leader that finds its lease gone before reading the answer lets the upstream body go', async () => {
    const { MemoryMetaIndex } = await import('../../src/adapters/memory/meta-index.js');
    const { TestClock } = await import('../support/clock.js');
    const inner = new MemoryMetaIndex(new TestClock());
    let lose = true;
    const index = Object.assign(Object.create(inner) as typeof inner, {
      updateLease: async (...args: Parameters<typeof inner.updateLease>) => {
        if (lose) {
          lose = false;
          return undefined;
        }
        return inner.updateLease(...args);
      },
    });
    const { t, layer } = await seeded([300_000], { index, partBytes: 64 * 1024 });
    let cancelled = false;
    t.up.fault({
      kind: 'respond',
      match: { path: '/blobs/', method: 'GET' },
      respond: () =>
        new Response(
          new ReadableStream({
            pull: (c) => c.enqueue(layer.bytes.subarray(0, 1024)),
            cancel: () => {
              cancelled = true;
            },
          }),
          { headers: { 'content-length': String(layer.size), 'docker-content-digest': layer.digest } },
        ),
    });
    const lost = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(lost.status).toBe(503);
    expect(cancelled).toBe(true);
    expect(t.fillLog.filter((e) => e.msg === 'fill.fail')).toMatchObject([{ message: expect.stringMatching(/lost the fill/) }]);
  });

  it.each([
    ['fails before writing', false],
    ['writes, but its reply is lost', true],
  ])('a state write whose index %s is tried again: one download', async (_, landed) => {
    const index = await failing('updateLease', landed);
    const { t, layer } = await seeded([300_000], { index, partBytes: 64 * 1024 });
    const res = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(res.body.equals(layer.bytes)).toBe(true);
    expect(t.blobGets(layer.digest)).toHaveLength(1);
    expect(t.fillLog.filter((e) => e.msg === 'fill.retry')).toMatchObject([{ what: 'state', attempt: 1, cause: 'injected: the index did not answer' }]);
    expect(t.fillLog.filter((e) => e.msg === 'fill.fail')).toEqual([]);
    expect(t.metrics.get('outpost_fill_retries_total', { what: 'state' })).toBe(1);
  });

  const committedState = (state: unknown) => (state as { phase?: string } | undefined)?.phase === 'committed';

  it('a commit whose release never gets an answer is still a commit: no failed fill, the parts left to reclaim', async () => {
    const index = await failing('releaseLease', false, committedState, Infinity);
    const { t, layer } = await seeded([300_000], { index, partBytes: 64 * 1024 });
    const res = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(res.body.equals(layer.bytes)).toBe(true);
    while (!t.fillLog.some((e) => e.msg === 'fill.commit')) await new Promise((r) => setTimeout(r, 5));
    expect(t.fillLog.filter((e) => e.digest === layer.digest).map((e) => e.msg)).toEqual(['fill.lead', 'fill.retry', 'fill.retry', 'fill.commit']);
    expect(t.fillLog.find((e) => e.msg === 'fill.commit')).toMatchObject({ released: false });
    expect(t.metrics.get('outpost_fills_failed_total', { reason: 'INTERNAL' })).toBe(0);
    expect((await t.store.list('fills/', { limit: 100 })).keys.length).toBeGreaterThan(0);
    expect((await pull(t, `/v2/up/library/app/blobs/${layer.digest}`)).body.equals(layer.bytes)).toBe(true);
    expect(t.blobGets(layer.digest)).toHaveLength(1);
  });

  it.each([
    ['fails before writing', false],
    ['writes, but its reply is lost', true],
  ])("a commit whose release %s is tried again, and the fill's parts are deleted", async (_, landed) => {
    const index = await failing('releaseLease', landed, committedState);
    const { t, layer } = await seeded([300_000], { index, partBytes: 64 * 1024 });
    const res = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(res.body.equals(layer.bytes)).toBe(true);
    while (!t.fillLog.some((e) => e.msg === 'fill.commit')) await new Promise((r) => setTimeout(r, 5));
    // A retry after a landed release finds the lease given up (false): the lease item shows
    // that it was this fill's own release, so the parts are still its to delete.
    expect(t.fillLog.filter((e) => e.digest === layer.digest).map((e) => [e.msg, e.what ?? null])).toEqual([
      ['fill.lead', null],
      ['fill.retry', 'state'],
      ['fill.commit', null],
    ]);
    expect(t.fillLog.find((e) => e.msg === 'fill.commit')).toMatchObject({ released: true });
    while ((await t.store.list('fills/', { limit: 100 })).keys.length > 0) await new Promise((r) => setTimeout(r, 5));
    expect(await t.store.stat(`blobs/sha256/${layer.digest.slice(7, 9)}/${layer.digest.slice(7)}`)).toMatchObject({ size: layer.size });
  });

  it('a heartbeat answered "not yours" after the commit released the lease does not fail the fill', async () => {
    const { MemoryBlobStore } = await import('../../src/adapters/memory/blob-store.js');
    const { MemoryMetaIndex } = await import('../../src/adapters/memory/meta-index.js');
    const { TestClock } = await import('../support/clock.js');
    const innerStore = new MemoryBlobStore();
    const innerIndex = new MemoryMetaIndex(new TestClock());
    let composing = false;
    let renewed: (() => void) | undefined;
    const held: Array<() => void> = [];
    const store = Object.assign(Object.create(innerStore) as typeof innerStore, {
      compose: async (parts: string[], to: string) => {
        // Held until a heartbeat has gone out (one a second with a lease of 3 s).
        composing = true;
        await new Promise<void>((r) => (renewed = r));
        return innerStore.compose!(parts, to);
      },
    });
    const index = Object.assign(Object.create(innerIndex) as typeof innerIndex, {
      renewLease: (...args: Parameters<typeof innerIndex.renewLease>) => {
        if (!composing) return innerIndex.renewLease(...args);
        // Its answer comes after the release: by then the lease is given up ("not yours").
        const answer = new Promise<Awaited<ReturnType<typeof innerIndex.renewLease>>>((r) => held.push(() => r(innerIndex.renewLease(...args))));
        renewed?.();
        return answer;
      },
      releaseLease: async (...args: Parameters<typeof innerIndex.releaseLease>) => {
        const released = await innerIndex.releaseLease(...args);
        for (const answer of held.splice(0)) answer();
        // The heartbeat's answer is handled while the commit still waits for this reply.
        await new Promise((r) => setTimeout(r, 10));
        return released;
      },
    });
    const { t, layer } = await seeded([300_000], { store, index, leaseMs: 3000 });
    const res = await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(res.body.equals(layer.bytes)).toBe(true);
    while (!t.fillLog.some((e) => e.msg === 'fill.commit')) await new Promise((r) => setTimeout(r, 5));
    expect(held).toHaveLength(0);
    expect(t.fillLog.filter((e) => e.digest === layer.digest).map((e) => e.msg)).toEqual(['fill.lead', 'fill.commit']);
    expect(t.metrics.get('outpost_fills_failed_total', { reason: 'UPSTREAM_UNAVAILABLE' })).toBe(0);
    expect(await t.store.stat(`blobs/sha256/${layer.digest.slice(7, 9)}/${layer.digest.slice(7)}`)).toMatchObject({ size: layer.size });
  });
});

describe('an upstream whose blob storage refuses HEAD', () => {
  it('a HEAD through the mirror learns the size from a one-byte range', async () => {
    const t = mirrorTest({ upstream: { blobHost: 'cdn.test' } });
    const b = randomBlob(5000);
    t.up.addBlob('library/app', b.bytes);
    // A URL presigned for GET answers 403 to HEAD, as S3 does.
    t.up.fault({ kind: 'respond', match: { host: 'cdn.test', method: 'HEAD' }, times: Infinity, respond: () => new Response(null, { status: 403 }) });
    const head = await t.request(`/v2/up/library/app/blobs/${b.digest}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('Content-Length')).toBe('5000');
    expect(t.up.requestsTo('cdn.test').some((r) => r.method === 'GET' && r.headers.range === 'bytes=0-0')).toBe(true);
    const got = await pull(t, `/v2/up/library/app/blobs/${b.digest}`);
    expect(got.body.equals(b.bytes)).toBe(true);
  });
});
