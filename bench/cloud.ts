import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { createS3Client } from '../src/adapters/s3/client.js';
import { startS3 } from '../test/support/s3-server.js';
import { startDynalite } from '../test/support/dynalite.js';
import { Content, GiB, MiB, descendants, drain, freePort, median, report, rss, send, start, timed, type Row, type Server } from './harness.js';
import { cliNodeFlags } from '../test/support/node-flags.js';

/**
 * A blob of BENCH_BYTES (default 1 GiB) pushed and pulled through Outpost on the cloud store
 * (a real S3: Ceph RGW on loopback; dynalite as DynamoDB), once through the Worker (the bundle
 * `wrangler deploy` makes, run by workerd through Miniflare) and once through the Node server, against the peer: copying the same
 * bytes straight to and from the S3 server with the AWS SDK. Prints MiB/s, the ratio to the
 * SDK, and the peak RSS growth of the process that carried the bytes over its idle baseline
 * (goal: under 128 MiB, a Workers isolate's limit). One more row puts the same bytes through the
 * SDK as a multipart upload the way @aws-sdk/lib-storage does (8 MiB parts, four in flight,
 * the SDK's defaults): what multipart itself costs on this server, for comparison.
 *
 *   BENCH_CLOUD_NODE_ARGS  node options for the Outpost Node process (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof")
 *   BENCH_CLOUD_WORKERD=0  skip the Worker
 *   BENCH_CLOUD_WORKERD_PROFILE=FILE  a CPU profile of the Worker's isolate, over all rounds
 *
 * For the Worker it also prints the peak of the isolate itself (its heap and ArrayBuffers, what
 * the 128 MB limit counts), watched through workerd's inspector (bench/worker-host.mjs).
 *   BENCH_CLOUD_ROUNDS     rounds (default 3); every figure is the median, each side measured in turn within a round
 *
 *   npm run build && npm run bench:cloud
 */
