import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBlob, type Blob } from '../test/support/images.js';
import { seedBlob, startUpstreamRegistry, type UpstreamRegistry } from '../test/e2e/support/upstream-registry.js';
import { MiB, freePort, getHashed, median, rss, start, table, type HashedGet, type Server } from './harness.js';
import { cliNodeFlags } from '../test/support/node-flags.js';
import { killOnExit, startOutpost, type Instance } from './mirror-peers.js';

/**
 * One cold fill at a time: a blob nobody pulled yet, pulled through one Outpost process (local
 * store, default fill settings) from a plain docker-registry on loopback, against the same blob
 * pulled straight from that upstream just before. Both are one node:http GET that hashes the
 * body (harness getHashed); the Outpost GET follows a HEAD, which vouches for the blob, so its
 * time is the fill's. This is the single-process path (upstream body, hash, part writes,
 * response stream) that bench/mirror.ts's cold batches and its leader figure are made of, in a
 * few seconds a round. The process is warmed up by one small fill first (a long-running
 * server's code is compiled), and every round pulls fresh blobs. Beside wall time it reports
 * the CPU time the Outpost process used during the GET (all threads, user + system, from
 * /proc, and the main thread's part of it), which a busy machine disturbs less, and the CPU it
 * used after the last byte until it was idle (the commit). Beside both, the floor: the same blob through
 * bench/passthrough.mjs, a node:http pass-through that only receives, hashes, writes a file and
 * sends (no lease, parts, index or verification before serving), with the same node options.
 *
 *   BENCH_FILL_MIB        blob sizes in MiB (default 64,256)
 *   BENCH_FILL_ROUNDS     rounds, a fresh blob of each size in each (default 5; medians count)
 *   BENCH_FILL_NODE_ARGS  node options for the Outpost process (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof")
 *
 *   npm run build && npm run bench:fill
 */

const SIZES = (process.env.BENCH_FILL_MIB ?? '64,256').split(',').map((s) => Number(s) * MiB);
const ROUNDS = Number(process.env.BENCH_FILL_ROUNDS ?? 5);
const NODE_ARGS = (process.env.BENCH_FILL_NODE_ARGS ?? '').split(' ').filter(Boolean);
const WARM_UP_BYTES = 16 * MiB;
/** Clock ticks a second of /proc/<pid>/stat's utime and stime (USER_HZ, 100 on Linux). */
const TICKS_PER_SECOND = 100;
const REPOSITORY = 'library/fill';

