import { describe, expect, it } from 'vitest';
import { listReferences, noteCandidate, REPAIR_AFTER_MS } from '../../src/core/gc/references.js';
import { parseDigest } from '../../src/core/oci/digest.js';
import { keys, objects } from '../../src/core/registry/keys.js';
import { streamOf } from '../../src/core/streams.js';
import { testApp } from '../support/app.js';
import { artifact, image, randomBlob, type Blob } from '../support/images.js';
import { mirrorTest } from '../support/mirror.js';

/**
 * Garbage collection through the registry: what pushes, deletes and mounts leave referenced,
 * and what a run (Registry.gc, core/gc/run.ts) then deletes. Runs with no grace unless a test is
 * about the grace; time moves only through the TestClock.
 */

const HOUR = 60 * 60_000;

type T = ReturnType<typeof testApp>;

const stored = (t: T, b: Blob) => t.store.objects.has(objects.content(parseDigest(b.digest)));
const gc = (t: T, graceMs = 0, dryRun = false) => t.registry.gc({ graceMs, dryRun });
const del = (t: T, path: string) => t.request(path, { method: 'DELETE' });

async function pulled(t: T, name: string, b: Blob): Promise<boolean> {
  const res = await t.request(`/v2/${name}/blobs/${b.digest}`);
  if (res.status !== 200) return false;
  return Buffer.from(await res.arrayBuffer()).equals(b.bytes);
}

