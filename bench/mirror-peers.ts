import { execFile, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Blob } from '../test/support/images.js';
import { expectSameBlobs, readLayout } from '../test/e2e/support/oci-layout.js';
import { skopeo } from '../test/e2e/support/skopeo.js';
import { cliNodeFlags } from '../test/support/node-flags.js';
import { startDaemon, startUpstreamRegistry, type UpstreamRegistry } from '../test/e2e/support/upstream-registry.js';
import { descendants, timed } from './harness.js';

/**
 * The processes and clients of bench/mirror.ts: Outpost instances (dist/entry/cli.js serve, started
 * with the e2e support's startDaemon, so each log is a file and no process outlives this one),
 * Distribution proxies (the e2e support's startUpstreamRegistry in proxy mode), batches of real
 * skopeo pulls, and wrk.
 */

const ENTRY = resolve(import.meta.dirname, '../dist/entry/cli.js');
const ROOT = resolve(import.meta.dirname, '..');

/** A server the clients pull through: an Outpost process or a Distribution proxy. */
export interface Instance {
  label: string;
  /** 127.0.0.1:port, for skopeo's docker:// references. */
  host: string;
  url: string;
  pid: number;
  /** What goes before the upstream's repository name: "hub/" (Outpost's alias), "" for a proxy. */
  prefix: string;
  /** A directory of its own that stop() removes (a proxy's), to remove after a kill too. */
  dir?: string;
  stop(): Promise<void>;
}

/**
 * One Outpost process on the local store in `dataDir`, with the configuration document `config`;
 * `nodeArgs` go to node after the command's own options (cliNodeFlags) and before the entry (e.g. --cpu-prof).
 */
export async function startOutpost(label: string, dataDir: string, logFile: string, config: unknown, nodeArgs: string[] = []): Promise<Instance> {
  // The entry refuses OUTPOST_* variables it does not know: pass only ours.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OUTPOST_')));
  let url = '';
  const daemon = await startDaemon({
    label,
    command: process.execPath,
    args: [...cliNodeFlags(), ...nodeArgs, ENTRY, 'serve'],
    logFile,
    env: { ...env, OUTPOST_STORE: 'local', OUTPOST_DATA_DIR: dataDir, OUTPOST_HOST: '127.0.0.1', OUTPOST_PORT: '0', OUTPOST_CONFIG: JSON.stringify(config) },
    ready: async (log) => {
      // The start-up line "serving ... on http://127.0.0.1:<port>/v2/".
      const m = /on http:\/\/127\.0\.0\.1:(\d+)\/v2\//.exec(log);
      if (!m) return false;
      url = `http://127.0.0.1:${m[1]}`;
      const res = await fetch(`${url}/v2/`);
      await res.arrayBuffer();
      return res.status === 200;
    },
  });
  return { label, host: new URL(url).host, url, pid: daemon.pid, prefix: 'hub/', stop: daemon.stop };
}

/** Distribution's pull-through cache of `remoteUrl`, on storage of its own. */
export async function startProxy(label: string, remoteUrl: string): Promise<Instance & { registry: UpstreamRegistry }> {
  const registry = await startUpstreamRegistry({ proxy: { remoteUrl } });
  return { label, host: registry.host, url: registry.url, pid: pidOf(join(registry.dir, 'config.yml')), prefix: '', dir: registry.dir, stop: registry.stop, registry };
}

/** The pid of the running process one of whose arguments is `arg` (the e2e support does not say a registry's pid). */
export function pidOf(arg: string): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').includes(arg)) return Number(entry);
    } catch {
      // Exited while we looked.
    }
  }
  throw new Error(`no process runs with the argument ${arg}`);
}

/** One client's pull: an image (or an index with --all) into an OCI layout of its own. */
export interface Pull {
  instance: { host: string; prefix: string };
  repository: string;
  /** The tagged manifest's digest and every blob the layout must end up with. */
  top: string;
  blobs: Blob[];
  all: boolean;
}

/**
 * Runs the pulls at once, each `skopeo copy docker://... oci:<dir>:v1`, and returns the wall
 * time of the batch. Every client is awaited (no skopeo left running); then the layouts are
 * checked: tagged manifest and blob sizes for all, every byte for the first pull of each
 * repository (skopeo itself verifies digests as it copies), and removed.
 */
