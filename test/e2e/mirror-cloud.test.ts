import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshCloudStore } from './support/cloud-store.js';
import { expectSameBlobs, imageBlobs, readLayout, tarImage } from './support/oci-layout.js';
import { startOutpostCloud, type OutpostProcess } from './support/server.js';
import { skopeo } from './support/skopeo.js';
import { expectOneDownloadPerBlob, pullConcurrently } from './support/mirror-pulls.js';
import { seedImage, startUpstreamRegistry, type UpstreamRegistry } from './support/upstream-registry.js';
import { startWorker } from './support/worker.js';

/**
 * The mirror on the cloud store: two Node servers and one worker on workerd (wrangler dev)
 * sharing one S3 bucket (Ceph RGW) and one DynamoDB table (dynalite), mirroring Debian's
 * docker-registry. Cold pulls spread over all three must make one upstream download per blob,
 * counted in the upstream's own log, with fills whose parts are composed server-side in S3.
 */

const MiB = 1024 * 1024;
const base = tarImage({ layers: [12 * MiB, 1 * MiB] });
const imageA = tarImage({ layers: [6 * MiB], base });
const imageB = tarImage({ layers: [2 * MiB, 300 * 1024], base });
const credentials = { username: 'outpost', password: randomBytes(12).toString('base64url') };

let work: string;
let up: UpstreamRegistry;
let instances: OutpostProcess[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-mirror-cloud-'));
  up = await startUpstreamRegistry({ auth: credentials });
  await seedImage(up, 'library/a', 'v1', imageA);
  await seedImage(up, 'library/b', 'v1', imageB);
  const store = await freshCloudStore('mirror-cloud');
  const config = {
    upstreams: [{ name: 'hub', url: up.url, namespace: 'docker.io', username: credentials.username, passwordEnv: 'UPSTREAM_PASSWORD' }],
    mirror: { fillPartSize: '5MiB', fillLease: '10s' },
  };
  const env = { OUTPOST_CONFIG: JSON.stringify(config), UPSTREAM_PASSWORD: credentials.password };
  instances = await Promise.all([startOutpostCloud(store, env), startOutpostCloud(store, env), startWorker(store, env)]);
}, 180_000);

afterAll(async () => {
  await Promise.all(instances.map((i) => i.stop()));
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
});
