import { describe, expect, it } from 'vitest';
import { compileGlob } from '../../src/core/glob.js';
import type { HostedPolicy } from '../../src/core/registry/retention.js';
import { parseDigest } from '../../src/core/oci/digest.js';
import { objects } from '../../src/core/registry/keys.js';
import { testApp } from '../support/app.js';
import { artifact, image, index, type Blob } from '../support/images.js';

/**
 * Retention policies of hosted content (src/core/registry/retention.ts) through Registry.gc:
 * the newest tags kept per repository, untagged manifests deleted after an age (never an index's
 * children or a present manifest's referrers), dry runs, and pushes racing a pass.
 */

const HOUR = 60 * 60_000;
type T = ReturnType<typeof testApp>;

const policy = (p: Omit<HostedPolicy, 'repositories'> & { repositories?: string[] }): HostedPolicy => ({
  ...p,
  repositories: (p.repositories ?? ['team/*']).map(compileGlob),
});
const tags = async (t: T, name: string) => ((await (await t.request(`/v2/${name}/tags/list`)).json()) as { tags: string[] }).tags;
const stored = (t: T, b: Blob) => t.store.objects.has(objects.content(parseDigest(b.digest)));
const has = async (t: T, name: string, ref: string) => (await t.request(`/v2/${name}/manifests/${ref}`, { method: 'HEAD' })).status === 200;

