import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeHash } from '../src/adapters/crypto/node-hash.js';
import { FsBlobStore } from '../src/adapters/local/fs-blob-store.js';
import { SqliteMetaIndex } from '../src/adapters/local/sqlite-meta-index.js';
import { createDynamoClient } from '../src/adapters/dynamodb/client.js';
import { DynamoMetaIndex } from '../src/adapters/dynamodb/meta-index.js';
import { S3BlobStore } from '../src/adapters/s3/blob-store.js';
import { mapLimit } from '../src/adapters/s3/parts.js';
import { createS3Client } from '../src/adapters/s3/client.js';
import { parseDigest } from '../src/core/oci/digest.js';
import { objects } from '../src/core/registry/keys.js';
import { streamOf } from '../src/core/streams.js';
import { createRegistry, type Registry } from '../src/core/registry/registry.js';
import type { GcReport } from '../src/core/gc/run.js';
import type { BlobStore } from '../src/ports/blob-store.js';
import { systemClock } from '../src/ports/clock.js';
import type { MetaIndex } from '../src/ports/meta-index.js';
import { startDynalite } from '../test/support/dynalite.js';
import { image } from '../test/support/images.js';
import { startS3 } from '../test/support/s3-server.js';
import { MiB, rss, table, timed } from './harness.js';

/**
 * What one garbage-collection run costs as the store grows: the run works from the index of
 * candidates (core/gc/run.ts), so its store and index requests should follow the garbage, not
 * the number of blobs or repositories. For each size N (BENCH_GC_SIZES, default 1000,100000):
 * N small random blobs (images of one config and 9 layers of BLOB_BYTES, 10 images to a
 * repository, each blob linked into its repository and named by its image's manifest) pushed
 * through the registry engine; one settling run (the first run after N stores examines each of
 * them once, and makes the references of older content, here none: backfill.ts); one run with
 * nothing changed; then 1% of the blobs made garbage (their images' manifests deleted and the
 * blobs unlinked) and one run with grace 0 measured: wall time, store and index requests by
 * method (counting proxies in front of the ports; the time spent in each method is logged), peak
 * RSS growth of this process. One more run after one more image is deleted: the same garbage at
 * every N.
 *
 * On the embedded store (FsBlobStore + SqliteMetaIndex) at every size, and on the cloud store
 * (Ceph RGW + dynalite on loopback, started here as bench:cloud does) at BENCH_GC_CLOUD_SIZES
 * (default 1000; "" skips it: dynalite, a DynamoDB in JavaScript, seeds about 50 blobs a second),
 * where the requests the SDK clients send are counted too ("on the wire").
 *
 *   npm run bench:gc
 *   BENCH_GC_SIZES=1000,10000 BENCH_GC_CLOUD_SIZES=1000 npm run bench:gc
 */
const BLOB_BYTES = 300;
const LAYERS = 9;
/** A config and its layers. */
const BLOBS_PER_IMAGE = LAYERS + 1;
const IMAGES_PER_REPOSITORY = 10;
const GARBAGE_SHARE = 0.01;
/** Images pushed at once while seeding (each pushes its blobs at once, then its manifest). */
const SEED_CONCURRENCY = Number(process.env.BENCH_GC_CONCURRENCY ?? 16);
/** Sizes are whole hundreds of images, so that 1% of the blobs is whole images. */
const SIZE_STEP = Math.round(BLOBS_PER_IMAGE / GARBAGE_SHARE);
const SIZES = sizes(process.env.BENCH_GC_SIZES ?? '1000,100000');
const CLOUD_SIZES = sizes(process.env.BENCH_GC_CLOUD_SIZES ?? '1000');

function sizes(list: string): number[] {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const n = Number(s);
      if (!Number.isInteger(n) || n <= 0 || n % SIZE_STEP !== 0) throw new Error(`size ${s}: not a multiple of ${SIZE_STEP} blobs`);
      return n;
    });
}

/** Calls by method name, for one port. */
type Counts = Map<string, number>;

/**
 * `target` with every method call counted in `counts` (calls the adapter makes on itself are
 * not), and the seconds until each call settled added up in `seconds` (a run calls one at a time).
 */
