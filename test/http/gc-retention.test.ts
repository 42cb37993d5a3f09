import { compileGlob } from '../../src/core/glob.js';
import { describe, expect, it } from 'vitest';
import { TOUCH_INTERVAL_MS } from '../../src/core/mirror/retention.js';
import { parseDigest } from '../../src/core/oci/digest.js';
import { objects } from '../../src/core/registry/keys.js';
import { image, randomBlob, type Blob } from '../support/images.js';
import { mirrorTest } from '../support/mirror.js';

/**
 * Retention of mirrored content (src/core/mirror/retention.ts) through Registry.gc: eviction by
 * age and by size budget, least recently pulled first, then collection of the bytes; hosted
 * content untouched. Time moves only through the TestClock.
 */

const HOUR = 60 * 60_000;
type T = ReturnType<typeof mirrorTest>;

const stored = async (t: T, b: Blob) => (await t.store.stat(objects.content(parseDigest(b.digest)))) !== undefined;
/** Lets the touches (written off the request's path) land. */
const settle = () => new Promise((r) => setTimeout(r, 5));

async function pull(t: T, path: string): Promise<Buffer> {
  const res = await t.request(path);
  expect(res.status, path).toBe(200);
  const body = Buffer.from(await res.arrayBuffer());
  await settle();
  return body;
}

/** The upstream with one image of `layers`, pulled whole through the mirror (a fill each, then linked). */
async function cachedImage(t: T, repo: string, layers: number[]) {
  const img = image({ layers });
  t.up.addImage(repo, 'v1', img);
  await pull(t, `/v2/up/${repo}/manifests/v1`);
  for (const b of [img.config, ...img.layers]) expect((await pull(t, `/v2/up/${repo}/blobs/${b.digest}`)).equals(b.bytes)).toBe(true);
  // Every fill committed and linked.
  for (const b of [img.config, ...img.layers]) await pull(t, `/v2/up/${repo}/blobs/${b.digest}`);
  return img;
}

const registry = (t: T) => t.instances[0]!.registry;

