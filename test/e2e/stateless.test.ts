import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCode } from '../support/app.js';
import { blob, image } from '../support/images.js';
import { walkPages } from '../support/paging.js';
import { freshCloudStore } from './support/cloud-store.js';
import { expectSameBlobs, imageBlobs, readLayout, tarImage, writeLayout } from './support/oci-layout.js';
import { getManifest, pushBlob, pushManifest, raceFirstChunk, tagList } from './support/registry-client.js';
import { startOutpostCloud, type OutpostProcess } from './support/server.js';
import { skopeo } from './support/skopeo.js';
import { startWorker } from './support/worker.js';

/**
 * Stateless for real: three Outpost instances that share nothing but ONE S3 bucket and ONE
 * DynamoDB table: two Node servers on the cloud store and one worker on workerd (wrangler dev).
 * Any request may reach any instance, so nothing an instance keeps in memory may matter: not
 * an upload in progress, not a tag, not a page of a listing.
 */

const MiB = 1024 * 1024;

let work: string;
let nodeA: OutpostProcess;
let nodeB: OutpostProcess;
let worker: OutpostProcess;
const label = (server: OutpostProcess) => (server === worker ? `workerd :${server.port}` : `node :${server.port}`);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-stateless-'));
  // A key prefix, as a bucket shared with other data would need; all three use the same one.
  const store = { ...(await freshCloudStore('stateless')), prefix: 'outpost/' };
  // Started together, as a deployment would be.
  [nodeA, nodeB, worker] = await Promise.all([startOutpostCloud(store), startOutpostCloud(store), startWorker(store)]);
});

afterAll(async () => {
  await Promise.all([nodeA?.stop(), nodeB?.stop(), worker?.stop()]);
  if (work) await rm(work, { recursive: true, force: true });
});