describe('garbage collection', () => {
  it('deletes nothing that a link, a manifest or another repository still holds', async () => {
    const t = testApp();
    const img = image({ layers: [100, 200] });
    await t.pushImage('a', img, 'v1');
    await t.pushBlob('b', img.layers[0]!);
    expect((await gc(t)).deleted).toBe(0);
    // Unlinked from `a`, but a's manifest names it, and `b` links it.
    expect((await del(t, `/v2/a/blobs/${img.layers[0]!.digest}`)).status).toBe(202);
    expect((await del(t, `/v2/a/blobs/${img.layers[1]!.digest}`)).status).toBe(202);
    expect((await gc(t)).deleted).toBe(0);
    for (const b of [img.config, ...img.layers, img.manifest]) expect(stored(t, b)).toBe(true);
    expect((await t.request(`/v2/a/manifests/v1`)).status).toBe(200);
    expect(await pulled(t, 'b', img.layers[0]!)).toBe(true);
  });

  it('deletes a manifest and what only it named once the manifest is deleted, and nothing shared', async () => {
    const t = testApp();
    const img = image({ layers: [100, 200] });
    await t.pushImage('a', img, 'v1');
    await t.pushBlob('b', img.layers[0]!);
    for (const b of [img.config, ...img.layers]) expect((await del(t, `/v2/a/blobs/${b.digest}`)).status).toBe(202);
    expect((await del(t, `/v2/a/manifests/${img.manifest.digest}`)).status).toBe(202);
    const report = await gc(t);
    expect(report.deleted).toBe(3);
    expect(report.deletedBytes).toBe(img.config.size + img.layers[1]!.size + img.manifest.size);
    expect(stored(t, img.manifest)).toBe(false);
    expect(stored(t, img.config)).toBe(false);
    expect(stored(t, img.layers[1]!)).toBe(false);
    expect(stored(t, img.layers[0]!)).toBe(true);
    expect(await pulled(t, 'b', img.layers[0]!)).toBe(true);
    // A second run has nothing left to do.
    expect((await gc(t)).examined).toBe(0);
  });

  it('keeps the children of an index until the index goes, and a referrer beside its subject', async () => {
    const t = testApp();
    const { amd, arm, list } = await t.pushIndex('multi', [50, 60]);
    const sig = artifact(amd.manifest, 'application/vnd.example.signature');
    await t.pushImage('multi', sig, sig.manifest.digest);
    for (const m of [amd.manifest, arm.manifest]) expect((await del(t, `/v2/multi/manifests/${m.digest}`)).status).toBe(202);
    for (const b of [amd.config, arm.config, ...amd.layers, ...arm.layers]) await del(t, `/v2/multi/blobs/${b.digest}`);
    // The children's records are gone, and with them the references to their configs and layers,
    // which go; the index still names the children, whose bytes stay.
    expect((await gc(t)).deleted).toBe(4);
    expect(stored(t, amd.manifest) && stored(t, arm.manifest)).toBe(true);
    expect((await del(t, `/v2/multi/manifests/${list.digest}`)).status).toBe(202);
    // Both children and the index.
    expect((await gc(t)).deleted).toBe(3);
    expect(stored(t, sig.manifest)).toBe(true);
    expect((await t.request(`/v2/multi/referrers/${amd.manifest.digest}`)).status).toBe(200);
  });

  it('keeps garbage for the grace period, counted from when it became garbage', async () => {
    const t = testApp();
    const b = randomBlob(300);
    await t.pushBlob('a', b);
    t.clock.advance(2 * HOUR);
    expect((await del(t, `/v2/a/blobs/${b.digest}`)).status).toBe(202);
    t.clock.advance(HOUR - 1);
    expect((await gc(t, HOUR)).deleted).toBe(0);
    t.clock.advance(1);
    // Noted twice (stored at 0, unlinked at 2h: two buckets); deleted once.
    const report = await gc(t, HOUR);
    expect(report.deleted).toBe(1);
    expect(stored(t, b)).toBe(false);
  });

  it('keeps bytes pushed and not yet linked by a manifest for the grace period', async () => {
    const t = testApp();
    const b = randomBlob(300);
    // A blob uploaded and then unlinked before any manifest: stored just now, so young.
    await t.pushBlob('a', b);
    expect((await del(t, `/v2/a/blobs/${b.digest}`)).status).toBe(202);
    // Its bucket is younger than the grace: not even read.
    expect(await gc(t, HOUR)).toMatchObject({ examined: 0, deleted: 0 });
    expect(stored(t, b)).toBe(true);
    t.clock.advance(HOUR);
    expect((await gc(t, HOUR)).deleted).toBe(1);
  });

  it('a dry run says what a run would delete and changes nothing', async () => {
    const t = testApp();
    const keep = randomBlob(10);
    const drop = randomBlob(20);
    await t.pushBlob('a', keep);
    await t.pushBlob('a', drop);
    await del(t, `/v2/a/blobs/${drop.digest}`);
    const said: string[] = [];
    const dry = await t.registry.gc({ graceMs: 0, dryRun: true, onDelete: (d) => said.push(d) });
    expect(dry).toMatchObject({ dryRun: true, deleted: 1, deletedBytes: 20 });
    expect(said).toEqual([drop.digest]);
    expect(stored(t, drop)).toBe(true);
    expect((await gc(t)).deleted).toBe(1);
    expect(stored(t, drop)).toBe(false);
    expect(stored(t, keep)).toBe(true);
  });

  it('content pushed again after its deletion is stored and served again', async () => {
    const t = testApp();
    const b = randomBlob(100);
    await t.pushBlob('a', b);
    await del(t, `/v2/a/blobs/${b.digest}`);
    expect((await gc(t)).deleted).toBe(1);
    // A mount from a repository that lost it finds nothing; the push stores it anew.
    expect((await t.request(`/v2/c/blobs/uploads/?mount=${b.digest}&from=a`, { method: 'POST' })).status).toBe(202);
    await t.pushBlob('a', b);
    expect(await pulled(t, 'a', b)).toBe(true);
    expect((await gc(t)).deleted).toBe(0);
  });

  it('refuses a manifest whose blob was collected after the existence check, with MANIFEST_BLOB_UNKNOWN', async () => {
    const t = testApp();
    const img = image({ layers: [40] });
    for (const b of [img.config, ...img.layers]) await t.pushBlob('a', b);
    // The check finds the link; the layer is then unlinked and collected before its reference is made.
    const original = t.index.list.bind(t.index);
    let raced = false;
    t.index.list = (async (...args: Parameters<typeof original>) => {
      if (!raced && args[0] === `ref#${img.layers[0]!.digest}`) raced = true;
      return original(...args);
    }) as typeof original;
    const get = t.index.get.bind(t.index);
    let collected = false;
    t.index.get = (async (key: { pk: string; sk: string }) => {
      // The put of the manifest's reference to the layer is followed by this read of its state.
      if (!collected && key.pk === 'content' && key.sk === img.layers[0]!.digest) {
        collected = true;
        await t.index.delete(keys.blobLink('a', img.layers[0]!.digest));
        await t.index.put({ pk: 'content', sk: img.layers[0]!.digest }, { state: 'deleted', since: t.clock.now(), by: 'run', done: true });
      }
      return get(key);
    }) as typeof get;
    const res = await t.pushManifest('a', 'v1', img.manifest);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]!.code).toBe('MANIFEST_BLOB_UNKNOWN');
    // Nothing of the refused push holds anything.
    const held = [];
    for await (const r of listReferences({ index: t.index }, img.config.digest)) held.push(r.kind);
    expect(held).toEqual(['link']);
  });

  it('backfills the references of links and manifests written before references existed, then collects only orphans', async () => {
    const t = testApp();
    const img = image({ layers: [70] });
    const orphan = randomBlob(33);
    // As an older Outpost left them: links and a record with no references, and bytes no one names.
    for (const b of [img.config, ...img.layers, img.manifest, orphan]) {
      await t.store.put(objects.content(parseDigest(b.digest)), streamOf(new Uint8Array(b.bytes)), b.size);
    }
    await t.index.put(keys.repo('old'), { created: 0 });
    for (const b of [img.config, ...img.layers]) await t.index.put(keys.blobLink('old', b.digest), { size: b.size });
    await t.index.put(keys.manifest('old', img.manifest.digest), { digest: img.manifest.digest, mediaType: img.manifest.mediaType, size: img.manifest.size });
    const report = await gc(t);
    // Only the orphan is noted: what the links and the record name is held by their references.
    expect(report.backfill).toEqual({ links: 2, manifests: 1, objects: 1 });
    expect(report.deleted).toBe(1);
    expect(stored(t, orphan)).toBe(false);
    // The old links now stand on references: unlinking the layer keeps it for the manifest.
    expect((await del(t, `/v2/old/blobs/${img.layers[0]!.digest}`)).status).toBe(202);
    expect((await gc(t)).deleted).toBe(0);
    expect((await del(t, `/v2/old/manifests/${img.manifest.digest}`)).status).toBe(202);
    expect((await gc(t)).deleted).toBe(2);
    expect(stored(t, img.config)).toBe(true);
    expect((await gc(t)).backfill).toBeUndefined();
  });
});