function counting<T extends object>(target: T, counts: Counts, seconds: Counts): T {
  return new Proxy(target, {
    get(t, property) {
      const value = Reflect.get(t, property, t) as unknown;
      if (typeof value !== 'function' || typeof property !== 'string') return value;
      return (...args: unknown[]) => {
        counts.set(property, (counts.get(property) ?? 0) + 1);
        const started = process.hrtime.bigint();
        const add = () => seconds.set(property, (seconds.get(property) ?? 0) + Number(process.hrtime.bigint() - started) / 1e9);
        const out = (value as (...a: unknown[]) => unknown).apply(t, args);
        if (out instanceof Promise) void out.then(add, add);
        else add();
        return out;
      };
    },
  });
}

interface Backend {
  label: string;
  store: BlobStore;
  index: MetaIndex;
  /** Requests sent to the servers behind the ports, by command (the cloud store only). */
  wire?: Counts;
  close(): Promise<void>;
}

interface SeededImage {
  repository: string;
  manifest: string;
  blobs: string[];
}

interface Measured {
  run: string;
  garbage: number;
  report: GcReport;
  seconds: number;
  store: Counts;
  index: Counts;
  wire?: Counts;
  rssGrowth: number;
}

const sum = (c: Counts) => [...c.values()].reduce((a, b) => a + b, 0);
const byMethod = (c: Counts) =>
  [...c]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([m, n]) => `${m} ${n}`)
    .join(', ') || '-';

async function seed(registry: Registry, n: number): Promise<SeededImage[]> {
  const count = n / BLOBS_PER_IMAGE;
  const numbers = Array.from({ length: count }, (_, i) => i);
  const seeded: SeededImage[] = new Array(count);
  await mapLimit(numbers, SEED_CONCURRENCY, async (i) => {
    const repository = `bench/repo-${String(Math.floor(i / IMAGES_PER_REPOSITORY)).padStart(5, '0')}`;
    const img = image({ layers: Array.from({ length: LAYERS }, () => BLOB_BYTES) });
    const blobs = [img.config, ...img.layers];
    await Promise.all(blobs.map((b) => registry.blobs.write(repository, parseDigest(b.digest), streamOf(b.bytes), b.size)));
    await registry.manifests.put(repository, { kind: 'tag', tag: `v${i}` }, img.manifest.bytes, img.manifest.mediaType);
    seeded[i] = { repository, manifest: img.manifest.digest, blobs: blobs.map((b) => b.digest) };
  });
  return seeded;
}

/** Deletes the images' manifests and unlinks their blobs: each image leaves 11 objects unreferenced. */
async function discard(registry: Registry, images: SeededImage[]): Promise<number> {
  await mapLimit(images, SEED_CONCURRENCY, async (img) => {
    await registry.manifests.delete(img.repository, { kind: 'digest', digest: parseDigest(img.manifest) });
    await Promise.all(img.blobs.map((d) => registry.blobs.delete(img.repository, parseDigest(d))));
  });
  return images.length * (BLOBS_PER_IMAGE + 1);
}

/** Resets this process's peak RSS (VmHWM) to its current RSS (Linux: clear_refs 5). */
function resetPeak(): number {
  writeFileSync('/proc/self/clear_refs', '5');
  return rss(process.pid).now;
}