/** CPU seconds (user + system) from a /proc stat line. */
function statSeconds(path: string): number {
  const stat = readFileSync(path, 'utf8');
  // The fields after the command name (which may hold spaces) start with the state, field 3.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

/** CPU seconds (user + system, every thread) the process has used so far. */
function cpuSeconds(pid: number): number {
  return statSeconds(`/proc/${pid}/stat`);
}

/** CPU seconds of the whole process and of its main thread (the event loop; the rest is V8's helpers and libuv's pool). */
function cpuSplit(pid: number): { all: number; main: number } {
  return { all: cpuSeconds(pid), main: statSeconds(`/proc/${pid}/task/${pid}/stat`) };
}

/** Waits until the process has used no CPU for `quietMs` (the fill's compose and clean-up are done). */
async function idle(pid: number, quietMs = 300): Promise<void> {
  for (let last = cpuSeconds(pid); ; ) {
    await new Promise((r) => setTimeout(r, quietMs));
    const now = cpuSeconds(pid);
    if (now - last < 0.02) return;
    last = now;
  }
}

function check(what: string, r: HashedGet, blob: Blob): void {
  if (r.status !== 200 || r.digest !== blob.digest || r.size !== blob.size) throw new Error(`${what}: ${r.status}, ${r.size} bytes, ${r.digest}`);
}

/** What one cold fill cost: wall time of the GET, CPU during it (all threads, and the main thread's part), and CPU after its last byte. */
interface FillCost {
  seconds: number;
  cpu: number;
  mainCpu: number;
  commitCpu: number;
}

/**
 * A GET of `blob` through Outpost, which has never seen it: the fill's wall and CPU time, and
 * the CPU the process uses after the last byte until it is idle again (the commit: the parts
 * composed into the content object and flushed, the parts deleted), which a client does not
 * wait for but which a busy machine pays for all the same.
 */
async function coldFill(outpost: Instance, blob: Blob): Promise<FillCost> {
  const url = `${outpost.url}/v2/${outpost.prefix}${REPOSITORY}/blobs/${blob.digest}`;
  const head = await fetch(url, { method: 'HEAD' });
  if (head.status !== 200) throw new Error(`HEAD through Outpost answered ${head.status}`);
  await idle(outpost.pid);
  const before = cpuSplit(outpost.pid);
  const r = await getHashed(url);
  const after = cpuSplit(outpost.pid);
  check('through Outpost', r, blob);
  await idle(outpost.pid);
  return { seconds: r.seconds, cpu: after.all - before.all, mainCpu: after.main - before.main, commitCpu: cpuSeconds(outpost.pid) - after.all };
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'outpost-bench-fill-'));
  let outpost: Instance | undefined;
  let floor: Server | undefined;
  let up: UpstreamRegistry | undefined;
  killOnExit(() => {
    for (const dir of [up?.dir, work]) if (dir) rmSync(dir, { recursive: true, force: true });
  });
  try {
    up = await startUpstreamRegistry();
    const config = { upstreams: [{ name: 'hub', url: up.url, namespace: 'docker.io' }] };
    outpost = await startOutpost('Outpost', join(work, 'data'), join(work, 'outpost.log'), config, NODE_ARGS);
    const warm = randomBlob(WARM_UP_BYTES);
    await seedBlob(up, REPOSITORY, warm);
    await coldFill(outpost, warm);
    const idleRss = rss(outpost.pid).now;
    const floorDir = join(work, 'passthrough');
    mkdirSync(floorDir);
    const floorPort = await freePort();
    floor = await start('pass-through', process.execPath, [...cliNodeFlags(), join(import.meta.dirname, 'passthrough.mjs'), up.url, floorDir, String(floorPort)], {}, floorPort);
    const times = SIZES.map(() => ({ direct: [] as number[], fill: [] as number[], cpu: [] as number[], mainCpu: [] as number[], commitCpu: [] as number[], floor: [] as number[], floorCpu: [] as number[] }));
    for (let round = 1; round <= ROUNDS; round++) {
      for (const [i, size] of SIZES.entries()) {
        const blob = randomBlob(size);
        await seedBlob(up, REPOSITORY, blob);
        const direct = await getHashed(`${up.url}/v2/${REPOSITORY}/blobs/${blob.digest}`);
        check('straight from the upstream', direct, blob);
        const fill = await coldFill(outpost, blob);
        const floorBefore = cpuSeconds(floor.pid);
        const passed = await getHashed(`${floor.url}/v2/${REPOSITORY}/blobs/${blob.digest}`);
        const floorCpu = cpuSeconds(floor.pid) - floorBefore;
        check('through the pass-through', passed, blob);
        await idle(floor.pid);
        rmSync(floorDir, { recursive: true, force: true });
        mkdirSync(floorDir);
        times[i]!.direct.push(direct.seconds);
        times[i]!.fill.push(fill.seconds);
        times[i]!.cpu.push(fill.cpu);
        times[i]!.mainCpu.push(fill.mainCpu);
        times[i]!.commitCpu.push(fill.commitCpu);
        times[i]!.floor.push(passed.seconds);
        times[i]!.floorCpu.push(floorCpu);
        console.log(
          `bench: round ${round}, ${size / MiB} MiB: direct ${direct.seconds.toFixed(3)} s, cold fill ${fill.seconds.toFixed(3)} s (Outpost CPU ${fill.cpu.toFixed(2)} s, main thread ${fill.mainCpu.toFixed(2)} s, then ${fill.commitCpu.toFixed(2)} s to commit), pass-through ${passed.seconds.toFixed(3)} s (CPU ${floorCpu.toFixed(2)} s)`,
        );
      }
    }
    const rows = SIZES.map((size, i) => {
      const direct = median(times[i]!.direct);
      const fill = median(times[i]!.fill);
      const rate = (size / MiB / fill).toFixed(0);
      const floorTime = median(times[i]!.floor);
      return [
        `${size / MiB} MiB`,
        `${direct.toFixed(3)} s`,
        `${fill.toFixed(3)} s (${rate} MiB/s)`,
        `${(fill / direct).toFixed(2)}x`,
        `${median(times[i]!.cpu).toFixed(2)} s (main thread ${median(times[i]!.mainCpu).toFixed(2)} s)`,
        `${median(times[i]!.commitCpu).toFixed(2)} s`,
        `${floorTime.toFixed(3)} s, ${(floorTime / direct).toFixed(2)}x, CPU ${median(times[i]!.floorCpu).toFixed(2)} s`,
      ];
    });
    const peak = ((rss(outpost.pid).peak - idleRss) / MiB).toFixed(0);
    console.log(table(`One cold fill through Outpost (Node, local store) against a direct GET from the upstream, median of ${ROUNDS}`, ['blob', 'direct', 'cold fill', 'fill vs direct', 'Outpost CPU during the fill', 'Outpost CPU after the last byte (commit)', 'Node pass-through floor: time, vs direct, CPU'], rows));
    console.log(`Outpost's peak RSS growth over its idle size after the warm-up fill, all rounds: ${peak} MiB`);
  } finally {
    await outpost?.stop();
    floor?.stop();
    await up?.stop();
    if (process.env.BENCH_FILL_SHOW_LOG) console.log(readFileSync(join(work, 'outpost.log'), 'utf8'));
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