const SIZE = Number(process.env.BENCH_BYTES ?? GiB);
const NODE_ARGS = (process.env.BENCH_CLOUD_NODE_ARGS ?? '').split(' ').filter(Boolean);
const WORKERD = process.env.BENCH_CLOUD_WORKERD !== '0';
const ROUNDS = Number(process.env.BENCH_CLOUD_ROUNDS ?? 3);
/** A path: the Worker's isolate is CPU-profiled over all rounds, the .cpuprofile written there. */
const WORKERD_PROFILE = process.env.BENCH_CLOUD_WORKERD_PROFILE;
const ROOT = resolve(import.meta.dirname, '..');

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'outpost-bench-cloud-'));
  // Memstore keeps every object in RAM (about twice its size): room for a few 1 GiB blobs.
  const s3 = await startS3({ memstoreBytes: 8 * GiB });
  const dynamo = await startDynalite();
  const servers: Server[] = [];
  const client = createS3Client({ ...s3, forcePathStyle: true });
  const bucket = 'outpost-bench';
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    await dynamo.createTable('outpost-bench');
    const settings = {
      OUTPOST_STORE: 'cloud',
      OUTPOST_S3_ENDPOINT: s3.endpoint,
      OUTPOST_S3_REGION: s3.region,
      OUTPOST_S3_BUCKET: bucket,
      OUTPOST_S3_ACCESS_KEY_ID: s3.accessKeyId,
      OUTPOST_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
      OUTPOST_DYNAMODB_ENDPOINT: dynamo.endpoint,
      OUTPOST_DYNAMODB_TABLE: 'outpost-bench',
      OUTPOST_DYNAMODB_ACCESS_KEY_ID: 'bench',
      OUTPOST_DYNAMODB_SECRET_ACCESS_KEY: 'bench',
    };
    const nodePort = await freePort();
    const node = await start('Outpost on Node', process.execPath, [...cliNodeFlags(), ...NODE_ARGS, join(ROOT, 'dist/entry/cli.js'), 'serve'], { ...settings, OUTPOST_PORT: String(nodePort) }, nodePort);
    servers.push(node);
    const subjects: Array<{ server: Server; pids: number[] }> = [{ server: node, pids: [node.pid] }];
    const isolateReport = join(work, 'isolate.json');
    if (WORKERD) {
      // The Worker as `wrangler deploy` bundles it, run by workerd alone (wrangler dev would add
      // its own proxy workers in front, which a deployed Worker does not have).
      const bundleDir = join(work, 'bundle');
      await run(process.execPath, [join(ROOT, 'node_modules/wrangler/bin/wrangler.js'), 'deploy', '--dry-run', '--outdir', bundleDir], {
        CLOUDFLARE_CF_FETCH_ENABLED: 'false',
        WRANGLER_SEND_METRICS: 'false',
        CI: 'true',
        WRANGLER_LOG_PATH: join(work, 'logs'),
      });
      const workerPort = await freePort();
      const worker = await start(
        'Outpost on workerd',
        process.execPath,
        [
          '--experimental-websocket',
          join(ROOT, 'bench/worker-host.mjs'),
          join(bundleDir, 'workers.js'),
          String(workerPort),
          JSON.stringify(settings),
          isolateReport,
          ...(WORKERD_PROFILE ? [WORKERD_PROFILE] : []),
        ],
        {},
        workerPort,
        { cwd: ROOT, group: true },
      );
      servers.push(worker);
      const workerd = descendants(worker.pid).filter((pid) => {
        try {
          return /workerd/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
        } catch {
          return false;
        }
      });
      subjects.push({ server: worker, pids: workerd });
    }
    const idle = new Map(subjects.flatMap((s) => s.pids).map((pid) => [pid, rss(pid).now]));
    const worker = subjects[1]?.server;
    const isolatePeaks: Array<{ push: number; pull: number }> = [];

    // Rounds, each side in turn within a round, so that a drift of the machine or of RGW over
    // the run moves the peer and Outpost alike; medians count.
    const times = new Map<string, number[]>();
    const add = (key: string, seconds: number) => times.set(key, [...(times.get(key) ?? []), seconds]);
    for (let round = 0; round < ROUNDS; round++) {
      // The peer: the SDK straight to S3, one streamed PutObject and one GetObject.
      const direct = new Content(SIZE, 10 * round + 1);
      add('sdk push', (await timed(() => client.send(new PutObjectCommand({ Bucket: bucket, Key: 'direct', Body: Readable.from(direct.chunks()), ContentLength: SIZE })))).seconds);
      // The SDK's Node stream is read as is: converting it to a web stream would slow the peer down.
      const sdkPull = await timed(async () => drain((await client.send(new GetObjectCommand({ Bucket: bucket, Key: 'direct' }))).Body as unknown as ReadableStream<Uint8Array>));
      if (sdkPull.value.digest !== direct.digest) throw new Error('SDK round trip changed the bytes');
      add('sdk pull', sdkPull.seconds);
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'direct' }));
      collectGarbage(s3.dir);
      add('sdk parts push', (await timed(() => sdkMultipart(s3, bucket, 'direct-parts', new Content(SIZE, 10 * round + 2)))).seconds);
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'direct-parts' }));
      collectGarbage(s3.dir);
      for (const [i, { server }] of subjects.entries()) {
        const isolate = server === worker ? () => isolatePeak(worker, isolateReport) : undefined;
        await isolate?.();
        const measured = await measure(s3.dir, server, new Content(SIZE, 10 * round + 3 + i), client, bucket, isolate);
        add(`${server.label} push`, measured.push);
        add(`${server.label} pull`, measured.pull);
        if (measured.isolate) isolatePeaks.push(measured.isolate);
      }
    }
    const at = (key: string) => median(times.get(key)!);
    const rows: Row[] = [
      { subject: 'AWS SDK straight to S3', operation: 'push', seconds: at('sdk push'), bytes: SIZE },
      { subject: 'AWS SDK straight to S3', operation: 'pull', seconds: at('sdk pull'), bytes: SIZE },
      { subject: 'AWS SDK, 4 parts in flight', operation: 'push', seconds: at('sdk parts push'), bytes: SIZE, peer: { label: 'SDK', seconds: at('sdk push') } },
    ];
    for (const { server, pids } of subjects) {
      // The process that carried the bytes is the one that grew most.
      const growths = pids.map((pid) => rss(pid).peak - idle.get(pid)!);
      if (pids.length > 1) {
        for (const [i, pid] of pids.entries()) {
          const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).slice(-3).join(' ');
          console.log(`bench: ${server.label} process ${pid} (${cmd.slice(0, 100)}): peak RSS growth ${(growths[i]! / MiB).toFixed(1)} MiB`);
        }
      }
      rows.push(
        { subject: server.label, operation: 'push', seconds: at(`${server.label} push`), bytes: SIZE, peer: { label: 'SDK', seconds: at('sdk push') }, rssGrowth: Math.max(...growths) },
        { subject: server.label, operation: 'pull', seconds: at(`${server.label} pull`), bytes: SIZE, peer: { label: 'SDK', seconds: at('sdk pull') } },
      );
    }
    if (NODE_ARGS.length > 0) {
      // A graceful stop, so that node writes what its options asked for (a --cpu-prof profile).
      process.kill(node.pid, 'SIGTERM');
      await new Promise((r) => setTimeout(r, 3000));
    }
    if (worker) {
      // The isolate's own peak (heap and ArrayBuffers), which its 128 MB limit counts.
      const mib = (xs: number[]) => xs.map((x) => (x / MiB).toFixed(0)).join(', ');
      console.log(
        `bench: Outpost on workerd, peak of the isolate (heap and ArrayBuffer backing stores, Runtime.getHeapUsage every 50 ms) by round: ` +
          `push ${mib(isolatePeaks.map((p) => p.push))} MiB, pull ${mib(isolatePeaks.map((p) => p.pull))} MiB`,
      );
      if (WORKERD_PROFILE) {
        rmSync(isolateReport, { force: true });
        process.kill(worker.pid, 'SIGUSR2');
        for (let i = 0; i < 100 && !existsSync(isolateReport); i++) await new Promise((r) => setTimeout(r, 100));
      }
    }
    console.log(report(`blob of ${(SIZE / GiB).toFixed(2)} GiB on the cloud store (Ceph RGW + dynalite on loopback), median of ${ROUNDS} rounds (peak RSS growth covers all)`, rows));
  } finally {
    for (const s of servers) s.stop();
    await dynamo.stop();
    await s3.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Frees the space of deleted objects now: RGW only queues their data for a garbage collector that
 * runs hours later, and the in-memory OSD holds every byte until then.
 */
function collectGarbage(dir: string): void {
  spawnSync('radosgw-admin', ['gc', 'process', '--include-all'], { env: { ...process.env, CEPH_CONF: join(dir, 'ceph.conf') }, stdio: 'ignore' });
}

/** `content` as a multipart upload by the SDK with its defaults, lib-storage style: 8 MiB Buffer parts, four in flight. */
async function sdkMultipart(s3: Awaited<ReturnType<typeof startS3>>, Bucket: string, Key: string, content: Content): Promise<void> {
  const plain = new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    // Ceph 16 stores the default checksum trailer inside the object (see src/adapters/s3/client.ts).
    requestChecksumCalculation: 'WHEN_REQUIRED',
  });
  try {
    const { UploadId } = await plain.send(new CreateMultipartUploadCommand({ Bucket, Key }));
    const chunks = content.chunks();
    const next = (): Buffer | undefined => {
      const part: Buffer[] = [];
      for (let n = 0; n < 8 * MiB; ) {
        const chunk = chunks.next();
        if (chunk.done) break;
        part.push(chunk.value);
        n += chunk.value.byteLength;
      }
      return part.length ? Buffer.concat(part) : undefined;
    };
    const Parts: Array<{ ETag: string; PartNumber: number }> = [];
    let numbered = 0;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        for (let Body = next(); Body; Body = next()) {
          const PartNumber = ++numbered;
          const out = await plain.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber, Body, ContentLength: Body.byteLength }));
          Parts[PartNumber - 1] = { ETag: out.ETag!, PartNumber };
        }
      }),
    );
    await plain.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId, MultipartUpload: { Parts } }));
  } finally {
    plain.destroy();
  }
}