async function bench(backend: Backend, n: number): Promise<Measured[]> {
  const storeCounts: Counts = new Map();
  const indexCounts: Counts = new Map();
  const storeSeconds: Counts = new Map();
  const indexSeconds: Counts = new Map();
  const registry = createRegistry({
    store: counting(backend.store, storeCounts, storeSeconds),
    index: counting(backend.index, indexCounts, indexSeconds),
    hash: nodeHash,
    clock: systemClock,
  });
  const results: Measured[] = [];
  const measure = async (run: string, garbage: number, check: (r: GcReport) => string | undefined) => {
    for (const c of [storeCounts, indexCounts, storeSeconds, indexSeconds]) c.clear();
    backend.wire?.clear();
    globalThis.gc?.();
    const base = resetPeak();
    const { seconds, value: report } = await timed(() => registry.gc({ graceMs: 0 }));
    const rssGrowth = rss(process.pid).peak - base;
    const problem = report.failed ? `${report.failed} candidates failed` : check(report);
    if (problem) throw new Error(`${backend.label}, N = ${n}, ${run}: ${problem} (${JSON.stringify(report)})`);
    const wire = backend.wire && new Map(backend.wire);
    results.push({ run, garbage, report, seconds, store: new Map(storeCounts), index: new Map(indexCounts), wire, rssGrowth });
    console.log(
      `bench: ${backend.label}, N = ${n}, ${run}: ${seconds.toFixed(3)} s, examined ${report.examined}, deleted ${report.deleted}, ` +
        `store ${sum(storeCounts)}, index ${sum(indexCounts)} requests${wire ? `, on the wire ${sum(wire)} (${byMethod(wire)})` : ''}`,
    );
    const ms = (c: Counts) => byMethod(new Map([...c].map(([m, x]) => [m, Math.round(x * 1000)])));
    console.log(`bench:   time in the store: ${ms(storeSeconds)} ms; in the index: ${ms(indexSeconds)} ms`);
  };

  const seeding = await timed(() => seed(registry, n));
  const images = seeding.value;
  const objectCount = n + images.length;
  console.log(`bench: ${backend.label}, N = ${n}: seeded ${images.length} images in ${Math.ceil(images.length / IMAGES_PER_REPOSITORY)} repositories in ${seeding.seconds.toFixed(1)} s (${(n / seeding.seconds).toFixed(0)} blobs/s)`);

  await measure(`first run after ${n} stores`, 0, (r) => (r.deleted === 0 && r.examined === objectCount ? undefined : `expected ${objectCount} examined, none deleted`));
  await measure('nothing changed', 0, (r) => (r.examined === 0 ? undefined : 'expected no candidate'));

  // 1% of the blobs, spread over the repositories: every hundredth image.
  const stride = Math.round(1 / GARBAGE_SHARE);
  const doomed = images.filter((_, i) => i % stride === stride - 1);
  const garbage = await discard(registry, doomed);
  await measure('1% garbage', garbage, (r) => (r.deleted === garbage && r.examined === garbage ? undefined : `expected ${garbage} examined and deleted`));

  const one = images.find((_, i) => i % stride === 0)!;
  const fixed = await discard(registry, [one]);
  await measure('one more image', fixed, (r) => (r.deleted === fixed && r.examined === fixed ? undefined : `expected ${fixed} examined and deleted`));

  // What was collected is gone from the store, what is still named is there.
  const gone = await backend.store.stat(objects.content(parseDigest(doomed[0]!.blobs[0]!)));
  const kept = await backend.store.stat(objects.content(parseDigest(images[1]!.blobs[0]!)));
  if (gone || !kept) throw new Error(`${backend.label}, N = ${n}: collected blob still stored, or kept blob gone`);
  return results;
}

/**
 * The cloud adapters as cloudAdapters (entry/cloud.ts) makes them, over clients that count each
 * request they send (retries included: counted below the retry middleware).
 */
function cloudBackend(s3: { endpoint: string; region: string; accessKeyId: string; secretAccessKey: string }, dynamoEndpoint: string, name: string): Backend {
  const wire: Counts = new Map();
  const s3Client = createS3Client({ ...s3, forcePathStyle: true });
  const dynamoClient = createDynamoClient({ endpoint: dynamoEndpoint, region: 'us-east-1', accessKeyId: 'bench', secretAccessKey: 'bench' });
  for (const [service, client] of [['S3', s3Client], ['DynamoDB', dynamoClient]] as const) {
    (client.middlewareStack as { add(m: unknown, o: unknown): void }).add(
      (next: (args: unknown) => Promise<unknown>, context: { commandName?: string }) => (args: unknown) => {
        const command = `${service} ${(context.commandName ?? '?').replace(/Command$/, '')}`;
        wire.set(command, (wire.get(command) ?? 0) + 1);
        return next(args);
      },
      { step: 'deserialize', name: 'benchCountRequests' },
    );
  }
  return {
    label: 'cloud',
    store: new S3BlobStore({ client: s3Client, bucket: name, prefix: '', partBytes: 8 * MiB }),
    index: new DynamoMetaIndex({ client: dynamoClient, table: name, clock: systemClock }),
    wire,
    close: async () => {
      s3Client.destroy();
      dynamoClient.destroy();
    },
  };
}

