import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBlob, type Blob, type Image } from '../test/support/images.js';
import { imageBlobs, indexBlobs, tarImage, tarIndex, type ImageIndex } from '../test/e2e/support/oci-layout.js';
import { seedBlob, seedImage, startUpstreamRegistry, type RegistryRequest, type UpstreamRegistry } from '../test/e2e/support/upstream-registry.js';
import { MiB, getHashed, rss, table, type HashedGet } from './harness.js';
import { ensureWrk, killOnExit, pullBatch, settle, startOutpost, startProxy, wrk, type Instance, type Pull } from './mirror-peers.js';

/**
 * The pull-through mirror against Distribution's own pull-through cache (Debian's
 * docker-registry 2.8 in proxy mode), both in front of the same upstream (a plain
 * docker-registry on loopback, seeded once), same workload, same run, each from a cold cache:
 *
 *   1. N concurrent cold `skopeo copy` pulls (BENCH_MIRROR_N, default 1,8,32) spread round-robin
 *      over three instances, mixing A, B and a multi-arch index (--all): upstream amplification
 *      (blob bytes the upstream served / unique blob bytes pulled), wall time against the same
 *      batch pulled straight from the upstream, peak RSS growth of every server process;
 *   2. the same batch again, warm (MiB/s);
 *   3. one large blob (BENCH_MIRROR_BIG_MIB, default 256) pulled by a leader and, once its
 *      headers are in, a follower on another Outpost process (on the same proxy for Distribution);
 *   4. manifest GETs by tag within the TTL with wrk (BENCH_WRK_SECONDS, default 5), counting
 *      the upstream manifest requests made meanwhile.
 * Layers are gzip tar archives of random bytes, 1 to 64 MiB (BENCH_MIRROR_SCALE multiplies them).
 *
 *   npm run build && npm run bench:mirror
 */

const SCALE = Number(process.env.BENCH_MIRROR_SCALE ?? 1);
const NS = (process.env.BENCH_MIRROR_N ?? '1,8,32').split(',').map(Number);
const BIG = Number(process.env.BENCH_MIRROR_BIG_MIB ?? 256) * MiB;
const WRK_SECONDS = Number(process.env.BENCH_WRK_SECONDS ?? 5);
/** BENCH_MIRROR_KEEP=1 keeps the work directory (the Outpost logs) for a look afterwards. */
const KEEP = process.env.BENCH_MIRROR_KEEP === '1';
const INSTANCES = 3;
const ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64';
const OTHER_ARCH = ARCH === 'amd64' ? 'arm64' : 'amd64';
const ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');
const WHY_THREE =
  'Distribution runs as 3 proxies with a storage each: its proxy keeps its scheduler state in its own storage and coordinates nothing across processes, ' +
  'so three proxies are how an operator scales it out on disks; this costs it up to one upstream download per proxy (the "3-cache floor" column), ' +
  'which is shown beside its amplification so the part it owes to its own fetch path stays visible.';

const mb = (n: number) => Math.max(1, Math.round(n * SCALE * MiB));
const fmtMiB = (bytes: number) => `${(bytes / MiB).toFixed(bytes < 10 * MiB ? 1 : 0)} MiB`;
const fmtS = (s: number) => `${s.toFixed(2)} s`;

interface Workload {
  repository: string;
  top: string;
  /** Everything the client's layout ends up with (manifests included). */
  blobs: Blob[];
  /** Config and layers: what the upstream serves as blobs. */
  content: Blob[];
  all: boolean;
}

function workload(repository: string, image: Image | ImageIndex): Workload {
  const blobs = 'index' in image ? indexBlobs(image) : imageBlobs(image);
  const manifests = new Set('index' in image ? [image.index, ...image.images.map((i) => i.manifest)].map((b) => b.digest) : [image.manifest.digest]);
  const top = 'index' in image ? image.index.digest : image.manifest.digest;
  return { repository, top, blobs, content: blobs.filter((b) => !manifests.has(b.digest)), all: 'index' in image };
}