describe('retention of mirrored content', () => {
  it('is not stopped by immutable tags whose globs match mirrored names too (they cover hosted repositories only)', async () => {
    const t = mirrorTest({ options: { immutableTags: [{ repositories: [compileGlob('**')], label: 'immutableTags[0]' }] } });
    const img = await cachedImage(t, 'library/app', [50_000]);
    await registry(t).gc({ graceMs: 0, retention: { maxAgeMs: 2 * HOUR } });
    t.clock.advance(2 * HOUR + 1);
    const report = await registry(t).gc({ graceMs: 0, retention: { maxAgeMs: 2 * HOUR } });
    expect(report.retention?.evicted.age).toBe(3);
    for (const b of [img.manifest, img.config, ...img.layers]) expect(await stored(t, b)).toBe(false);
  });

  it('evicts what nobody pulled within maxAge, then collects its bytes; the next pull fills again', async () => {
    const t = mirrorTest();
    const img = await cachedImage(t, 'library/app', [50_000, 60_000]);
    const first = await registry(t).gc({ graceMs: 0, retention: { maxAgeMs: 2 * HOUR } });
    expect(first.retention).toMatchObject({ items: 4, evicted: { age: 0, budget: 0 } });
    t.clock.advance(2 * HOUR + 1);
    const evicted: string[] = [];
    const report = await registry(t).gc({ graceMs: 0, retention: { maxAgeMs: 2 * HOUR }, onEvict: (c, why) => evicted.push(`${c.kind} ${why}`) });
    expect(evicted.sort()).toEqual(['blob age', 'blob age', 'blob age', 'manifest age']);
    expect(report.deleted).toBe(4);
    for (const b of [img.manifest, img.config, ...img.layers]) expect(await stored(t, b)).toBe(false);
    const gets = t.blobGets(img.layers[0]!.digest).length;
    expect((await pull(t, `/v2/up/library/app/blobs/${img.layers[0]!.digest}`)).equals(img.layers[0]!.bytes)).toBe(true);
    expect(t.blobGets(img.layers[0]!.digest).length).toBe(gets + 1);
  });

  it('keeps what was pulled from the cache recently, however long ago it was first cached', async () => {
    const t = mirrorTest();
    const img = await cachedImage(t, 'library/app', [50_000]);
    await registry(t).gc({ graceMs: 0, retention: { maxAgeMs: 2 * HOUR } });
    const layer = img.layers[0]!;
    for (let i = 0; i < 6; i++) {
      t.clock.advance(HOUR);
      await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    }
    const report = await registry(t).gc({ graceMs: 0, retention: { maxAgeMs: 2 * HOUR } });
    // The manifest and the config were not pulled again; the layer was, every hour.
    expect(report.retention?.evicted.age).toBe(2);
    expect(await stored(t, layer)).toBe(true);
    expect(await stored(t, img.config)).toBe(false);
  });

  it('touches the index at most once per interval however often a blob is pulled', async () => {
    const t = mirrorTest();
    const img = await cachedImage(t, 'library/app', [10_000]);
    const layer = img.layers[0]!;
    let writes = 0;
    const put = t.index.put.bind(t.index);
    t.index.put = (async (...args: Parameters<typeof put>) => {
      if (args[0].pk.startsWith('pulled#')) writes++;
      return put(...args);
    }) as typeof put;
    t.clock.advance(TOUCH_INTERVAL_MS);
    for (let i = 0; i < 50; i++) await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(writes).toBe(1);
    t.clock.advance(TOUCH_INTERVAL_MS);
    await pull(t, `/v2/up/library/app/blobs/${layer.digest}`);
    expect(writes).toBe(2);
  });

  it('over the size budget, evicts the least recently pulled first, counting a digest once', async () => {
    const t = mirrorTest();
    const a = await cachedImage(t, 'library/a', [100_000]);
    const b = await cachedImage(t, 'library/b', [100_000]);
    const c = await cachedImage(t, 'library/c', [100_000]);
    await registry(t).gc({ graceMs: 0, retention: { budgetBytes: 10 * 1024 ** 2 } });
    // Pulled in the order b, c, a from now on: b is the least recently pulled.
    for (const [img, repo] of [[b, 'library/b'], [c, 'library/c'], [a, 'library/a']] as const) {
      t.clock.advance(TOUCH_INTERVAL_MS);
      for (const x of [img.config, ...img.layers]) await pull(t, `/v2/up/${repo}/blobs/${x.digest}`);
      await pull(t, `/v2/up/${repo}/manifests/v1`);
    }
    const total = [a, b, c].reduce((n, i) => n + i.manifest.size + i.config.size + i.layers[0]!.size, 0);
    const budget = total - (b.manifest.size + b.config.size + b.layers[0]!.size);
    const dry = await registry(t).gc({ graceMs: 0, dryRun: true, retention: { budgetBytes: budget } });
    expect(dry.retention).toMatchObject({ cachedBytes: total, evicted: { age: 0, budget: 3 } });
    expect(await stored(t, b.layers[0]!)).toBe(true);
    const report = await registry(t).gc({ graceMs: 0, retention: { budgetBytes: budget } });
    expect(report.retention?.evicted.budget).toBe(3);
    expect(await stored(t, b.layers[0]!)).toBe(false);
    expect(await stored(t, b.manifest)).toBe(false);
    for (const img of [a, c]) for (const x of [img.manifest, img.config, ...img.layers]) expect(await stored(t, x)).toBe(true);
  });

  it('never evicts hosted content, even over the budget', async () => {
    const t = mirrorTest({ hosted: ['team/'] });
    const own = randomBlob(200_000);
    const res = await t.request(`/v2/team/app/blobs/uploads/?digest=${own.digest}`, { method: 'POST', body: new Uint8Array(own.bytes) });
    expect(res.status).toBe(201);
    await cachedImage(t, 'library/app', [100_000]);
    t.clock.advance(10 * HOUR);
    const report = await registry(t).gc({ graceMs: 0, retention: { maxAgeMs: HOUR, budgetBytes: 1024 ** 2 } });
    expect(report.retention?.evicted.age).toBe(3);
    expect(await stored(t, own)).toBe(true);
    expect((await t.request(`/v2/team/app/blobs/${own.digest}`)).status).toBe(200);
  });
});