describe('hosted retention policies', () => {
  it('never prune an immutable tag, however many newer tags there are', async () => {
    const t = testApp({ immutableTags: [{ repositories: [compileGlob('team/**')], tags: /^v\d+$/, label: 'immutableTags[0]' }] });
    const images = [image({ layers: [10] }), image({ layers: [20] }), image({ layers: [30] })];
    for (const [i, img] of images.entries()) {
      await t.pushImage('team/app', img, i === 2 ? 'latest' : `v${i + 1}`);
      t.clock.advance(1000);
    }
    await t.pushImage('team/app', images[2]!, 'edge');
    const report = await t.registry.gc({ graceMs: 0, hosted: [policy({ keepTags: 1, untaggedAfterMs: HOUR })] });
    // Only latest and edge are counted (v1 and v2 are immutable): the older of the two goes.
    expect(report.hosted?.tagsDeleted).toBe(1);
    expect((await tags(t, 'team/app')).sort()).toEqual(['edge', 'v1', 'v2']);
  });

  it('keeps the newest tags, deletes older ones, then their untagged manifests after the age, then their bytes', async () => {
    const t = testApp();
    const images = [image({ layers: [10] }), image({ layers: [20] }), image({ layers: [30] })];
    for (const [i, img] of images.entries()) {
      await t.pushImage('team/app', img, `v${i + 1}`);
      t.clock.advance(1000);
    }
    const hosted = [policy({ keepTags: 2, untaggedAfterMs: HOUR })];
    const deleted: string[] = [];
    const first = await t.registry.gc({ graceMs: 0, hosted, onHostedEvict: (e) => deleted.push(`${e.reason} ${e.what}`) });
    expect(first.hosted).toEqual({ repositories: 1, tagsDeleted: 1, manifestsDeleted: 0 });
    expect(deleted).toEqual(['keepTags v1']);
    expect((await tags(t, 'team/app')).sort()).toEqual(['v2', 'v3']);
    // Untagged now, and noted; kept until the age passes.
    expect(await has(t, 'team/app', images[0]!.manifest.digest)).toBe(true);
    t.clock.advance(HOUR);
    const second = await t.registry.gc({ graceMs: 0, hosted });
    expect(second.hosted?.manifestsDeleted).toBe(1);
    expect(await has(t, 'team/app', images[0]!.manifest.digest)).toBe(false);
    // Its config and layer are still linked in the repository: only the manifest's bytes go.
    expect(stored(t, images[0]!.manifest)).toBe(false);
    for (const img of images.slice(1)) expect(await has(t, 'team/app', img.manifest.digest)).toBe(true);
  });

  it('counts and prunes only the tags its pattern matches', async () => {
    const t = testApp();
    for (const tag of ['latest', 'v1', 'v2', 'dev']) {
      await t.pushImage('team/app', image({ layers: [tag.length * 7] }), tag);
      t.clock.advance(1000);
    }
    await t.registry.gc({ graceMs: 0, hosted: [policy({ tags: /^v\d+$/, keepTags: 1 })] });
    expect((await tags(t, 'team/app')).sort()).toEqual(['dev', 'latest', 'v2']);
  });

  it("never counts or prunes cosign's tags (signatures, attestations, the referrers tag schema)", async () => {
    const t = testApp();
    const img = image({ layers: [77] });
    await t.pushImage('team/app', img, 'v1');
    t.clock.advance(1000);
    const sig = image({ layers: [78] });
    await t.pushImage('team/app', sig, `sha256-${img.manifest.digest.slice(7)}.sig`);
    await t.registry.gc({ graceMs: 0, hosted: [policy({ keepTags: 1 })] });
    expect((await tags(t, 'team/app')).sort()).toEqual([`sha256-${img.manifest.digest.slice(7)}.sig`, 'v1']);
  });

  it("never deletes an index's children or a present manifest's referrers, and deletes a manifest pushed by digest and never tagged", async () => {
    const t = testApp();
    const { amd, arm, list } = await t.pushIndex('team/multi', [11, 12]);
    const sig = artifact(list, 'application/vnd.example.signature');
    await t.pushImage('team/multi', sig, sig.manifest.digest);
    const loose = image({ layers: [13] });
    await t.pushImage('team/multi', loose, loose.manifest.digest);
    const hosted = [policy({ untaggedAfterMs: HOUR })];
    await t.registry.gc({ graceMs: 0, hosted });
    t.clock.advance(HOUR);
    const report = await t.registry.gc({ graceMs: 0, hosted });
    expect(report.hosted?.manifestsDeleted).toBe(1);
    expect(await has(t, 'team/multi', loose.manifest.digest)).toBe(false);
    for (const m of [list, amd.manifest, arm.manifest, sig.manifest]) expect(await has(t, 'team/multi', m.digest)).toBe(true);
  });

  it('an index pushed while a pass deletes one of its untagged children is refused, never dangling', async () => {
    const t = testApp();
    const child = image({ layers: [61] });
    await t.pushImage('team/multi', child, child.manifest.digest);
    const hosted = [policy({ untaggedAfterMs: HOUR })];
    await t.registry.gc({ graceMs: 0, hosted });
    t.clock.advance(HOUR);
    // The pass lists the child as untagged; the index's push lands between that and the delete.
    const list = index([{ manifest: child.manifest, arch: 'amd64' }]);
    const del = t.index.delete.bind(t.index);
    let pushed: number | undefined;
    t.index.delete = (async (...args: Parameters<typeof del>) => {
      if (pushed === undefined && args[0].pk === 'manifest#team/multi' && args[0].sk === child.manifest.digest) {
        t.index.delete = del;
        pushed = (await t.pushManifest('team/multi', 'v1', list)).status;
      }
      return del(...args);
    }) as typeof del;
    await t.registry.gc({ graceMs: 0, hosted });
    expect(pushed).toBe(201);
    // The push rewrote the child's record first: the pass's delete at the version it read failed.
    expect(await has(t, 'team/multi', child.manifest.digest)).toBe(true);
    expect(await has(t, 'team/multi', 'v1')).toBe(true);
  });

  it('a manifest tagged again between two passes is kept', async () => {
    const t = testApp();
    const img = image({ layers: [40] });
    await t.pushImage('team/app', img, 'v1');
    expect((await t.request('/v2/team/app/manifests/v1', { method: 'DELETE' })).status).toBe(202);
    const hosted = [policy({ untaggedAfterMs: HOUR })];
    await t.registry.gc({ graceMs: 0, hosted });
    t.clock.advance(HOUR / 2);
    expect((await t.pushManifest('team/app', 'v1', img.manifest)).status).toBe(201);
    await t.registry.gc({ graceMs: 0, hosted });
    expect((await t.pushManifest('team/app', 'v2', img.manifest)).status).toBe(201);
    expect((await t.request('/v2/team/app/manifests/v1', { method: 'DELETE' })).status).toBe(202);
    expect((await t.request('/v2/team/app/manifests/v2', { method: 'DELETE' })).status).toBe(202);
    t.clock.advance(HOUR);
    // Untagged again, but only since the last pass noted it: a fresh note, not the old one.
    expect((await t.registry.gc({ graceMs: 0, hosted })).hosted?.manifestsDeleted).toBe(0);
    t.clock.advance(HOUR);
    expect((await t.registry.gc({ graceMs: 0, hosted })).hosted?.manifestsDeleted).toBe(1);
  });

  it('a dry run deletes nothing, and repositories no policy matches are left alone', async () => {
    const t = testApp();
    for (const name of ['team/app', 'other/app']) {
      for (const tag of ['a', 'b', 'c']) {
        await t.pushImage(name, image({ layers: [tag.charCodeAt(0)] }), tag);
        t.clock.advance(1000);
      }
    }
    const said: string[] = [];
    const dry = await t.registry.gc({ graceMs: 0, dryRun: true, hosted: [policy({ keepTags: 1 })], onHostedEvict: (e) => said.push(`${e.name}:${e.what}`) });
    expect(dry.hosted?.tagsDeleted).toBe(2);
    expect(said).toEqual(['team/app:b', 'team/app:a']);
    expect(await tags(t, 'team/app')).toEqual(['a', 'b', 'c']);
    await t.registry.gc({ graceMs: 0, hosted: [policy({ keepTags: 1 })] });
    expect(await tags(t, 'team/app')).toEqual(['c']);
    expect(await tags(t, 'other/app')).toEqual(['a', 'b', 'c']);
  });
});
