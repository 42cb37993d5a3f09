import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { image, randomBlob, type Blob, type Image } from '../support/images.js';
import { freshCloudStore, cloudEnv } from './support/cloud-store.js';
import { gcCli } from './support/gc-cli.js';
import { startOutpost, startOutpostCloud, type OutpostProcess } from './support/server.js';

/**
 * `outpost gc` as an operator runs it: the real CLI (dist/entry/cli.js) on the store a running
 * server uses, on the local store (files + SQLite) and on the cloud store (Ceph RGW + dynalite).
 * What is checked: the dry run deletes nothing and says what a run would; the run deletes what
 * nothing references and nothing else, while the server goes on serving; exit statuses.
 */

let work: string;
const started: OutpostProcess[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-gc-'));
});

afterAll(async () => {
  await Promise.all(started.map((s) => s.stop()));
  if (work) await rm(work, { recursive: true, force: true });
});

const gc = (args: string[], env: Record<string, string>) => gcCli(args, env);

async function pushBlob(base: string, name: string, b: Blob): Promise<void> {
  const res = await fetch(`${base}/v2/${name}/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: new Uint8Array(b.bytes) });
  expect(res.status, await res.text()).toBe(201);
}

async function pushImage(base: string, name: string, img: Image, tag: string): Promise<void> {
  for (const b of [img.config, ...img.layers]) await pushBlob(base, name, b);
  const res = await fetch(`${base}/v2/${name}/manifests/${tag}`, { method: 'PUT', body: new Uint8Array(img.manifest.bytes), headers: { 'Content-Type': img.manifest.mediaType } });
  expect(res.status, await res.text()).toBe(201);
}

async function pulled(base: string, path: string, b: Blob): Promise<boolean> {
  const res = await fetch(`${base}${path}`);
  return res.status === 200 && Buffer.from(await res.arrayBuffer()).equals(b.bytes);
}

const deleted = (stdout: string, verb: string) => [...stdout.matchAll(new RegExp(`^${verb} (sha256:[0-9a-f]{64}) \\((\\d+) bytes\\)$`, 'gm'))].map((m) => m[1]);

function scenario(label: string, start: () => Promise<{ server: OutpostProcess; env: Record<string, string> }>) {
  describe(`outpost gc on ${label}`, () => {
    it('a dry run says what a run would delete; the run deletes just that while the server serves', async () => {
      const { server, env } = await start();
      started.push(server);
      const base = server.url;
      const kept = image({ layers: [300_000, 200_000] });
      const dropped = image({ layers: [150_000] });
      const shared = randomBlob(50_000);
      await pushImage(base, 'app', kept, 'v1');
      await pushImage(base, 'app', dropped, 'v2');
      await pushBlob(base, 'app', shared);
      await pushBlob(base, 'other', shared);
      // v2 goes, with its blobs; `shared` leaves app but stays in other.
      for (const b of [dropped.config, ...dropped.layers, shared]) expect((await fetch(`${base}/v2/app/blobs/${b.digest}`, { method: 'DELETE' })).status).toBe(202);
      expect((await fetch(`${base}/v2/app/manifests/${dropped.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
      const garbage = [dropped.manifest, dropped.config, ...dropped.layers].map((b) => b.digest).sort();
      const bytes = [dropped.manifest, dropped.config, ...dropped.layers].reduce((n, b) => n + b.size, 0);

      const dry = await gc(['--dry-run', '--grace', '0s'], env);
      expect(dry.status, dry.stderr).toBe(0);
      expect(deleted(dry.stdout, 'would delete').sort()).toEqual(garbage);
      expect(dry.stdout).toContain(`would delete 3 objects, ${bytes} bytes`);
      expect(await pulled(base, `/v2/app/manifests/${dropped.manifest.digest}`, dropped.manifest)).toBe(false);

      // With the default grace (a day) everything is too young.
      const young = await gc([], env);
      expect(young.status, young.stderr).toBe(0);
      expect(deleted(young.stdout, 'deleted')).toEqual([]);

      const run = await gc(['--grace=0s'], env);
      expect(run.status, run.stderr).toBe(0);
      expect(deleted(run.stdout, 'deleted').sort()).toEqual(garbage);
      expect(run.stdout).toContain(`deleted 3 objects, ${bytes} bytes`);
      expect(run.stdout).toMatch(/leftovers: \d+ upload parts/);
      // What is referenced is all there and served.
      expect(await pulled(base, '/v2/app/manifests/v1', kept.manifest)).toBe(true);
      for (const b of [kept.config, ...kept.layers]) expect(await pulled(base, `/v2/app/blobs/${b.digest}`, b)).toBe(true);
      expect(await pulled(base, `/v2/other/blobs/${shared.digest}`, shared)).toBe(true);
      // The deleted content can be pushed and served again.
      await pushImage(base, 'app', dropped, 'v2');
      expect(await pulled(base, '/v2/app/manifests/v2', dropped.manifest)).toBe(true);
      const again = await gc(['--grace', '0s'], env);
      expect(again.status, again.stderr).toBe(0);
      expect(deleted(again.stdout, 'deleted')).toEqual([]);
    });

    it('refuses arguments it does not know, with status 2', async () => {
      const { server, env } = await start();
      started.push(server);
      for (const args of [['--grace', 'soon'], ['--grace'], ['--now']]) {
        const res = await gc(args, env);
        expect(res.status).toBe(2);
        expect(res.stderr).toMatch(/^outpost gc: /);
        expect(res.stderr).toContain('usage: outpost gc');
      }
    });
  });
}

let local = 0;
scenario('the local store (files + SQLite)', async () => {
  const data = join(work, `data-${++local}`);
  const server = await startOutpost(data);
  return { server, env: { OUTPOST_STORE: 'local', OUTPOST_DATA_DIR: data } };
});

scenario('the cloud store (S3 + DynamoDB)', async () => {
  const store = await freshCloudStore('gc');
  const server = await startOutpostCloud(store);
  return { server, env: cloudEnv(store) };
});
