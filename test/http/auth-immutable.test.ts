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
 * manifest pushed again is fine, of two pushes racing to create the tag one wins, and a DELETE
 * by digest racing the tag's first push leaves the tag in place.
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

/**
 * A MemoryMetaIndex that runs `afterManifestDelete` once a manifest record is deleted and before
 * the DELETE goes on (to the tags that point at it), and `beforeTagCreate` before a tag's
 * put-if-absent: each set once by a test, to interleave a push with a DELETE.
 */
class HookIndex extends MemoryMetaIndex {
  afterManifestDelete?: () => Promise<void>;
  beforeTagCreate?: () => Promise<void>;
  override async delete(...args: Parameters<MemoryMetaIndex['delete']>): Promise<boolean> {
    const deleted = await super.delete(...args);
    const hook = this.afterManifestDelete;
    if (deleted && hook && args[0].pk.startsWith('manifest#')) {
      this.afterManifestDelete = undefined;
      await hook();
    }
    return deleted;
  }
  override async putIfAbsent(...args: Parameters<MemoryMetaIndex['putIfAbsent']>): Promise<boolean> {
    const hook = this.beforeTagCreate;
    if (hook && args[0].pk.startsWith('tag#')) {
      this.beforeTagCreate = undefined;
      await hook();
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

  // The DELETE checks for immutable tags before it deletes the record; a first push of the tag
  // can land after that check. Either way the tag must survive the DELETE.
  it.each([
    ['the whole push runs after the record is deleted (the push writes the record again)', 'after-delete'],
    ['the push writes the record, the DELETE deletes it, then the push creates the tag', 'around-delete'],
  ] as const)('a DELETE by digest racing the first push of an immutable tag leaves the tag: %s', async (_, order) => {
    const index = new HookIndex(new TestClock());
    const t = testApp({ immutableTags: RULES }, { auth, connection: testConnection, index });
    const [a, b] = [image(), image()];
    await withImages(t, a, b);
    let pushed: Response | undefined;
    const push = () => putManifestAs(t.request, 'team/app', 'v1', a, ADMIN);
    let deleted: Response;
    if (order === 'after-delete') {
      index.afterManifestDelete = async () => {
        pushed = await push();
      };
      deleted = await t.request(`/v2/team/app/manifests/${a.manifest.digest}`, { method: 'DELETE', headers: ADMIN });
    } else {
      // The push waits at its tag write until the DELETE has deleted the record, and the DELETE
      // waits there until the push is done.
      let deleting: Promise<Response> | Response | undefined;
      let recordGone!: () => void;
      const gone = new Promise<void>((resolve) => (recordGone = resolve));
      let pushDone!: () => void;
      const done = new Promise<void>((resolve) => (pushDone = resolve));
      index.beforeTagCreate = async () => {
        index.afterManifestDelete = async () => {
          recordGone();
          await done;
        };
        deleting = t.request(`/v2/team/app/manifests/${a.manifest.digest}`, { method: 'DELETE', headers: ADMIN });
        await Promise.race([gone, deleting]);
      };
      pushed = await push();
      pushDone();
      deleted = await deleting!;
    }
    expect(pushed?.status, 'the push ran inside the DELETE').toBe(201);
    expect(deleted.status).toBe(202);
    expect(index.afterManifestDelete).toBeUndefined();
    // Pushed after the record went, the manifest is there; pushed before, the tag names a miss.
    const read = await t.request('/v2/team/app/manifests/v1', { headers: ADMIN });
    if (order === 'after-delete') expect(read.status).toBe(200);
    else await expectOciError(read, { status: 404, code: 'MANIFEST_UNKNOWN' });
    // The tag stays on the manifest: another one is refused, the same one is taken (again).
    await expectOciError(await putManifestAs(t.request, 'team/app', 'v1', b, ADMIN), { status: 403, code: 'DENIED', message: 'immutableTags[1]' });
    expect((await putManifestAs(t.request, 'team/app', 'v1', a, ADMIN)).status).toBe(201);
    expect(await tagged(t, 'v1')).toBe(a.manifest.digest);
    await expectOciError(await t.request('/v2/team/app/manifests/v1', { method: 'DELETE', headers: ADMIN }), { status: 403, code: 'DENIED' });
  });
});
