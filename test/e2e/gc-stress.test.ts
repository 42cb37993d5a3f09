import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256, type Blob } from '../support/images.js';
import { Fleet, KeyedLock, seeded, sleep, type Answer } from './support/fleet.js';
import { auditStore, readContent, readIndex, type Ref } from './support/gc-audit.js';
import { deletedCount, gcCli } from './support/gc-cli.js';
import { namedOf, Pool, type Pushable } from './support/stress-content.js';
import { seedImage, startUpstreamRegistry, type UpstreamRegistry } from './support/upstream-registry.js';

/**
 * Garbage collection under load: three Outpost processes on one data directory serve a seeded
 * random mix of pushes, pulls, mounts, deletes and mirror fills while `outpost gc --grace 0s`
 * runs over and over beside them (now and then killed half-way), and one instance at a time is
 * killed with SIGKILL and started again. Then the mix stops, two collections run, and the store
 * is audited through the API and straight from the files and the SQLite index.
 *
 * Repositories:
 *   stress/r0..r3   modelled: each one's operations run one at a time (a lock per repository,
 *                   in this test), so the test knows exactly which blobs are linked, which
 *                   manifests are present and what each tag names; content is shared between
 *                   them (the same images, mounts), so the collector sees digests held from many
 *                   repositories, and every pull of something the model says is there must be a
 *                   full, byte-identical 200
 *   chaos/c0, c1    unmodelled: workers push, delete and pull there with no order at all, so a
 *                   manifest push meets its blobs being deleted and collected (MANIFEST_BLOB_UNKNOWN,
 *                   the client pushes them again); any 200 must still be full and byte-identical
 *   hub/library/mK  mirrored from Distribution (docker-registry): every pull must be served
 * A request cut by a kill is retried on another instance until the registry answers; a 404 to a
 * delete retried that way means the cut attempt did it. 503 with Retry-After is waited through.
 *
 * Knobs: GC_STRESS_SECONDS (length of the mix, default 25), GC_STRESS_SEED (replays a run's
 * choices; timing still varies), GC_STRESS_KILLS=0 (no instance kills).
 */

const SECONDS = Number(process.env.GC_STRESS_SECONDS ?? 25);
const SEED = Number(process.env.GC_STRESS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const KILLS = process.env.GC_STRESS_KILLS !== '0';
const WORKERS = 6;
const MODELLED = ['stress/r0', 'stress/r1', 'stress/r2', 'stress/r3'];
const CHAOS = ['chaos/c0', 'chaos/c1'];
const MIRRORED = (i: number) => `hub/library/m${i}`;
const TAGS = ['t0', 't1', 't2', 't3'];
const ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

class RepoModel {
  links = new Set<string>();
  manifests = new Set<string>();
  tags = new Map<string, string>();
  everLinked = new Set<string>();
  everManifests = new Set<string>();
}

const code = (a: Answer): string | undefined => {
  try {
    return (JSON.parse(a.bytes.toString('utf8')) as { errors?: Array<{ code: string }> }).errors?.[0]?.code;
  } catch {
    return undefined;
  }
};

let work: string;
let dataDir: string;
let fleet: Fleet;
let up: UpstreamRegistry;
let outpostEnv: Record<string, string>;
const random = seeded(SEED);
const pool = new Pool(random);
const { byDigest, pushableOf, mirror } = pool;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-gc-stress-'));
  dataDir = join(work, 'data');
  up = await startUpstreamRegistry();
  for (const [i, img] of mirror.entries()) await seedImage(up, `library/m${i}`, 'v1', img);
  // Collections of their own too when the mix lasts past a minute (gc.interval's least).
  const config = { upstreams: [{ name: 'hub', url: up.url }], gc: { grace: '1m', interval: '1m' } };
  outpostEnv = { OUTPOST_CONFIG: JSON.stringify(config) };
  fleet = await Fleet.start(dataDir, outpostEnv, 3, seeded(SEED ^ 0x5eed));
}, 120_000);

