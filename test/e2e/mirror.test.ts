import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBlob } from '../support/images.js';
import { startContainerd, UNREACHABLE_SERVER, writeHostsToml, type Containerd } from './support/containerd.js';
import { expectSameBlobs, imageBlobs, indexBlobs, readLayout, tarImage, tarIndex } from './support/oci-layout.js';
import { startOutpost, type OutpostProcess } from './support/server.js';
import { skopeo } from './support/skopeo.js';
import { expectOneDownloadPerBlob, killLeaderMidFill, pullConcurrently } from './support/mirror-pulls.js';
import { startThrottleProxy, type ThrottleProxy } from './support/throttle-proxy.js';
import { seedBlob, seedImage, startUpstreamRegistry, type UpstreamRegistry } from './support/upstream-registry.js';
import { SqliteMetaIndex } from '../../src/adapters/local/sqlite-meta-index.js';
import { keys } from '../../src/core/registry/keys.js';

/**
 * The mirror end to end: Debian's docker-registry (Distribution 2.8, htpasswd auth) as the
 * upstream, three Outpost processes on one data directory, real skopeo and containerd clients.
 * The upstream's own request log counts what it served.
 */

const MiB = 1024 * 1024;
const ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64';
const OTHER_ARCH = ARCH === 'amd64' ? 'arm64' : 'amd64';

// A = L1 L2 L3; B = L1 L2 L4 L5; and a two-platform index over the same base.
const base = tarImage({ layers: [1 * MiB, 2 * MiB], arch: ARCH });
const imageA = tarImage({ layers: [3 * MiB], arch: ARCH, base });
const imageB = tarImage({ layers: [1 * MiB, 512 * 1024], arch: ARCH, base });
const multi = tarIndex([
  { arch: ARCH, layers: [256 * 1024], base },
  { arch: OTHER_ARCH, layers: [384 * 1024], base },
]);
const big = randomBlob(24 * MiB);
const handedOver = randomBlob(24 * MiB);
const credentials = { username: 'outpost', password: randomBytes(12).toString('base64url') };
const PART = 5 * MiB;

let work: string;
let up: UpstreamRegistry;
let throttle: ThrottleProxy;
let instances: OutpostProcess[] = [];
let dataDir: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-mirror-'));
  up = await startUpstreamRegistry({ auth: credentials });
  await seedImage(up, 'library/a', 'v1', imageA);
  await seedImage(up, 'library/b', 'v1', imageB);
  await seedImage(up, 'library/multi', 'v1', multi);
  await seedBlob(up, 'library/big', big);
  await seedBlob(up, 'library/big', handedOver);
  throttle = await startThrottleProxy(up.url, 8 * MiB);
  const config = {
    upstreams: [
      { name: 'hub', url: up.url, namespace: 'docker.io', username: credentials.username, passwordEnv: 'UPSTREAM_PASSWORD', tagTtl: '5m' },
      { name: 'slow', url: throttle.url, namespace: 'slow.test', username: credentials.username, passwordEnv: 'UPSTREAM_PASSWORD' },
    ],
    mirror: { fillPartSize: '5MiB', fillLease: '5s' },
  };
  const env = { OUTPOST_CONFIG: JSON.stringify(config), UPSTREAM_PASSWORD: credentials.password };
  dataDir = join(work, 'data');
  instances = await Promise.all([0, 1, 2].map(() => startOutpost(dataDir, env)));
}, 120_000);