describe('three stateless instances (two Node, one workerd) on one bucket and one table', () => {
  it('pulls byte-identical through one instance what skopeo pushed through another, both ways', async () => {
    // Several MiB: with 5 MiB parts the big layer is a multipart upload into S3.
    const img = tarImage({ layers: [7 * MiB, 200 * 1024, 100] });
    const source = join(work, 'source');
    await writeLayout(source, { img: img.manifest }, imageBlobs(img));

    for (const [from, to, tag] of [
      [nodeA, worker, 'via-node'],
      [worker, nodeB, 'via-workerd'],
    ] as const) {
      await skopeo('copy', '--quiet', '--dest-tls-verify=false', '--preserve-digests', `oci:${source}:img`, `docker://${from.host}/e2e/shared:${tag}`);
      const target = join(work, `pulled-${tag}`);
      await skopeo('copy', '--quiet', '--src-tls-verify=false', '--preserve-digests', `docker://${to.host}/e2e/shared:${tag}`, `oci:${target}:v1`);

      const pulled = await readLayout(target);
      expect(pulled.ref('v1').digest, `pushed through ${label(from)}, pulled through ${label(to)}`).toBe(img.manifest.digest);
      expectSameBlobs(pulled.blobs, imageBlobs(img));
    }
  });

  it('completes a chunked upload whose POST, PATCHes and PUT reach different instances', async () => {
    const content = blob(randomBytes(6 * MiB + 54_321), 'application/octet-stream');
    // Uneven cuts: the first chunk is itself larger than one S3 part; the PUT carries the tail.
    const cuts = [0, 5 * MiB + 3, 6 * MiB + 7, content.size];
    const chunks = cuts.slice(1).map((end, i) => ({ start: cuts[i]!, bytes: content.bytes.subarray(cuts[i]!, end) }));
    const name = 'e2e/chunked';
    const range = (start: number, bytes: Buffer) => `${start}-${start + bytes.length - 1}`;

    const started = await fetch(`${nodeA.url}/v2/${name}/blobs/uploads/`, { method: 'POST' });
    expect(started.status).toBe(202);
    let location = started.headers.get('location')!;
    expect(location).toBeTruthy();

    for (const [server, chunk] of [
      [worker, chunks[0]!],
      [nodeB, chunks[1]!],
    ] as const) {
      const res = await fetch(new URL(location, server.url), {
        method: 'PATCH',
        body: new Uint8Array(chunk.bytes),
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': range(chunk.start, chunk.bytes) },
      });
      expect(res.status, `PATCH through ${label(server)}: ${await res.text()}`).toBe(202);
      expect(res.headers.get('range')).toBe(`0-${chunk.start + chunk.bytes.length - 1}`);
      location = res.headers.get('location')!;

      // Every instance reports the same progress.
      for (const other of [nodeA, nodeB, worker]) {
        const status = await fetch(new URL(location, other.url));
        expect(status.status, `status through ${label(other)}`).toBe(204);
        expect(status.headers.get('range'), `status through ${label(other)}`).toBe(`0-${chunk.start + chunk.bytes.length - 1}`);
      }
    }

    const last = chunks[2]!;
    const complete = new URL(location, worker.url);
    complete.searchParams.set('digest', content.digest);
    const put = await fetch(complete, {
      method: 'PUT',
      body: new Uint8Array(last.bytes),
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': range(last.start, last.bytes) },
    });
    expect(put.status, `PUT through ${label(worker)}: ${await put.text()}`).toBe(201);
    expect(put.headers.get('docker-content-digest')).toBe(content.digest);

    for (const server of [nodeA, nodeB, worker]) {
      const got = await fetch(`${server.url}/v2/${name}/blobs/${content.digest}`);
      expect(got.status, `GET through ${label(server)}`).toBe(200);
      expect(got.headers.get('content-length')).toBe(String(content.size));
      expect(Buffer.from(await got.arrayBuffer()).equals(content.bytes), `bytes through ${label(server)}`).toBe(true);
      // The session is gone for every instance.
      const stale = await fetch(new URL(location, server.url));
      expect(stale.status, `stale session through ${label(server)}`).toBe(404);
      expect(await errorCode(stale)).toBe('BLOB_UPLOAD_UNKNOWN');
    }
  });

  it('accepts exactly one of two chunks raced to the same offset through Node and workerd', async () => {
    const name = 'e2e/chunk-race';
    const racers: [OutpostProcess, OutpostProcess] = [nodeA, worker];
    const { location, winner } = await raceFirstChunk(nodeB, name, racers);

    // The upload holds the winner's bytes only: completing it through the third instance works.
    const complete = new URL(location, nodeB.url);
    complete.searchParams.set('digest', blob(winner).digest);
    const put = await fetch(complete, { method: 'PUT' });
    expect(put.status, await put.text()).toBe(201);
    for (const server of racers) {
      const got = await fetch(`${server.url}/v2/${name}/blobs/${blob(winner).digest}`);
      expect(Buffer.from(await got.arrayBuffer()).equals(winner), `bytes through ${label(server)}`).toBe(true);
    }
  });

  it('lists the tags pushed through each instance identically through all three, page by page', async () => {
    const name = 'e2e/tags';
    const servers = [nodeA, nodeB, worker];
    const images = Array.from({ length: 6 }, () => image({ layers: [1024] }));
    // Image i goes in through instance i % 3, blobs and manifest alike.
    await Promise.all(
      images.map(async (img, i) => {
        const via = servers[i % 3]!;
        for (const x of [img.config, ...img.layers]) await pushBlob(via, name, x);
        await pushManifest(via, name, `v${i}`, img.manifest);
      }),
    );
    // And one tag only the worker heard of.
    await pushManifest(worker, name, 'latest', images[0]!.manifest);

    const expected = ['latest', ...images.map((_, i) => `v${i}`)].sort();
    const lists = await Promise.all(servers.map((s) => tagList(s, name)));
    for (const [i, tags] of lists.entries()) expect(tags, `tags through ${label(servers[i]!)}`).toEqual(expected);

    // Paging keeps no state either: each page is fetched from the next instance.
    let turn = 0;
    const { seen, pages } = await walkPages(
      async (path) => {
        const res = await fetch(new URL(path, servers[turn++ % 3]!.url));
        expect(res.status).toBe(200);
        return { res, entries: ((await res.json()) as { tags: string[] }).tags };
      },
      `/v2/${name}/tags/list?n=2`,
      2,
    );
    expect(seen).toEqual(expected);
    expect(pages).toBe(Math.ceil(expected.length / 2));

    for (const [i, img] of images.entries()) {
      for (const server of servers) {
        const got = await getManifest(server, name, `v${i}`);
        expect(got.digest, `v${i} through ${label(server)}`).toBe(img.manifest.digest);
        expect(got.bytes.equals(img.manifest.bytes)).toBe(true);
      }
    }
  });
});
