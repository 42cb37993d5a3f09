import { describe, expect, it } from 'vitest';
import { Auth } from '../../src/core/auth/auth.js';
import type { ImmutableTagRule } from '../../src/core/auth/config.js';
import { compileGlob } from '../../src/core/glob.js';
import { authConfig, basic, pushImageAs, putManifestAs, rule, testConnection, user } from '../support/auth.js';
import { MemoryMetaIndex } from '../../src/adapters/memory/meta-index.js';
import { testApp, TestClock } from '../support/app.js';
import { image, type Image } from '../support/images.js';
import { expectOciError } from '../support/oci-errors.js';

/**
 * Immutable tags (src/core/registry/immutable-tags.ts): once a tag a rule names points at a
 * manifest, it is never moved or deleted, whoever asks (admin holds delete here); the same
 * manifest pushed again is fine, and of two pushes racing to create the tag one wins.
 */

const ADMIN = basic('admin', 'admin-pw');
const auth = Auth.create(authConfig({ users: [await user('admin', 'admin-pw')], rules: [rule(['**'], { users: ['admin'] }, ['pull', 'push', 'delete'])] }));
const RULES: ImmutableTagRule[] = [
  { repositories: [compileGlob('scratch/**')], label: 'immutableTags[0]' },
  { repositories: [compileGlob('team/**')], tags: /^v[0-9]+(?:\.[0-9]+)*$/, label: 'immutableTags[1]' },
];

/** A MemoryMetaIndex whose tag put-if-absent calls, once armed, wait for each other in pairs (or 500 ms). */
class BarrierIndex extends MemoryMetaIndex {
  private waiting: Array<() => void> = [];
  private armed = false;
  met = false;
  arm(): void {
    this.armed = true;
    this.met = false;
  }
  override async putIfAbsent(...args: Parameters<MemoryMetaIndex['putIfAbsent']>): Promise<boolean> {
    if (this.armed && args[0].pk.startsWith('tag#')) {
      await new Promise<void>((resolve) => {
        this.waiting.push(resolve);
        if (this.waiting.length === 2) {
          this.met = true;
          this.armed = false;
          for (const go of this.waiting.splice(0)) go();
        } else setTimeout(resolve, 500);
      });
    }
    return super.putIfAbsent(...args);
  }
}

function app() {
  return testApp({ immutableTags: RULES }, { auth, connection: testConnection });
}

async function withImages(t: ReturnType<typeof app>, ...imgs: Image[]) {
  // The blobs of each image, and its manifest by digest: only the tag is left to push.
  for (const img of imgs) await pushImageAs(t.request, 'team/app', img, img.manifest.digest, ADMIN);
}

async function tagged(t: ReturnType<typeof app>, tag: string): Promise<string | null> {
  const res = await t.request(`/v2/team/app/manifests/${tag}`, { method: 'HEAD', headers: ADMIN });
  return res.status === 200 ? res.headers.get('docker-content-digest') : null;
}

describe('immutable tags', () => {
  it('are not moved to another manifest: 403 DENIED naming the rule', async () => {
    const t = app();
    const [a, b] = [image(), image()];
    await withImages(t, a, b);
    expect((await putManifestAs(t.request, 'team/app', 'v1.2', a, ADMIN)).status).toBe(201);
    const moved = await putManifestAs(t.request, 'team/app', 'v1.2', b, ADMIN);
    const error = await expectOciError(moved, { status: 403, code: 'DENIED', message: /tag "v1\.2" of team\/app is immutable \(immutableTags\[1\]\)/ });
    expect(error!.detail).toEqual({ rule: 'immutableTags[1]', tag: 'v1.2' });
    expect(await tagged(t, 'v1.2')).toBe(a.manifest.digest);
  });

  it('take the same manifest again (201), and leave tags outside the rule movable', async () => {
    const t = app();
    const [a, b] = [image(), image()];
    await withImages(t, a, b);
    expect((await putManifestAs(t.request, 'team/app', 'v1', a, ADMIN)).status).toBe(201);
    const again = await putManifestAs(t.request, 'team/app', 'v1', a, ADMIN);
    expect(again.status).toBe(201);
    expect(again.headers.get('docker-content-digest')).toBe(a.manifest.digest);
    for (const img of [a, b]) expect((await putManifestAs(t.request, 'team/app', 'latest', img, ADMIN)).status).toBe(201);
    expect(await tagged(t, 'latest')).toBe(b.manifest.digest);
  });

  it('a rule without tags covers every tag of its repositories', async () => {
    const t = app();
    const [a, b] = [image(), image()];
    await pushImageAs(t.request, 'scratch/x', a, 'latest', ADMIN);
    await pushImageAs(t.request, 'scratch/x', b, b.manifest.digest, ADMIN);
    await expectOciError(await putManifestAs(t.request, 'scratch/x', 'latest', b, ADMIN), { status: 403, code: 'DENIED', message: 'immutableTags[0]' });
  });

  it('are not deleted, by tag or by the digest they name', async () => {
    const t = app();
    const a = image();
    await withImages(t, a);
    expect((await putManifestAs(t.request, 'team/app', 'v1', a, ADMIN)).status).toBe(201);
    await expectOciError(await t.request('/v2/team/app/manifests/v1', { method: 'DELETE', headers: ADMIN }), {
      status: 403,
      code: 'DENIED',
      message: /immutable \(immutableTags\[1\]\) and cannot be deleted/,
    });
    await expectOciError(await t.request(`/v2/team/app/manifests/${a.manifest.digest}`, { method: 'DELETE', headers: ADMIN }), {
      status: 403,
      code: 'DENIED',
      message: 'immutableTags[1]',
    });
    expect(await tagged(t, 'v1')).toBe(a.manifest.digest);
    expect((await t.request(`/v2/team/app/manifests/${a.manifest.digest}`, { headers: ADMIN })).status).toBe(200);
  });

  it('a manifest under no immutable tag is still deleted by digest', async () => {
    const t = app();
    const a = image();
    await withImages(t, a);
    expect((await putManifestAs(t.request, 'team/app', 'latest', a, ADMIN)).status).toBe(201);
    expect((await t.request(`/v2/team/app/manifests/${a.manifest.digest}`, { method: 'DELETE', headers: ADMIN })).status).toBe(202);
  });

  it('of two different manifests racing to create one, exactly one wins (both past the first check)', async () => {
    // Every tag creation waits until two are in flight, so both pushes have found the tag absent.
    const index = new BarrierIndex(new TestClock());
    const t = testApp({ immutableTags: RULES }, { auth, connection: testConnection, index });
    for (let round = 0; round < 4; round++) {
      const [a, b] = [image(), image()];
      await withImages(t, a, b);
      const tag = `v${round}`;
      index.arm();
      const answers = await Promise.all([putManifestAs(t.request, 'team/app', tag, a, ADMIN), putManifestAs(t.request, 'team/app', tag, b, ADMIN)]);
      expect(index.met, 'both pushes reached the tag write').toBe(true);
      const statuses = answers.map((r) => r.status).sort();
      expect(statuses, `round ${round}`).toEqual([201, 403]);
      const winner = answers.find((r) => r.status === 201)!.headers.get('docker-content-digest');
      const loser = answers.find((r) => r.status === 403)!;
      await expectOciError(loser, { status: 403, code: 'DENIED', message: 'immutableTags[1]' });
      expect([a.manifest.digest, b.manifest.digest]).toContain(winner);
      expect(await tagged(t, tag)).toBe(winner);
    }
  });
});