/** Client i goes to instance i mod 3 and pulls a Latin square of the workloads, so each instance serves each one. */
function assign(n: number, images: Workload[]): Array<{ instance: number; image: Workload }> {
  return Array.from({ length: n }, (_, i) => ({ instance: i % INSTANCES, image: images[(i + Math.floor(i / INSTANCES)) % images.length]! }));
}

const blobGets = (rs: RegistryRequest[]) => rs.filter((r) => r.method === 'GET' && r.kind === 'blob' && r.status >= 200 && r.status < 300);
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

async function since(up: UpstreamRegistry, from: number): Promise<RegistryRequest[]> {
  return (await up.requests()).slice(from);
}

interface Cold {
  seconds: number;
  upstreamBytes: number;
  uniqueBytes: number;
  /** Upstream bytes if each instance fetched each blob its clients asked for exactly once. */
  floorBytes: number;
  rssGrowth: number[];
}

interface Warm {
  seconds: number;
  bytes: number;
  upstreamBlobGets: number;
  upstreamManifestRequests: number;
}

/** The cold batch through `instances` (fresh), then the same batch warm. */
async function coldAndWarm(up: UpstreamRegistry, work: string, instances: Instance[], clients: ReturnType<typeof assign>): Promise<{ cold: Cold; warm: Warm }> {
  const pulls: Pull[] = clients.map((c) => ({ instance: instances[c.instance]!, repository: c.image.repository, top: c.image.top, blobs: c.image.blobs, all: c.image.all }));
  const idle = instances.map((i) => rss(i.pid).now);
  let from = (await up.requests()).length;
  const coldSeconds = await pullBatch(join(work, 'pulls'), pulls);
  const rssGrowth = instances.map((i, k) => rss(i.pid).peak - idle[k]!);
  await settle(up);
  const coldRequests = await since(up, from);
  const unique = new Map<string, number>();
  const perInstance = new Map<string, number>();
  for (const c of clients) {
    for (const b of c.image.content) {
      unique.set(b.digest, b.size);
      perInstance.set(`${c.instance} ${b.digest}`, b.size);
    }
  }
  const cold: Cold = {
    seconds: coldSeconds,
    upstreamBytes: sum(blobGets(coldRequests).map((r) => r.bytes)),
    uniqueBytes: sum([...unique.values()]),
    floorBytes: sum([...perInstance.values()]),
    rssGrowth,
  };
  from = (await up.requests()).length;
  const warmSeconds = await pullBatch(join(work, 'pulls'), pulls);
  await settle(up);
  const warmRequests = await since(up, from);
  const warm: Warm = {
    seconds: warmSeconds,
    bytes: sum(clients.map((c) => sum(c.image.blobs.map((b) => b.size)))),
    upstreamBlobGets: blobGets(warmRequests).length,
    upstreamManifestRequests: warmRequests.filter((r) => r.kind === 'manifest').length,
  };
  return { cold, warm };
}

interface Follow {
  leader: HashedGet;
  follower: HashedGet;
  upstreamGets: number;
}

/** A GET of the big blob through `leader` and, as soon as its headers are in, one through `follower`. */
async function leaderAndFollower(up: UpstreamRegistry, leader: Instance, follower: Instance, big: Blob): Promise<Follow> {
  const path = (i: Instance) => `${i.url}/v2/${i.prefix}library/big/blobs/${big.digest}`;
  // A blob is served for a mirrored repository once the upstream vouched for it there: a HEAD does.
  const head = await fetch(path(leader), { method: 'HEAD' });
  if (head.status !== 200) throw new Error(`${leader.label}: HEAD of the big blob answered ${head.status}`);
  const from = (await up.requests()).length;
  let second: Promise<HashedGet> | undefined;
  const first = await getHashed(path(leader), {}, () => (second = getHashed(path(follower))));
  const result = { leader: first, follower: await second! };
  for (const [who, r] of [['leader', result.leader], ['follower', result.follower]] as const) {
    if (r.status !== 200 || r.digest !== big.digest || r.size !== big.size) throw new Error(`${leader.label} ${who}: ${r.status}, ${r.size} bytes, ${r.digest}`);
  }
  await settle(up);
  const gets = blobGets(await since(up, from)).filter((r) => r.digest === big.digest);
  return { ...result, upstreamGets: gets.length };
}

