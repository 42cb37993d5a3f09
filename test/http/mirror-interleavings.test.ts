import { expect, it } from 'vitest';
import { nodeHash } from '../../src/adapters/crypto/node-hash.js';
import { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';
import { MemoryMetaIndex } from '../../src/adapters/memory/meta-index.js';
import { RegistryUpstream } from '../../src/adapters/upstream/registry-upstream.js';
import type { MirrorConfig } from '../../src/core/mirror/config.js';
import { Metrics } from '../../src/core/metrics.js';
import { createRegistry } from '../../src/core/registry/registry.js';
import { createApp } from '../../src/http/app.js';
import { TestClock } from '../support/clock.js';
import { FakeUpstream } from '../support/fake-upstream.js';
import { image, randomBlob } from '../support/images.js';
import { detachingStore, mirrorTest, upstreamConfig } from '../support/mirror.js';

/**
 * Interleavings a review of the fill and manifest protocols found (each failed before its fix):
 * takeovers across upstreams, a fill whose background work died with its request, content
 * whose fill item was swept, a stale leader's clean-up, stale-if-error limits, detached buffers.
 */

it('a takeover asks the upstream of the request for the repository of the previous fill', async () => {
  const clock = new TestClock();
  const upA = new FakeUpstream({ host: 'a.test' });
  const upB = new FakeUpstream({ host: 'b.test' });
  const blob = randomBlob(400_000);
  upA.addBlob('x/one', blob.bytes);
  upB.addBlob('y/two', blob.bytes);
  const store = new MemoryBlobStore();
  const index = new MemoryMetaIndex(clock);
  const a = upstreamConfig({ name: 'a', url: upA.url, namespace: 'a.test' });
  const b = upstreamConfig({ name: 'b', url: upB.url, namespace: 'b.test' });
  const config: MirrorConfig = { upstreams: [a, b], hosted: [], fillPartBytes: 64 * 1024, fillLeaseMs: 30_000, fillMemoryBytes: 64 * 1024 * 1024 };
  const client = (up: FakeUpstream) => new RegistryUpstream({ url: up.url, fetch: up.fetch, clock, sleep: () => new Promise((r) => setTimeout(r, 0)), random: () => 0 });
  const instance = (i: number) => {
    const registry = createRegistry({
      store, index, hash: nodeHash, clock,
      mirror: { config, upstreams: new Map([['a', client(upA)], ['b', client(upB)]]), metrics: new Metrics(), instance: `i${i}`, sleep: (ms) => new Promise((r) => setTimeout(r, Math.min(ms, 5))) },
    });
    return createApp({ registry });
  };
  const [app0, app1] = [instance(0), instance(1)];
  // Instance 0 fills through upstream a and stalls after ~200 KB (parts stored), then its lease expires.
  upA.fault({ kind: 'stall', afterBytes: 200_000, match: { path: '/blobs/' } });
  const stalled = await app0.request(`/v2/a/x/one/blobs/${blob.digest}`);
  const reader = stalled.body!.getReader();
  let got = 0;
  while (got < 64 * 1024) got += (await reader.read()).value!.byteLength;
  await new Promise((r) => setTimeout(r, 50));
  clock.advance(31_000);
  // A client of upstream b, which has the blob in y/two.
  const res = await app1.request(`/v2/b/y/two/blobs/${blob.digest}`);
  const body = Buffer.from(await res.arrayBuffer().catch(() => new ArrayBuffer(0)));
  void reader.cancel();
  expect(res.status).toBe(200);
  expect(body.equals(Buffer.from(blob.bytes))).toBe(true);
});

it('a local fill whose work never settles (workerd cancelled its waitUntil) captures every later request of its isolate', async () => {
  const inner = new MemoryBlobStore();
  let hang = true;
  // The leader's context is torn down mid-fill: its pending part write never settles, nor do its timers.
  const store = Object.assign(Object.create(inner) as MemoryBlobStore, {
    put: (key: string, body: ReadableStream<Uint8Array>, size?: number) =>
      hang && key.startsWith('fills/') ? new Promise<never>(() => {}) : inner.put(key, body, size),
  });
  const t = mirrorTest({ instances: 2, partBytes: 64 * 1024, store });
  const img = image({ layers: [300_000] });
  t.up.addImage('library/app', 'v1', img);
  for (const i of t.instances) await (await i.request('/v2/up/library/app/manifests/v1')).arrayBuffer();
  const layer = img.layers[0]!;
  const first = await t.instances[0]!.request(`/v2/up/library/app/blobs/${layer.digest}`);
  void first.body!.cancel();
  await new Promise((r) => setTimeout(r, 100));
  hang = false;
  t.clock.advance(31_000); // the dead leader's lease has expired: anyone may take over
  const other = await t.instances[1]!.request(`/v2/up/library/app/blobs/${layer.digest}`);
  expect(Buffer.from(await other.arrayBuffer()).equals(layer.bytes)).toBe(true);
  // The same isolate: the request joins the dead LocalFill (this.local still has it) and polls it forever.
  const same = Promise.resolve(t.instances[0]!.request(`/v2/up/library/app/blobs/${layer.digest}`)).then(async (r) => Buffer.from(await r.arrayBuffer()));
  const outcome = await Promise.race([same.then((b: Buffer) => (b.equals(layer.bytes) ? 'ok' : 'wrong')), new Promise((r) => setTimeout(() => r('still waiting after 3 s'), 3000))]);
  expect(outcome).toBe('ok');
});

it('content already in the store is not downloaded again once the fill item is gone (DynamoDB TTL sweep, a week after release)', async () => {
  const t = mirrorTest();
  const img = image({ layers: [100_000] });
  t.up.addImage('library/a', 'v1', img);
  t.up.addImage('library/b', 'v1', img); // same base layer in another repository
  await (await t.request('/v2/up/library/a/manifests/v1')).arrayBuffer();
  await (await t.request('/v2/up/library/b/manifests/v1')).arrayBuffer();
  const layer = img.layers[0]!;
  const a = Buffer.from(await (await t.request(`/v2/up/library/a/blobs/${layer.digest}`)).arrayBuffer());
  expect(a.equals(layer.bytes)).toBe(true);
  // A week later DynamoDB's TTL sweep erases the released fill item (ttl = release time + 7 days).
  (t.index as unknown as { partitions: Map<string, Map<string, unknown>> }).partitions.get('fill')!.delete(layer.digest);
  expect(await t.index.readLease({ pk: 'fill', sk: layer.digest })).toBeUndefined();
  const b = Buffer.from(await (await t.request(`/v2/up/library/b/blobs/${layer.digest}`)).arrayBuffer());
  expect(b.equals(layer.bytes)).toBe(true);
  expect(t.blobGets(layer.digest)).toHaveLength(1);
});

it('a stale leader whose release failed does not delete the parts its successor is composing', async () => {
  const inner = new MemoryBlobStore();
  let calls = 0;
  let openA!: () => void;
  const gateA = new Promise<void>((r) => (openA = r));
  const partsLeft = async () => (await inner.list('fills/', { limit: 100 })).keys.length;
  const store = Object.assign(Object.create(inner) as MemoryBlobStore, {
    compose: async (parts: string[], to: string) => {
      const call = ++calls;
      if (call === 1) await gateA; // A pauses in compose past its lease (GC pause, slow UploadPartCopy)
      if (call === 2) {
        openA(); // A wakes up: composes, fails to release (ignored), deletes the parts
        for (let i = 0; i < 200 && (await partsLeft()) > 0; i++) await new Promise((r) => setTimeout(r, 5));
      }
      return inner.compose(parts, to);
    },
  });
  const t = mirrorTest({ instances: 2, partBytes: 64 * 1024, store });
  const img = image({ layers: [200_000] });
  t.up.addImage('library/app', 'v1', img);
  for (const i of t.instances) await (await i.request('/v2/up/library/app/manifests/v1')).arrayBuffer();
  const layer = img.layers[0]!;
  const a = await t.instances[0]!.request(`/v2/up/library/app/blobs/${layer.digest}`);
  void a.arrayBuffer().catch(() => undefined);
  for (let i = 0; i < 200 && calls === 0; i++) await new Promise((r) => setTimeout(r, 5));
  t.clock.advance(31_000); // A's lease expires while it is paused in compose
  const b = await t.instances[1]!.request(`/v2/up/library/app/blobs/${layer.digest}`);
  const bBody = await b.arrayBuffer().then((x) => Buffer.from(x), () => 'aborted');
  expect(bBody instanceof Buffer && bBody.equals(layer.bytes)).toBe(true);
  await new Promise((r) => setTimeout(r, 100));
  const view = await t.index.readLease<{ phase: string }>({ pk: 'fill', sk: layer.digest });
  expect(view?.state?.phase).toBe('committed');
  const c = await t.instances[1]!.request(`/v2/up/library/app/blobs/${layer.digest}`);
  expect(Buffer.from(await c.arrayBuffer()).equals(layer.bytes)).toBe(true);
  expect(t.blobGets(layer.digest)).toHaveLength(1);
});

it('stale-if-error is only for down/timeouts/429/5xx: an upstream 403 is not papered over with a stale tag', async () => {
  const t = mirrorTest({ config: { tagTtlMs: 60_000, maxStaleMs: 3_600_000 } });
  t.up.addImage('library/app', 'v1', image());
  await (await t.request('/v2/up/library/app/manifests/v1')).arrayBuffer();
  t.clock.advance(120_000);
  t.up.fault({ kind: 'status', status: 403, times: Infinity });
  const res = await t.request('/v2/up/library/app/manifests/v1');
  expect(res.status).toBe(403);
});

it('a tag that moves back to a digest already cached is not fetched again with GET', async () => {
  const t = mirrorTest({ config: { tagTtlMs: 60_000 } });
  const a = image();
  const b = image();
  t.up.addImage('library/app', 'v1', a);
  await (await t.request('/v2/up/library/app/manifests/v1')).arrayBuffer();
  t.up.addImage('library/app', 'v1', b);
  t.clock.advance(61_000);
  await (await t.request('/v2/up/library/app/manifests/v1')).arrayBuffer();
  t.up.addImage('library/app', 'v1', a); // rolled back
  t.clock.advance(61_000);
  await (await t.request('/v2/up/library/app/manifests/v1')).arrayBuffer();
  const gets = t.up.requests.filter((r) => r.method === 'GET' && r.path.includes('/manifests/'));
  expect(gets).toHaveLength(2);
});

it('a store that detaches the buffers it is given (as the fill tests model workerd) does not zero the manifest record size', async () => {
  const store = detachingStore();
  const t = mirrorTest({ store });
  const img = image({ layers: [1000] });
  t.up.addImage('library/app', 'v1', img);
  const res = await t.request('/v2/up/library/app/manifests/v1');
  const body = Buffer.from(await res.arrayBuffer());
  expect(res.headers.get('content-length')).toBe(String(body.byteLength));
  expect(body.byteLength).toBeGreaterThan(0);
});