afterAll(async () => {
  await Promise.all(instances.map((i) => i.stop()));
  await throttle?.stop();
  await up?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('pull-through mirror over a real upstream', () => {
  it('8 concurrent cold skopeo pulls over three instances: one upstream download per blob', async () => {
    await pullConcurrently(instances, [{ repository: 'hub/library/a', image: imageA }, { repository: 'hub/library/b', image: imageB }], 8, work);
    await expectOneDownloadPerBlob(up, [imageA, imageB], instances);
    const served = await up.requests();
    // Each tag was fetched once in all (single flight), however many clients asked (a 401 is
    // the upstream client's anonymous first try, answered by its Basic retry).
    const tagGets = served.filter((r) => r.kind === 'manifest' && r.reference === 'v1' && r.method === 'GET' && r.status === 200);
    expect(tagGets).toHaveLength(2);
  });

  it('a multi-arch index pulls whole with skopeo --all, and warm pulls make no upstream blob request', async () => {
    const before = (await up.requests()).length;
    await skopeo('copy', '--quiet', '--all', '--src-tls-verify=false', `docker://${instances[1]!.host}/docker.io/library/multi:v1`, `oci:${join(work, 'multi')}:v1`);
    const pulled = await readLayout(join(work, 'multi'));
    expect(pulled.ref('v1').digest).toBe(multi.index.digest);
    expectSameBlobs(pulled.blobs, indexBlobs(multi));
    await skopeo('copy', '--quiet', '--src-tls-verify=false', `docker://${instances[2]!.host}/hub/library/a:v1`, `oci:${join(work, 'warm')}:v1`);
    const after = (await up.requests()).slice(before);
    const baseDigests = new Set(base.layers.map((l) => l.digest));
    // The base layers came with A and B: not fetched again for the index, nor for the warm pull.
    expect(after.filter((r) => r.kind === 'blob' && r.method === 'GET' && baseDigests.has(r.digest!))).toEqual([]);
    expect(after.filter((r) => r.repository === 'library/a' && r.kind === 'blob')).toEqual([]);
  });

  it('containerd pulls docker.io names through a hosts.toml mirror, routed by ?ns=', async () => {
    let ctd: Containerd | undefined;
    try {
      ctd = await startContainerd();
      const hostsDir = join(work, 'hosts');
      await writeHostsToml(hostsDir, 'docker.io', instances[0]!.url, { server: UNREACHABLE_SERVER });
      for (const [ref, img] of [['docker.io/library/a:v1', imageA], ['docker.io/library/b:v1', imageB]] as const) {
        const result = await ctd.pull(ref, { hostsDir });
        expect(result.code, result.stderr).toBe(0);
        expect(await ctd.images()).toContainEqual({ ref, mediaType: img.manifest.mediaType, digest: img.manifest.digest });
        for (const b of imageBlobs(img)) expect((await ctd.readBlob(b.digest)).equals(b.bytes), b.digest).toBe(true);
      }
      const result = await ctd.pull('docker.io/library/multi:v1', { hostsDir });
      expect(result.code, result.stderr).toBe(0);
      // A namespace Outpost does not mirror is refused, not sent to another upstream.
      await writeHostsToml(hostsDir, 'quay.io', instances[0]!.url, { server: UNREACHABLE_SERVER });
      const refused = await ctd.pull('quay.io/library/a:v1', { hostsDir });
      expect(refused.code).not.toBe(0);
    } finally {
      await ctd?.stop();
    }
  });

  it('metrics count what happened: the fills led over all instances are the unique blobs fetched', async () => {
    const texts = await Promise.all(instances.map(async (i) => (await fetch(`${i.url}/metrics`)).text()));
    const sum = (name: string) =>
      texts.reduce((n, t) => n + [...t.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)$`, 'gm'))].reduce((m, x) => m + Number(x[1]), 0), 0);
    const unique = new Set([imageA, imageB, ...multi.images].flatMap((img) => [img.config, ...img.layers]).map((b) => b.digest));
    expect(sum('outpost_fills_led_total')).toBe(unique.size);
    expect(sum('outpost_cache_hits_total')).toBeGreaterThan(0);
    expect(texts.join('\n')).toMatch(/outpost_upstream_requests_total\{kind="blob",result="ok",upstream="hub"\} \d+/);
  });

  it('killing the leading instance mid-fill: the pull completes with the right bytes from another, resumed by Range', async () => {
    const { gets, resumedAt, tookMs } = await killLeaderMidFill(instances[0]!, instances[1]!, {
      path: `/v2/slow/library/big/blobs/${big.digest}`,
      blob: big,
      throttle,
      partBytes: PART,
      settleMs: 500,
    });
    // It waited for the dead leader's lease (5 s) at most, then took over.
    expect(tookMs).toBeLessThan(20_000);
    // What came twice is what the dead leader had not stored: the part it was filling, and what
    // the upstream had already sent into the loopback socket buffers (several MiB, autotuned).
    expect(gets[0]!.bytes - resumedAt).toBeLessThanOrEqual(2 * PART + 8 * MiB);
  });

  it('stopping the leading instance (SIGTERM) hands its fill over: the lease is released with the stored parts, resumed by Range', async () => {
    // instances[0] is gone (the test above): instance 1 leads, its client leaves, it is stopped.
    const [leader, successor] = [instances[1]!, instances[2]!];
    const path = `/v2/slow/library/big/blobs/${handedOver.digest}`;
    expect((await fetch(`${leader.url}${path}`, { method: 'HEAD' })).status).toBe(200);
    const res = await fetch(`${leader.url}${path}`);
    const reader = res.body!.getReader();
    let received = 0;
    while (received < 2 * PART + MiB) received += (await reader.read()).value!.byteLength;
    await reader.cancel();
    await new Promise((r) => setTimeout(r, 500));
    leader.signal('SIGTERM');
    expect(await leader.exited).toEqual({ code: 0, signal: null });
    // Released, not left to expire (5 s): the index says so as soon as the process is gone.
    const index = new SqliteMetaIndex(join(dataDir, 'index.db'));
    const lease = await index.readLease<{ phase: string; stored: number }>(keys.fill(handedOver.digest));
    index.close();
    expect(lease?.holder).toBeUndefined();
    expect(lease?.state?.phase).toBe('filling');
    const stored = lease!.state!.stored;
    expect(stored).toBeGreaterThanOrEqual(2 * PART);
    const other = await fetch(`${successor.url}${path}`);
    expect(other.status).toBe(200);
    expect(Buffer.from(await other.arrayBuffer()).equals(Buffer.from(handedOver.bytes))).toBe(true);
    const gets = throttle.requests.filter((r) => r.method === 'GET' && r.path.endsWith(handedOver.digest) && r.status !== 401);
    expect(gets, JSON.stringify(gets)).toHaveLength(2);
    // Exactly from what the stopped leader stored: no stored byte is downloaded again.
    expect(gets[1]!.range).toBe(`bytes=${stored}-`);
    expect(gets[1]!.bytes).toBe(handedOver.size - stored);
  });
});