function localBackend(work: string, n: number): Backend {
  const dir = join(work, `local-${n}`);
  mkdirSync(dir, { recursive: true });
  const index = new SqliteMetaIndex(join(dir, 'index.db'), systemClock);
  return { label: 'embedded', store: new FsBlobStore(dir), index, close: async () => index.close() };
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'outpost-bench-gc-'));
  const rows: string[][] = [];
  const perSize = new Map<string, Measured[]>();
  const record = (label: string, n: number, measured: Measured[]) => {
    perSize.set(`${label} ${n}`, measured);
    for (const m of measured) {
      const requests = sum(m.store) + sum(m.index);
      rows.push([
        label,
        String(n),
        m.run,
        String(m.report.examined),
        String(m.report.deleted),
        `${(m.seconds * 1000).toFixed(0)} ms`,
        `${sum(m.store)} (${byMethod(m.store)})`,
        `${sum(m.index)} (${byMethod(m.index)})`,
        m.wire ? `${sum(m.wire)} (${byMethod(m.wire)})` : 'in process',
        m.garbage ? (requests / m.garbage).toFixed(1) : '-',
        `${(Math.max(0, m.rssGrowth) / MiB).toFixed(1)} MiB`,
      ]);
    }
  };
  try {
    for (const n of SIZES) {
      const backend = localBackend(work, n);
      try {
        record(backend.label, n, await bench(backend, n));
      } finally {
        await backend.close();
        rmSync(join(work, `local-${n}`), { recursive: true, force: true });
      }
    }
    if (CLOUD_SIZES.length) {
      const s3 = await startS3();
      const dynamo = await startDynalite();
      try {
        for (const n of CLOUD_SIZES) {
          const bucket = `outpost-bench-gc-${n}`;
          await createS3Client({ ...s3, forcePathStyle: true }).send(new CreateBucketCommand({ Bucket: bucket }));
          await dynamo.createTable(bucket);
          const backend = cloudBackend(s3, dynamo.endpoint, bucket);
          try {
            record(backend.label, n, await bench(backend, n));
          } finally {
            await backend.close();
          }
        }
      } finally {
        await dynamo.stop();
        await s3.stop();
      }
    }

    console.log(
      table(
        `garbage collection, grace 0: ${BLOBS_PER_IMAGE} blobs of about ${BLOB_BYTES} bytes and a manifest to an image, ${IMAGES_PER_REPOSITORY} images to a repository; garbage = unreferenced blobs and manifests`,
        ['store', 'N blobs', 'run', 'examined', 'deleted', 'time', 'store requests', 'index requests', 'on the wire', 'requests / garbage item', 'peak RSS growth'],
        rows,
      ),
    );
    for (const label of ['embedded', 'cloud']) {
      const measured = [...perSize].filter(([k]) => k.startsWith(`${label} `)).map(([k, m]) => ({ n: Number(k.split(' ')[1]), m }));
      if (measured.length < 2) continue;
      const small = measured[0]!;
      const large = measured[measured.length - 1]!;
      const pick = (x: typeof small, run: string) => x.m.find((m) => m.run === run)!;
      const total = (m: Measured) => sum(m.store) + sum(m.index);
      const a = pick(small, '1% garbage');
      const b = pick(large, '1% garbage');
      const c = pick(small, 'one more image');
      const d = pick(large, 'one more image');
      console.log(
        `\n${label}, N = ${large.n} against N = ${small.n} (${(large.n / small.n).toFixed(0)}x the blobs): ` +
          `1% garbage ${(b.garbage / a.garbage).toFixed(1)}x the garbage, ${(total(b) / total(a)).toFixed(2)}x the requests ` +
          `(${(total(b) / b.garbage / (total(a) / a.garbage)).toFixed(2)}x per garbage item), ${(b.seconds / a.seconds).toFixed(2)}x the time; ` +
          `the same garbage (one image): ${(total(d) / total(c)).toFixed(2)}x the requests, ${(d.seconds / c.seconds).toFixed(2)}x the time; ` +
          `nothing changed: ${total(pick(large, 'nothing changed'))} against ${total(pick(small, 'nothing changed'))} requests` +
          (b.wire && a.wire
            ? `; on the wire, 1% garbage ${(sum(b.wire) / sum(a.wire)).toFixed(2)}x, nothing changed ${sum(pick(large, 'nothing changed').wire!)} against ${sum(pick(small, 'nothing changed').wire!)} requests`
            : ''),
      );
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