async function manifestRate(up: UpstreamRegistry, instance: Instance, image: Workload): Promise<{ rps: number; requests: number; failed: number; upstream: number }> {
  const url = `${instance.url}/v2/${instance.prefix}${image.repository}/manifests/v1`;
  const check = await fetch(url, { headers: { accept: ACCEPT } });
  await check.arrayBuffer();
  if (check.status !== 200 || check.headers.get('docker-content-digest') !== image.top) {
    throw new Error(`${instance.label}: GET ${url} answered ${check.status} ${check.headers.get('docker-content-digest')}`);
  }
  const from = (await up.requests()).length;
  const r = await wrk(url, `Accept: ${ACCEPT}`, WRK_SECONDS);
  await settle(up, 500);
  const upstream = (await since(up, from)).filter((q) => q.kind === 'manifest').length;
  return { rps: r.requestsPerSecond, requests: r.requests, failed: r.failed, upstream };
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'outpost-bench-mirror-'));
  const running: Instance[] = [];
  let up: UpstreamRegistry | undefined;
  // After a kill (a failure, ^C) stop() never ran: the registries' directories go here too.
  killOnExit(() => {
    for (const dir of [up?.dir, ...running.map((i) => i.dir)]) if (dir) rmSync(dir, { recursive: true, force: true });
    if (!KEEP) rmSync(work, { recursive: true, force: true });
  });
  const stopAll = async () => {
    await Promise.all(running.splice(0).map((i) => i.stop()));
  };
  try {
    const noWrk = ensureWrk();
    console.log(`bench: generating the images (scale ${SCALE})`);
    // A = L1 L2 L3 L4 L5; B = L1 L2 L6 L7 L8; an index of two platforms over the same L1 L2.
    const base = tarImage({ layers: [mb(64), mb(32)], arch: ARCH });
    const imageA = tarImage({ layers: [mb(64), mb(48), mb(2)], arch: ARCH, base });
    const imageB = tarImage({ layers: [mb(16), mb(8), mb(1)], arch: ARCH, base });
    const multi = tarIndex([
      { arch: ARCH, layers: [mb(40)], base },
      { arch: OTHER_ARCH, layers: [mb(24), mb(4)], base },
    ]);
    const big = randomBlob(BIG);
    const images = [workload('library/a', imageA), workload('library/b', imageB), workload('library/multi', multi)];
    const allUnique = new Map(images.flatMap((w) => w.content.map((b) => [b.digest, b.size] as const)));
    console.log(`bench: ${allUnique.size} unique blobs, ${fmtMiB(sum([...allUnique.values()]))}; per client ${images.map((w) => `${w.repository} ${fmtMiB(sum(w.blobs.map((b) => b.size)))}`).join(', ')}`);

    up = await startUpstreamRegistry();
    await seedImage(up, 'library/a', 'v1', imageA);
    await seedImage(up, 'library/b', 'v1', imageB);
    await seedImage(up, 'library/multi', 'v1', multi);
    await seedBlob(up, 'library/big', big);
    const upstream = up;
    const direct: Instance = { label: 'upstream', host: upstream.host, url: upstream.url, pid: 0, prefix: '', stop: async () => undefined };
    const config = { upstreams: [{ name: 'hub', url: upstream.url, namespace: 'docker.io', tagTtl: '30m' }] };

    const coldRows: string[][] = [];
    const warmRows: string[][] = [];
    const misses: string[] = [];
    let outposts: Instance[] = [];
    let proxies: Instance[] = [];
    let dataDir = '';
    for (const n of NS) {
      await stopAll();
      // Each N from a cold cache: fresh processes on a fresh data directory, fresh proxies.
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
      dataDir = join(work, `outpost-${n}`);
      outposts = [];
      for (let k = 0; k < INSTANCES; k++) outposts.push(await startOutpost(`Outpost #${k + 1}`, dataDir, join(work, `outpost-${n}-${k + 1}.log`), config));
      running.push(...outposts);
      proxies = [];
      for (let k = 0; k < INSTANCES; k++) proxies.push(await startProxy(`Distribution proxy #${k + 1}`, upstream.url));
      running.push(...proxies);
      const clients = assign(n, images);
      console.log(`bench: N=${n}: ${clients.map((c) => `${c.image.repository.slice(8)}@${c.instance + 1}`).join(' ')}`);

      const directFrom = (await upstream.requests()).length;
      const directSeconds = await pullBatch(
        join(work, 'pulls'),
        clients.map((c) => ({ instance: direct, repository: c.image.repository, top: c.image.top, blobs: c.image.blobs, all: c.image.all })),
      );
      const directBytes = sum(blobGets(await since(upstream, directFrom)).map((r) => r.bytes));
      const ours = await coldAndWarm(upstream, work, outposts, clients);
      const theirs = await coldAndWarm(upstream, work, proxies, clients);
      console.log(`bench: N=${n} done (direct ${fmtS(directSeconds)}, Outpost ${fmtS(ours.cold.seconds)}, Distribution ${fmtS(theirs.cold.seconds)})`);

      const amp = (c: Cold) => c.upstreamBytes / c.uniqueBytes;
      const ratio = (c: Cold) => c.seconds / directSeconds;
      const mem = (c: Cold) => c.rssGrowth.map((b) => (b / MiB).toFixed(0)).join(' / ') + ' MiB';
      coldRows.push(
        [String(n), 'skopeo straight to the upstream', fmtS(directSeconds), '1.00x (peer)', fmtMiB(directBytes), 'n/a', 'n/a'],
        [String(n), 'Outpost, 3 processes, one data dir', fmtS(ours.cold.seconds), `${ratio(ours.cold).toFixed(2)}x`, fmtMiB(ours.cold.upstreamBytes), amp(ours.cold).toFixed(2), mem(ours.cold)],
        [
          String(n),
          'Distribution 2.8 proxy, 3 instances',
          fmtS(theirs.cold.seconds),
          `${ratio(theirs.cold).toFixed(2)}x`,
          fmtMiB(theirs.cold.upstreamBytes),
          `${amp(theirs.cold).toFixed(2)} (3-cache floor ${(theirs.cold.floorBytes / theirs.cold.uniqueBytes).toFixed(2)})`,
          mem(theirs.cold),
        ],
      );
      const rate = (w: Warm) => w.bytes / MiB / w.seconds;
      warmRows.push(
        [String(n), 'Outpost', fmtS(ours.warm.seconds), rate(ours.warm).toFixed(0), `${(rate(ours.warm) / rate(theirs.warm)).toFixed(2)}x`, `${ours.warm.upstreamBlobGets} / ${ours.warm.upstreamManifestRequests}`],
        [String(n), 'Distribution 2.8 proxy', fmtS(theirs.warm.seconds), rate(theirs.warm).toFixed(0), '1.00x (peer)', `${theirs.warm.upstreamBlobGets} / ${theirs.warm.upstreamManifestRequests}`],
      );
      if (Math.abs(amp(ours.cold) - 1) > 0.005) misses.push(`N=${n}: Outpost's upstream amplification is ${amp(ours.cold).toFixed(3)}, not 1.00`);
      if (ratio(ours.cold) > 1) misses.push(`N=${n}: Outpost's cold batch took ${ratio(ours.cold).toFixed(2)}x the direct pull (goal <= 1.0x)`);
      if (ours.warm.upstreamBlobGets + ours.warm.upstreamManifestRequests > 0) misses.push(`N=${n}: Outpost's warm batch made upstream requests`);
    }

    console.log(`bench: leader and follower, ${fmtMiB(BIG)} blob`);
    const directBig = await getHashed(`${upstream.url}/v2/library/big/blobs/${big.digest}`);
    if (directBig.digest !== big.digest) throw new Error(`the upstream sent ${directBig.digest} for the big blob`);
    const ourFollow = await leaderAndFollower(upstream, outposts[0]!, outposts[1]!, big);
    const theirFollow = await leaderAndFollower(upstream, proxies[0]!, proxies[0]!, big);
    const followRow = (label: string, f: Follow) => [
      label,
      fmtS(f.leader.seconds),
      fmtS(f.follower.seconds),
      (f.follower.seconds / f.leader.seconds).toFixed(2),
      `${(f.leader.seconds / directBig.seconds).toFixed(2)}x`,
      String(f.upstreamGets),
    ];
    const ourFollowRatio = ourFollow.follower.seconds / ourFollow.leader.seconds;
    if (ourFollowRatio > 1.25) misses.push(`Outpost's follower took ${ourFollowRatio.toFixed(2)}x its leader's time (goal <= 1.25)`);
    if (ourFollow.upstreamGets !== 1) misses.push(`Outpost fetched the big blob ${ourFollow.upstreamGets} times from the upstream`);

    let manifestRows: string[][];
    if (noWrk) {
      manifestRows = [['skipped', noWrk, '', '', '']];
    } else {
      console.log(`bench: manifests by tag, wrk for ${WRK_SECONDS} s each`);
      const ourRate = await manifestRate(upstream, outposts[0]!, images[0]!);
      const theirRate = await manifestRate(upstream, proxies[0]!, images[0]!);
      manifestRows = [
        ['Outpost #1', ourRate.rps.toFixed(0), `${(ourRate.rps / theirRate.rps).toFixed(2)}x`, `${ourRate.upstream} (of ${ourRate.requests} answered)`, String(ourRate.failed)],
        ['Distribution 2.8 proxy #1', theirRate.rps.toFixed(0), '1.00x (peer)', `${theirRate.upstream} (of ${theirRate.requests} answered)`, String(theirRate.failed)],
      ];
      if (ourRate.upstream > 0) misses.push(`Outpost made ${ourRate.upstream} upstream manifest requests within the tag TTL`);
      if (ourRate.failed > 0) misses.push(`${ourRate.failed} of Outpost's manifest answers were not 2xx`);
    }

    console.log(
      table(
        `Cold pulls: N concurrent skopeo clients round-robin over 3 instances (fresh caches), ${fmtMiB(sum([...allUnique.values()]))} of unique blobs in the image set`,
        ['N', 'subject', 'wall time', 'time vs direct', 'upstream blob bytes', 'amplification', 'peak RSS growth (each process)'],
        coldRows,
      ),
    );
    console.log(WHY_THREE);
    console.log(table('Warm pulls: the same batch again, cached', ['N', 'subject', 'wall time', 'MiB/s', 'vs Distribution', 'upstream blob GETs / manifest requests'], warmRows));
    console.log(
      table(
        `Leader and follower: one ${fmtMiB(BIG)} blob (node:http, body hashed; straight from the upstream: ${fmtS(directBig.seconds)})`,
        ['subject', 'leader', 'follower', 'follower / leader', 'leader vs direct', 'upstream GETs of the blob'],
        [followRow('Outpost (leader #1, follower #2, another process)', ourFollow), followRow('Distribution 2.8 proxy (two clients on #1)', theirFollow)],
      ),
    );
    console.log(
      table(
        `Manifest GET by tag within the TTL (wrk -t1 -c16, ${WRK_SECONDS} s)`,
        ['subject', 'req/s', 'vs Distribution', 'upstream manifest requests meanwhile', 'non-2xx'],
        manifestRows,
      ),
    );
    console.log(misses.length === 0 ? '\ngoals: all met' : `\ngoals missed:\n${misses.map((m) => `- ${m}`).join('\n')}`);
  } finally {
    await stopAll();
    await up?.stop();
    if (KEEP) console.log(`bench: kept ${work} (Outpost logs: outpost-<N>-<instance>.log)`);
    else rmSync(work, { recursive: true, force: true });
  }
}

await main();