afterAll(async () => {
  await fleet?.stop();
  await up?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('garbage collection under load, kills and concurrent collections', () => {
  it(`keeps everything referenced, collects the rest, and never serves a cut 200 (seed ${SEED})`, async () => {
    const failures: string[] = [];
    const stats = new Map<string, number>();
    const count = (what: string, n = 1) => stats.set(what, (stats.get(what) ?? 0) + n);
    const fail = (what: string) => {
      if (failures.length < 200) failures.push(what);
    };
    const models = new Map(MODELLED.map((r) => [r, new RepoModel()]));
    const locks = new KeyedLock();
    // Digests an operation touched when one of its attempts was cut by a kill, or when it was
    // refused with 503 past the wait: what a reference left without its item may be explained by.
    const cutTouched = new Set<string>();
    const unavailableTouched = new Set<string>();

    const send = async (method: string, path: string, init: { body?: Buffer; headers?: Record<string, string> } = {}, touches: string[] = []) => {
      const a = await fleet.send(method, path, init);
      count('requests');
      if (a.interrupted) {
        count('requests cut by a kill', a.interrupted);
        for (const d of touches) cutTouched.add(d);
      }
      if (a.unavailable) count('503 waited through', a.unavailable);
      if (a.status === 503) {
        count('503 given up after 20 s');
        for (const d of touches) unavailableTouched.add(d);
      }
      const length = a.headers.get('content-length');
      if (a.status === 200 && method === 'GET' && length !== null && Number(length) !== a.bytes.length) {
        fail(`${method} ${path}: 200 with Content-Length ${length} but ${a.bytes.length} bytes`);
      }
      return a;
    };
    /** A 200 must carry exactly the expected bytes; true when it did. */
    const served = (a: Answer, expected: Blob, what: string): boolean => {
      if (a.status !== 200) return false;
      count('200s checked');
      if (a.bytes.length === 0 || a.bytes.length !== expected.size || sha256(a.bytes) !== expected.digest) {
        fail(`${what}: a truncated or wrong 200 (${a.bytes.length} bytes, expected ${expected.size}, sha ${sha256(a.bytes)})`);
        return false;
      }
      return true;
    };
    const getManifest = (repo: string, reference: string, touches: string[] = []) => send('GET', `/v2/${repo}/manifests/${reference}`, { headers: { Accept: ACCEPT } }, touches);
    const getBlob = (repo: string, digest: string) => send('GET', `/v2/${repo}/blobs/${digest}`, {}, [digest]);
    const putManifest = (repo: string, reference: string, m: Blob, p: Pushable) =>
      send('PUT', `/v2/${repo}/manifests/${reference}`, { body: m.bytes, headers: { 'Content-Type': m.mediaType } }, [m.digest, ...namedOf(p, m.digest)]);
    const pushBlobBytes = (repo: string, b: Blob) =>
      send('POST', `/v2/${repo}/blobs/uploads/?digest=${b.digest}`, { body: b.bytes, headers: { 'Content-Type': 'application/octet-stream' } }, [b.digest]);

    // --- modelled repositories (callers hold the repository's lock) ---

    const linkBlob = async (repo: string, model: RepoModel, b: Blob, r: () => number, force = false): Promise<boolean> => {
      if (model.links.has(b.digest) && !force) return true;
      const sources = MODELLED.filter((s) => s !== repo && models.get(s)!.links.has(b.digest));
      let a: Answer | undefined;
      if (sources.length > 0 && r() < 0.5) {
        const from = sources[Math.floor(r() * sources.length)]!;
        a = await send('POST', `/v2/${repo}/blobs/uploads/?mount=${b.digest}&from=${from}`, {}, [b.digest]);
        if (a.status === 201) count('mounts');
        else if (a.status === 202) {
          // The source lost it meanwhile: upload into the session the mount opened.
          count('mounts fallen back to upload');
          const at = new URL(a.headers.get('location')!, 'http://x');
          at.searchParams.set('digest', b.digest);
          a = await send('PUT', at.pathname + at.search, { body: b.bytes, headers: { 'Content-Type': 'application/octet-stream' } }, [b.digest]);
          if (a.status === 404 && a.interrupted) a = await pushBlobBytes(repo, b);
        }
      } else {
        a = await pushBlobBytes(repo, b);
      }
      if (a.status !== 201) {
        if (a.status !== 503) fail(`link ${b.digest} into ${repo}: ${a.status} ${a.bytes.toString().slice(0, 200)}`);
        return false;
      }
      count('blobs pushed or mounted');
      model.links.add(b.digest);
      model.everLinked.add(b.digest);
      return true;
    };

    const pushManifestModelled = async (repo: string, model: RepoModel, p: Pushable, m: Blob, reference: string, r: () => number): Promise<boolean> => {
      const img = p.images.find((i) => i.manifest.digest === m.digest);
      for (let attempt = 0; attempt < 3; attempt++) {
        if (img) for (const b of [img.config, ...img.layers]) if (!(await linkBlob(repo, model, b, r, attempt > 0))) return false;
        const a = await putManifest(repo, reference, m, p);
        if (a.status === 201) {
          count('manifests pushed');
          model.manifests.add(m.digest);
          model.everManifests.add(m.digest);
          if (reference.startsWith('t')) model.tags.set(reference, m.digest);
          return true;
        }
        if (a.status === 400 && code(a) === 'MANIFEST_BLOB_UNKNOWN') {
          // In a modelled repository every named blob is linked, under the lock: this is not a
          // blob collected between its push and its manifest (that is chaos/'s legitimate case).
          count('MANIFEST_BLOB_UNKNOWN in a modelled repository');
          fail(`PUT ${repo}:${reference} (${m.digest}): MANIFEST_BLOB_UNKNOWN although the test linked every blob it names: ${a.bytes.toString().slice(0, 300)}`);
          continue;
        }
        if (a.status !== 503) fail(`PUT ${repo}:${reference} (${m.digest}): ${a.status} ${a.bytes.toString().slice(0, 200)}`);
        return false;
      }
      return false;
    };

    const pushModelled = async (repo: string, r: () => number) => {
      const model = models.get(repo)!;
      const p = r() < 0.5 ? pool.pick(r) : pushableOf.get(pool.fresh(r).manifest.digest)!;
      if (p.images.length > 1) {
        for (const child of p.images) if (!(await pushManifestModelled(repo, model, pushableOf.get(child.manifest.digest)!, child.manifest, child.manifest.digest, r))) return;
      }
      const tag = TAGS[Math.floor(r() * TAGS.length)]!;
      await pushManifestModelled(repo, model, p, p.top, r() < 0.85 ? tag : p.top.digest, r);
    };

    const pullModelled = async (repo: string, r: () => number) => {
      const model = models.get(repo)!;
      const present = [...model.manifests];
      if (present.length === 0) return;
      const m = present[Math.floor(r() * present.length)]!;
      const tag = [...model.tags].find(([, d]) => d === m)?.[0];
      const reference = tag && r() < 0.6 ? tag : m;
      const a = await getManifest(repo, reference, [m]);
      count('modelled pulls');
      if (!served(a, byDigest.get(m)!, `GET ${repo}:${reference}`)) {
        if (a.status !== 200) fail(`GET ${repo}:${reference} (${m}, present in the model): ${a.status} ${a.bytes.toString().slice(0, 200)}`);
        return;
      }
      const p = pushableOf.get(m)!;
      const isIndex = p.top.digest === m && p.images.length > 1;
      for (const n of namedOf(p, m)) {
        const expected = byDigest.get(n)!;
        const held = isIndex ? model.manifests.has(n) : model.links.has(n);
        const got = isIndex ? await getManifest(repo, n, [n]) : await getBlob(repo, n);
        if (served(got, expected, `GET ${repo} ${n}`)) continue;
        if (held || got.status !== 404) fail(`GET ${repo} ${n} (named by ${m}, ${held ? 'linked' : 'not linked'}): ${got.status}`);
        // Not in the repository any more, but the manifest still names it: its bytes stay.
        const file = readContent(dataDir, n);
        if (!file.ok) fail(`${n}, named by ${repo}@${m} which is present, is not stored: ${file.why}`);
        else count('named-only content found on disk');
      }
    };

    const deleteModelled = async (repo: string, r: () => number) => {
      const model = models.get(repo)!;
      const pick = r();
      if (pick < 0.4 && model.links.size > 0) {
        const d = [...model.links][Math.floor(r() * model.links.size)]!;
        const a = await send('DELETE', `/v2/${repo}/blobs/${d}`, {}, [d]);
        if (a.status === 202 || (a.status === 404 && a.interrupted)) {
          model.links.delete(d);
          count('blob links deleted');
        } else fail(`DELETE ${repo} blob ${d} (linked in the model): ${a.status}`);
      } else if (pick < 0.8 && model.manifests.size > 0) {
        const m = [...model.manifests][Math.floor(r() * model.manifests.size)]!;
        const a = await send('DELETE', `/v2/${repo}/manifests/${m}`, {}, [m, ...namedOf(pushableOf.get(m)!, m)]);
        if (a.status === 202 || (a.status === 404 && a.interrupted)) {
          model.manifests.delete(m);
          for (const [t, d] of model.tags) if (d === m) model.tags.delete(t);
          count('manifests deleted');
        } else fail(`DELETE ${repo} manifest ${m} (present in the model): ${a.status}`);
      } else if (model.tags.size > 0) {
        const t = [...model.tags.keys()][Math.floor(r() * model.tags.size)]!;
        const a = await send('DELETE', `/v2/${repo}/manifests/${t}`);
        if (a.status === 202 || (a.status === 404 && a.interrupted)) {
          model.tags.delete(t);
          count('tags deleted');
        } else fail(`DELETE ${repo}:${t} (present in the model): ${a.status}`);
      }
    };

    // --- chaos repositories: no order, no model ---

    const pushChaos = async (repo: string, r: () => number) => {
      const p = r() < 0.5 ? pool.pick(r) : pushableOf.get(pool.fresh(r).manifest.digest)!;
      for (const img of p.images) {
        const isTop = img.manifest.digest === p.top.digest;
        let done = false;
        for (let attempt = 0; attempt < 5 && !done; attempt++) {
          for (const b of [img.config, ...img.layers]) {
            const a = await pushBlobBytes(repo, b);
            if (a.status !== 201 && a.status !== 503) fail(`chaos push ${b.digest} to ${repo}: ${a.status}`);
          }
          const a = await putManifest(repo, isTop ? 'latest' : img.manifest.digest, img.manifest, pushableOf.get(img.manifest.digest)!);
          if (a.status === 201) done = true;
          else if (a.status === 400 && code(a) === 'MANIFEST_BLOB_UNKNOWN') count('chaos MANIFEST_BLOB_UNKNOWN (pushed again)');
          else if (a.status === 503) return;
          else return fail(`chaos PUT ${repo} ${img.manifest.digest}: ${a.status} ${a.bytes.toString().slice(0, 200)}`);
        }
        if (!done) return;
      }
      if (p.images.length > 1) {
        const a = await putManifest(repo, 'latest', p.top, p);
        // A child deleted meanwhile is an unknown manifest of the index: refused the same way.
        if (a.status !== 201 && !(a.status === 400 && code(a) === 'MANIFEST_BLOB_UNKNOWN') && a.status !== 503) fail(`chaos PUT index ${repo}: ${a.status}`);
      }
      count('chaos pushes');
    };

    const chaosOther = async (repo: string, r: () => number) => {
      const p = pool.pick(r);
      const img = p.images[Math.floor(r() * p.images.length)]!;
      const pick = r();
      if (pick < 0.3) {
        const b = [img.config, ...img.layers][Math.floor(r() * (1 + img.layers.length))]!;
        const a = await send('DELETE', `/v2/${repo}/blobs/${b.digest}`, {}, [b.digest]);
        if (a.status !== 202 && a.status !== 404) fail(`chaos DELETE ${repo} ${b.digest}: ${a.status}`);
        count('chaos deletes');
      } else if (pick < 0.5) {
        const m = r() < 0.5 ? p.top : img.manifest;
        const a = await send('DELETE', `/v2/${repo}/manifests/${m.digest}`, {}, [m.digest, ...namedOf(pushableOf.get(m.digest)!, m.digest)]);
        if (a.status !== 202 && a.status !== 404) fail(`chaos DELETE ${repo} ${m.digest}: ${a.status}`);
        count('chaos deletes');
      } else {
        const a = await getManifest(repo, img.manifest.digest, [img.manifest.digest]);
        count('chaos pulls');
        if (a.status !== 404 && !served(a, img.manifest, `chaos GET ${repo} ${img.manifest.digest}`)) fail(`chaos GET ${repo} ${img.manifest.digest}: ${a.status}`);
        for (const b of [img.config, ...img.layers]) {
          const got = await getBlob(repo, b.digest);
          if (got.status !== 404 && !served(got, b, `chaos GET ${repo} ${b.digest}`)) fail(`chaos GET ${repo} ${b.digest}: ${got.status}`);
        }
      }
    };

    const pullMirrored = async (r: () => number) => {
      const i = Math.floor(r() * mirror.length);
      const img = mirror[i]!;
      const repo = MIRRORED(i);
      const a = await getManifest(repo, 'v1', [img.manifest.digest]);
      count('mirror pulls');
      if (!served(a, img.manifest, `GET ${repo}:v1`)) return fail(`mirror GET ${repo}:v1: ${a.status} ${a.bytes.toString().slice(0, 200)}`);
      for (const b of [img.config, ...img.layers]) {
        const got = await getBlob(repo, b.digest);
        if (!served(got, b, `GET ${repo} ${b.digest}`)) fail(`mirror GET ${repo} ${b.digest}: ${got.status} ${got.bytes.toString().slice(0, 200)}`);
      }
    };

    // --- the mix ---

    const deadline = Date.now() + SECONDS * 1000;
    const worker = async (w: number) => {
      const r = seeded(SEED + 1000 * (w + 1));
      while (Date.now() < deadline) {
        const x = r();
        const repo = MODELLED[Math.floor(r() * MODELLED.length)]!;
        const chaos = CHAOS[Math.floor(r() * CHAOS.length)]!;
        try {
          if (x < 0.3) await locks.with(repo, () => pushModelled(repo, r));
          else if (x < 0.5) await locks.with(repo, () => pullModelled(repo, r));
          else if (x < 0.65) await locks.with(repo, () => deleteModelled(repo, r));
          else if (x < 0.75) await pushChaos(chaos, r);
          else if (x < 0.87) await chaosOther(chaos, r);
          else await pullMirrored(r);
          count('operations');
        } catch (err) {
          fail(`worker ${w}: ${String(err)}`);
        }
      }
    };

    const gcRuns = { done: 0, killed: 0, deleted: 0, failedStatus: [] as string[] };
    const storeEnv = { ...outpostEnv, OUTPOST_STORE: 'local', OUTPOST_DATA_DIR: dataDir };
    const gcOnce = (killAfterMs?: number) => gcCli(['--grace', '0s'], storeEnv, { killAfterMs });
    const collector = async () => {
      const r = seeded(SEED ^ 0x6c);
      while (Date.now() < deadline) {
        const kill = r() < 0.2 ? 30 + r() * 600 : undefined;
        const run = await gcOnce(kill);
        if (run.status === null) gcRuns.killed++;
        else {
          gcRuns.done++;
          gcRuns.deleted += deletedCount(run.stdout);
          if (run.status !== 0) gcRuns.failedStatus.push(`status ${run.status}: ${(run.stdout + run.stderr).slice(-500)}`);
        }
        await sleep(r() * 400);
      }
    };
    const killer = async () => {
      const r = seeded(SEED ^ 0x1d);
      while (KILLS && Date.now() < deadline - 3000) {
        await sleep(2000 + r() * 3000);
        await fleet.killAndRestart(Math.floor(r() * 3), 200 + r() * 800);
      }
    };

    const started = Date.now();
    await Promise.all([...Array.from({ length: WORKERS }, (_, w) => worker(w)), collector(), killer()]);
    const mixSeconds = (Date.now() - started) / 1000;

    // --- the audit ---

    const finals = [await gcOnce(), await gcOnce()];
    for (const run of finals) if (run.status !== 0) fail(`final outpost gc exited ${run.status}: ${run.stdout}${run.stderr}`);
    const finalDeleted = finals.map((run) => deletedCount(run.stdout));
    if (finalDeleted[1] !== 0) fail(`the second final collection still deleted ${finalDeleted[1]} objects:\n${finals[1]!.stdout}`);

    // Through the API: the modelled repositories are exactly as the model says.
    let apiChecked = 0;
    const catalog = await send('GET', '/v2/_catalog?n=1000');
    const listed = new Set((JSON.parse(catalog.bytes.toString()) as { repositories: string[] }).repositories);
    for (const [repo, model] of models) {
      if ((model.everLinked.size > 0 || model.everManifests.size > 0) && !listed.has(repo)) fail(`_catalog does not list ${repo}`);
      const tags = await send('GET', `/v2/${repo}/tags/list`);
      const got = tags.status === 200 ? ((JSON.parse(tags.bytes.toString()) as { tags: string[] | null }).tags ?? []) : [];
      for (const t of got) {
        if (model.tags.has(t)) continue;
        // A delete of the manifest cut between its record and its tags leaves the tag pointing at
        // nothing, which reads as a miss (manifests.ts); anything else is the model's divergence.
        // (A manifest pushed again by digest then revives such a tag.)
        const a = await getManifest(repo, t);
        const revived = a.status === 200 && model.manifests.has(sha256(a.bytes));
        if ((a.status === 404 || revived) && cutTouched.size > 0) count('dangling tags left by a cut delete');
        else fail(`audit: ${repo} lists tag ${t}, which the model does not have: GET answers ${a.status}`);
      }
      for (const t of model.tags.keys()) if (!got.includes(t)) fail(`audit: ${repo} does not list tag ${t}`);
      for (const [t, m] of model.tags) {
        const a = await getManifest(repo, t);
        apiChecked++;
        if (!served(a, byDigest.get(m)!, `audit GET ${repo}:${t}`)) fail(`audit: ${repo}:${t} should be ${m}: ${a.status}`);
      }
      for (const m of model.everManifests) {
        const a = await getManifest(repo, m);
        apiChecked++;
        if (model.manifests.has(m)) {
          if (!served(a, byDigest.get(m)!, `audit GET ${repo}@${m}`)) fail(`audit: ${repo}@${m} is present in the model: ${a.status}`);
          for (const n of namedOf(pushableOf.get(m)!, m)) {
            const file = readContent(dataDir, n);
            if (!file.ok) fail(`audit: ${n}, named by ${repo}@${m}, is not stored: ${file.why}`);
          }
        } else if (a.status !== 404) fail(`audit: ${repo}@${m} was deleted, but GET answers ${a.status}`);
      }
      for (const d of model.everLinked) {
        const a = await getBlob(repo, d);
        apiChecked++;
        if (model.links.has(d)) {
          if (!served(a, byDigest.get(d)!, `audit GET ${repo} blob ${d}`)) fail(`audit: blob ${d} is linked in ${repo} in the model: ${a.status}`);
        } else if (a.status !== 404) fail(`audit: blob ${d} was unlinked from ${repo}, but GET answers ${a.status}`);
      }
    }
    // Every mirrored image still pulls whole.
    for (let i = 0; i < mirror.length; i++) await pullMirrored(() => i / mirror.length);

    // Straight from the index and the files.
    const snap = readIndex(join(dataDir, 'index.db'));
    for (const [repo, model] of models) {
      expect.soft([...(snap.links.get(repo)?.keys() ?? [])].sort(), `blob links of ${repo} in the index`).toEqual([...model.links].sort());
      expect.soft([...(snap.records.get(repo)?.keys() ?? [])].sort(), `manifest records of ${repo} in the index`).toEqual([...model.manifests].sort());
    }
    // Mirrored repositories are stored under the upstream's namespace (its host), not the alias.
    const audit = auditStore(dataDir, snap, (repo) => repo.startsWith(`${up.host}/`));
    for (const m of audit.missing) fail(`missing: ${m}`);
    for (const m of audit.unheld) fail(`unheld: ${m}`);
    for (const m of audit.deletedButReferenced) fail(`referenced but deleted: ${m}`);
    for (const g of audit.garbage) fail(`unreferenced and not collected: ${g}`);
    if (audit.inDeletion.length > 0 && gcRuns.killed === 0) for (const d of audit.inDeletion) fail(`in deletion with no collection killed: ${d}`);
    // A reference no item stands on is a crash's leak (kept longer, never lost): explained by a
    // kill cutting an operation on that digest. A refusal (503) must leave nothing behind, and
    // any other leftover is a bug: the content is never collected.
    const unexplained: string[] = [];
    let orphans = 0;
    for (const [digest, refs] of audit.orphanRefs) {
      for (const ref of refs) {
        orphans++;
        if (ref.kind === 'writer' ? fleet.kills > 0 : cutTouched.has(digest)) continue;
        const refused = unavailableTouched.has(digest) ? ' (an operation on it was refused with 503)' : '';
        unexplained.push(`${digest} ${describeRef(ref)}${refused}`);
      }
    }
    for (const u of unexplained) fail(`reference with no item standing on it (not explained by a kill): ${u}`);

    const summary = {
      seed: SEED,
      mixSeconds,
      kills: fleet.kills,
      gcRuns: { ...gcRuns, failedStatus: gcRuns.failedStatus.length },
      finalDeleted,
      finalRuns: finals.map((run) => run.stdout.split('\n').filter((l) => l.startsWith('outpost gc:')).join(' | ')),
      ...Object.fromEntries(stats),
      apiChecked,
      audit: {
        storedObjects: audit.objects,
        referenced: audit.referenced.size,
        leakedObjects: audit.leaked.length,
        inDeletion: audit.inDeletion.length,
        garbage: audit.garbage.length,
        orphanRefs: orphans,
        unexplainedOrphanRefs: unexplained.length,
        links: [...snap.links.values()].reduce((n, m) => n + m.size, 0),
        records: [...snap.records.values()].reduce((n, m) => n + m.size, 0),
      },
    };
    console.log(`gc-stress summary: ${JSON.stringify(summary, null, 1)}`);
    for (const s of gcRuns.failedStatus.slice(0, 5)) console.log(`gc-stress: a collection during the mix exited ${s}`);
    expect(failures, `seed ${SEED}; failures:\n${failures.join('\n')}\n${fleet.logs()}`).toEqual([]);
    expect(stats.get('200s checked') ?? 0).toBeGreaterThan(50);
    expect(gcRuns.done).toBeGreaterThan(0);
  }, 300_000);
});

function describeRef(ref: Ref): string {
  return `${ref.kind}:${ref.repository}:${ref.from}${ref.expiresAt ? ` (expires ${new Date(ref.expiresAt).toISOString()})` : ''}`;
}