describe('garbage collection of mirrored content', () => {
  it('a fill links what it stored before its hold ends; collected once unlinked, the next pull fills again', async () => {
    const t = mirrorTest();
    const img = image({ layers: [200_000] });
    const layer = img.layers[0]!;
    t.up.addImage('library/app', 'v1', img);
    expect((await t.request('/v2/up/library/app/manifests/v1')).status).toBe(200);
    const path = `/v2/up/library/app/blobs/${layer.digest}`;
    expect(Buffer.from(await (await t.request(path)).arrayBuffer()).equals(layer.bytes)).toBe(true);
    const registry = t.instances[0]!.registry;
    const links = async () => {
      const found: string[] = [];
      for await (const r of listReferences({ index: t.index }, layer.digest)) if (r.kind === 'link') found.push(r.repository);
      return found;
    };
    for (let i = 0; i < 100 && (await links()).length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    const [name] = await links();
    expect(name).toBeDefined();
    expect((await registry.gc({ graceMs: 0 })).deleted).toBe(0);
    // Retention's part, by hand: the mirrored link goes. A mirrored manifest names nothing, so
    // the layer goes with the next run although the manifest stays.
    await registry.blobs.delete(name!, parseDigest(layer.digest));
    expect((await registry.gc({ graceMs: 0 })).deleted).toBe(1);
    expect((await t.request(`/v2/up/library/app/manifests/v1`)).status).toBe(200);
    expect(await t.store.stat(objects.content(parseDigest(layer.digest)))).toBeUndefined();
    // A clean miss: the mirror asks the upstream again, and serves the whole blob.
    const res = await t.request(path);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(layer.bytes)).toBe(true);
    expect(t.blobGets(layer.digest)).toHaveLength(2);
  });
});

