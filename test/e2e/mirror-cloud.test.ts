import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshCloudStore } from './support/cloud-store.js';
import { expectSameBlobs, imageBlobs, readLayout, tarImage } from './support/oci-layout.js';
import { startOutpostCloud, type OutpostProcess } from './support/server.js';
import { skopeo } from './support/skopeo.js';
import { expectOneDownloadPerBlob, killLeaderMidFill, pullConcurrently } from './support/mirror-pulls.js';
import { startThrottleProxy, type ThrottleProxy } from './support/throttle-proxy.js';
import { seedBlob, seedImage, startUpstreamRegistry, type UpstreamRegistry } from './support/upstream-registry.js';
import { randomBlob } from '../support/images.js';
import { startWorker } from './support/worker.js';

/**
 * The mirror on the cloud store: two Node servers and one worker on workerd (wrangler dev)
 * sharing one S3 bucket (Ceph RGW) and one DynamoDB table (dynalite), mirroring Debian's
 * docker-registry. Cold pulls spread over all three must make one upstream download per blob,
 * counted in the upstream's own log, with fills whose parts are composed server-side in S3;
 * and a Node leader killed mid-fill, whose fill the worker takes over from the parts in S3.
 */

const MiB = 1024 * 1024;
const base = tarImage({ layers: [12 * MiB, 1 * MiB] });
const imageA = tarImage({ layers: [6 * MiB], base });
const imageB = tarImage({ layers: [2 * MiB, 300 * 1024], base });
const big = randomBlob(24 * MiB);
const PART = 5 * MiB;
const LEASE_MS = 10_000;
const credentials = { username: 'outpost', password: randomBytes(12).toString('base64url') };

let work: string;
let up: UpstreamRegistry;
let throttle: ThrottleProxy;
let instances: OutpostProcess[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-mirror-cloud-'));
  up = await startUpstreamRegistry({ auth: credentials });
  await seedImage(up, 'library/a', 'v1', imageA);
  await seedImage(up, 'library/b', 'v1', imageB);
  await seedBlob(up, 'library/big', big);
  throttle = await startThrottleProxy(up.url, 8 * MiB);
  const store = await freshCloudStore('mirror-cloud');
  const config = {
    upstreams: [
      { name: 'hub', url: up.url, namespace: 'docker.io', username: credentials.username, passwordEnv: 'UPSTREAM_PASSWORD' },
      { name: 'slow', url: throttle.url, namespace: 'slow.test', username: credentials.username, passwordEnv: 'UPSTREAM_PASSWORD' },
    ],
    mirror: { fillPartSize: '5MiB', fillLease: `${LEASE_MS / 1000}s` },
  };
  const env = { OUTPOST_CONFIG: JSON.stringify(config), UPSTREAM_PASSWORD: credentials.password };
  instances = await Promise.all([startOutpostCloud(store, env), startOutpostCloud(store, env), startWorker(store, env)]);
}, 180_000);

afterAll(async () => {
  await Promise.all(instances.map((i) => i.stop()));
  await throttle?.stop();
  await up?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('the mirror on S3 + DynamoDB, Node and workerd', () => {
  it('6 concurrent cold pulls over two Node instances and a worker: one upstream download per blob', async () => {
    await pullConcurrently(instances, [{ repository: 'hub/library/a', image: imageA }, { repository: 'hub/library/b', image: imageB }], 6, work);
    await expectOneDownloadPerBlob(up, [imageA, imageB], instances);
  });

  it('a warm pull through the worker is served from S3 with no upstream request', async () => {
    const before = (await up.requests()).length;
    await skopeo('copy', '--quiet', '--src-tls-verify=false', `docker://${instances[2]!.host}/hub/library/a:v1`, `oci:${join(work, 'warm')}:v1`);
    expectSameBlobs((await readLayout(join(work, 'warm'))).blobs, imageBlobs(imageA));
    const after = (await up.requests()).slice(before);
    expect(after.filter((r) => r.kind === 'blob')).toEqual([]);
  });
  it('killing the leading Node instance mid-fill: the worker takes the fill over from the parts in S3, resumed by Range', async () => {
    const path = `/v2/slow/library/big/blobs/${big.digest}`;
    // Led by Node instance 0; a part's write lands in S3 and its state in DynamoDB within the second.
    const { tookMs } = await killLeaderMidFill(instances[0]!, instances[2]!, { path, blob: big, throttle, partBytes: PART, settleMs: 1000 });
    // It waited for the dead leader's lease at most, then took over.
    expect(tookMs).toBeLessThan(LEASE_MS + 15_000);
    // Committed: served again from S3 with no upstream request.
    const again = await fetch(`${instances[1]!.url}${path}`);
    expect(Buffer.from(await again.arrayBuffer()).equals(big.bytes)).toBe(true);
    expect(throttle.requests.filter((r) => r.method === 'GET' && r.path.endsWith(big.digest) && r.status !== 401)).toHaveLength(2);
  });
});