export async function pullBatch(dir: string, pulls: Pull[]): Promise<number> {
  const dest = (i: number) => join(dir, `client-${i}`);
  mkdirSync(dir, { recursive: true });
  const { seconds, value } = await timed(() =>
    Promise.allSettled(
      pulls.map((p, i) =>
        skopeo('copy', '--quiet', ...(p.all ? ['--all'] : []), '--src-tls-verify=false', `docker://${p.instance.host}/${p.instance.prefix}${p.repository}:v1`, `oci:${dest(i)}:v1`),
      ),
    ),
  );
  try {
    const failed = value.flatMap((r, i) => (r.status === 'rejected' ? [`client ${i} (${pulls[i]!.instance.host}/${pulls[i]!.repository}): ${String(r.reason).slice(0, 600)}`] : []));
    if (failed.length > 0) throw new Error(`${failed.length} of ${pulls.length} pulls failed:\n${failed.join('\n')}`);
    const checked = new Set<string>();
    for (const [i, p] of pulls.entries()) {
      const layout = readLayoutHeader(dest(i));
      if (layout.top !== p.top) throw new Error(`client ${i}: pulled ${layout.top}, expected ${p.top}`);
      if (!checked.has(p.repository)) {
        checked.add(p.repository);
        expectSameBlobs((await readLayout(dest(i))).blobs, p.blobs);
        continue;
      }
      const want = new Map(p.blobs.map((b) => [b.digest.slice('sha256:'.length), b.size]));
      const got = new Map(layout.files);
      for (const [hex, size] of want) if (got.get(hex) !== size) throw new Error(`client ${i}: blob ${hex} has ${got.get(hex)} bytes, expected ${size}`);
      if (got.size !== want.size) throw new Error(`client ${i}: ${got.size} blobs, expected ${want.size}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return seconds;
}

/** The tagged digest and the blob files with their sizes, without reading the blobs. */
function readLayoutHeader(dir: string): { top: string; files: Array<[string, number]> } {
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  const blobDir = join(dir, 'blobs', 'sha256');
  return { top: index.manifests[0]!.digest, files: readdirSync(blobDir).map((f) => [f, statSync(join(blobDir, f)).size]) };
}

/**
 * Waits until the upstream's log stops growing (a proxy may still be storing in the background
 * what its clients already have): no new request line for `quietMs`, at most `maxMs`.
 */
export async function settle(up: UpstreamRegistry, quietMs = 1500, maxMs = 60_000): Promise<void> {
  const deadline = Date.now() + maxMs;
  let last = (await up.requests()).length;
  let since = Date.now();
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    const n = (await up.requests()).length;
    if (n !== last) {
      last = n;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return;
  }
}

/**
 * wrk on PATH, installed the way the e2e peers are (scripts/install-test-deps.sh lists it) when
 * it is missing; a reason when it cannot be had.
 */
export function ensureWrk(): string | undefined {
  const has = () => spawnSync('sh', ['-c', 'command -v wrk'], { stdio: 'ignore' }).status === 0;
  if (has()) return undefined;
  console.log('bench: wrk not found; running scripts/install-test-deps.sh');
  const run = spawnSync('bash', [join(ROOT, 'scripts/install-test-deps.sh')], { stdio: 'inherit' });
  if (has()) return undefined;
  return `wrk could not be installed (scripts/install-test-deps.sh exited ${run.status ?? run.signal}; it needs root and apt-get)`;
}

export interface WrkResult {
  requestsPerSecond: number;
  requests: number;
  /** Answers that were not 2xx or 3xx. */
  failed: number;
}

/** `wrk -t1 -c<connections> -d<seconds>s` with one header; wrk takes one core, the server the other. */
export function wrk(url: string, header: string, seconds: number, connections = 16): Promise<WrkResult> {
  return new Promise((done, reject) => {
    execFile('wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '-H', header, url], { timeout: (seconds + 30) * 1000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`wrk failed: ${err.message}\n${stderr}`));
      const rps = /Requests\/sec:\s+([\d.]+)/.exec(stdout);
      const total = /(\d+) requests in/.exec(stdout);
      if (!rps || !total) return reject(new Error(`wrk printed no result:\n${stdout}`));
      const failed = Number(/Non-2xx or 3xx responses: (\d+)/.exec(stdout)?.[1] ?? 0);
      done({ requestsPerSecond: Number(rps[1]), requests: Number(total[1]), failed });
    });
  });
}

/**
 * Kills every process this one started and is still running (servers, skopeo, wrk): the safety
 * net for a benchmark that fails or is interrupted, run on exit and on SIGINT/SIGTERM.
 */
export function killOnExit(cleanup: () => void): void {
  const killAll = () => {
    for (const pid of descendants(process.pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    cleanup();
  };
  process.once('exit', killAll);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      console.error(`bench: ${signal}: stopping every process it started`);
      process.exit(130);
    });
  }
}