describe('garbage collection repairs what crashes left', () => {
  it('an unlink that died before taking its reference away: the bytes go once the reference is old enough to judge', async () => {
    const t = testApp();
    const b = randomBlob(300);
    await t.pushBlob('a', b);
    // The delete of the link applies; the removal of its reference fails (the process died).
    const del0 = t.index.delete.bind(t.index);
    let failed = false;
    t.index.delete = (async (...args: Parameters<typeof del0>) => {
      if (!failed && args[0].pk.startsWith('ref#')) {
        failed = true;
        throw new Error('process died');
      }
      return del0(...args);
    }) as typeof del0;
    expect((await del(t, `/v2/a/blobs/${b.digest}`)).status).toBe(500);
    expect((await t.request(`/v2/a/blobs/${b.digest}`, { method: 'HEAD' })).status).toBe(404);
    // Too young to tell from a writer between its reference and its link: kept, still listed.
    expect((await gc(t)).outcomes).toMatchObject({ writing: 1 });
    expect(stored(t, b)).toBe(true);
    t.clock.advance(REPAIR_AFTER_MS);
    expect((await gc(t)).deleted).toBe(1);
    expect(stored(t, b)).toBe(false);
    const left = [];
    for await (const r of listReferences({ index: t.index }, b.digest)) left.push(r);
    expect(left).toEqual([]);
  });

  it('a manifest DELETE that died half-way through its references: what only it named goes later', async () => {
    const t = testApp();
    const img = image({ layers: [100] });
    await t.pushImage('a', img, 'v1');
    for (const x of [img.config, ...img.layers]) await del(t, `/v2/a/blobs/${x.digest}`);
    const del0 = t.index.delete.bind(t.index);
    let removed = 0;
    t.index.delete = (async (...args: Parameters<typeof del0>) => {
      // The first reference goes; then the process dies.
      if (args[0].pk.startsWith('ref#') && ++removed > 1) throw new Error('process died');
      return del0(...args);
    }) as typeof del0;
    expect((await del(t, `/v2/a/manifests/${img.manifest.digest}`)).status).toBe(500);
    t.index.delete = del0;
    t.clock.advance(REPAIR_AFTER_MS);
    expect((await gc(t)).deleted).toBe(3);
    for (const x of [img.manifest, img.config, ...img.layers]) expect(stored(t, x)).toBe(false);
  });

  it('never takes a live link or record for dangling, however old', async () => {
    const t = testApp();
    const img = image({ layers: [100] });
    await t.pushImage('a', img, 'v1');
    t.clock.advance(10 * REPAIR_AFTER_MS);
    for (const x of [img.manifest, img.config, ...img.layers]) await noteCandidate({ index: t.index, clock: t.clock }, x.digest);
    // Each noted twice (when stored, and now): referenced every time, never anything else.
    expect(Object.keys((await gc(t)).outcomes)).toEqual(['referenced']);
    for (const x of [img.manifest, img.config, ...img.layers]) expect(stored(t, x)).toBe(true);
  });
});

describe('a refused manifest push holds nothing', () => {
  it('a PUT refused while its digest is being collected leaves no reference to what it names', async () => {
    const t = testApp();
    const img = image({ layers: [90] });
    await t.pushImage('r', img, 'v1');
    expect((await del(t, `/v2/r/manifests/${img.manifest.digest}`)).status).toBe(202);
    // A collecting run between its CAS into deleted and its delete.
    const key = { pk: 'content', sk: img.manifest.digest };
    const st = await t.index.get(key);
    await t.index.compareAndSet(key, st!.version, { state: 'deleted', since: t.clock.now(), by: 'run' });
    const res = await t.pushManifest('r', 'v1', img.manifest);
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toMatch(/^\d+$/);
    for (const x of [img.config, ...img.layers]) {
      const kinds = [];
      for await (const r of listReferences({ index: t.index }, x.digest)) kinds.push(r.kind);
      expect(kinds).toEqual(['link']);
    }
  });
});

describe('the cost of a run', () => {
  it('a bucket settled whole leaves the directory once closed: later runs do not list its tombstones', async () => {
    const t = testApp();
    for (let i = 0; i < 50; i++) await t.pushBlob('a', randomBlob(20 + i));
    expect((await gc(t)).outcomes).toEqual({ referenced: 50 });
    t.clock.advance(2 * HOUR);
    // The first run after the bucket closed reads it (its tombstones) once more and drops it.
    expect((await gc(t)).examined).toBe(0);
    const list = t.index.list.bind(t.index);
    const listed: string[] = [];
    t.index.list = (async (...args: Parameters<typeof list>) => {
      listed.push(args[0]);
      return list(...args);
    }) as typeof list;
    expect((await gc(t)).examined).toBe(0);
    expect(listed).toEqual(['gc#buckets']);
  });
});