async function run(command: string, args: string[], env: Record<string, string>): Promise<void> {
  const out = spawnSync(command, args, { cwd: ROOT, env: { ...process.env, ...env }, encoding: 'utf8' });
  if (out.status !== 0) throw new Error(`${command} ${args.join(' ')} failed:\n${out.stdout}\n${out.stderr}`);
}

/** One push and one pull of `content` through `server`, then the blob deleted from S3. */
async function measure(
  dir: string,
  server: Server,
  content: Content,
  client: ReturnType<typeof createS3Client>,
  bucket: string,
  isolatePeak?: () => Promise<number>,
): Promise<{ push: number; pull: number; isolate?: { push: number; pull: number } }> {
  const push = await timed(async () => {
    const res = await send('POST', `${server.url}/v2/bench/blob/blobs/uploads/?digest=${content.digest}`, content);
    if (res.status !== 201) throw new Error(`${server.label} push: ${res.status} ${res.body}`);
  });
  const pushPeak = await isolatePeak?.();
  const pull = await timed(async () => {
    const res = await fetch(`${server.url}/v2/bench/blob/blobs/${content.digest}`);
    const got = await drain(res.body);
    if (res.status !== 200 || got.digest !== content.digest) throw new Error(`${server.label} pull: ${res.status} ${got.digest}`);
  });
  const pullPeak = await isolatePeak?.();
  await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: `blobs/sha256/${content.digest.slice(7, 9)}/${content.digest.slice(7)}` }));
  collectGarbage(dir);
  return { push: push.seconds, pull: pull.seconds, isolate: pushPeak === undefined ? undefined : { push: pushPeak, pull: pullPeak! } };
}

/** The Worker isolate's peak since the last call (bench/worker-host.mjs, SIGUSR1). */
async function isolatePeak(worker: Server, report: string): Promise<number> {
  rmSync(report, { force: true });
  process.kill(worker.pid, 'SIGUSR1');
  for (let i = 0; i < 100 && !existsSync(report); i++) await new Promise((r) => setTimeout(r, 20));
  return (JSON.parse(readFileSync(report, 'utf8')) as { peakIsolateBytes: number }).peakIsolateBytes;
}

await main();
