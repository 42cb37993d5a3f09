import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon } from './upstream-registry.js';

/**
 * Debian's containerd (installed by scripts/install-test-deps.sh) as a real client, started by
 * hand as root: root, state, gRPC and ttrpc sockets and log all under one temporary directory,
 * so it never touches the host's /var/lib/containerd or /run/containerd. Only what pulling and
 * unpacking need is loaded: no CRI, no runtimes or tasks, no opt (it would create
 * /opt/containerd), and of the snapshotters only `native`, which works on any filesystem
 * (overlayfs needs mount rights a CI container may lack). It boots in about 20 ms.
 *
 * Pulls go through `ctr images pull --hosts-dir`: ctr reads hosts.toml (containerd's
 * docs/hosts.md) only when given that flag. Layers are unpacked, so pull images whose layers
 * are real tar.gz archives (oci-layout.ts's tarImage), not random bytes.
 */

const CTR_TIMEOUT_MS = 120_000;
const NAMESPACE = 'outpost-test';
const SNAPSHOTTER = 'native';
const ANSI_COLOUR = /\x1b\[[0-9;]*m/g;

const DISABLED_PLUGINS = [
  'io.containerd.grpc.v1.cri',
  'io.containerd.internal.v1.opt',
  'io.containerd.internal.v1.restart',
  'io.containerd.runtime.v1.linux',
  'io.containerd.runtime.v2.task',
  'io.containerd.monitor.v1.cgroups',
  'io.containerd.service.v1.tasks-service',
  'io.containerd.grpc.v1.tasks',
  'io.containerd.snapshotter.v1.aufs',
  'io.containerd.snapshotter.v1.btrfs',
  'io.containerd.snapshotter.v1.devmapper',
  'io.containerd.snapshotter.v1.overlayfs',
  'io.containerd.snapshotter.v1.zfs',
];

export interface CtrResult {
  /** ctr's exit status (or -1 when it was killed, e.g. by the timeout). */
  code: number;
  stdout: string;
  stderr: string;
}

export interface PullOptions {
  /** The directory holding `<namespace>/hosts.toml` files (writeHostsToml). */
  hostsDir: string;
  /** ctr's --plain-http: plain HTTP for a host whose URL does not say (hosts.toml URLs do say). */
  plainHttp?: boolean;
  /** `user:password` for registries that challenge (ctr --user). */
  user?: string;
  /** e.g. linux/arm64; the default is the host's platform. */
  platform?: string;
  allPlatforms?: boolean;
}

export interface ContentEntry {
  digest: string;
  /** containerd's labels, e.g. containerd.io/distribution.source.docker.io=library/app. */
  labels: Record<string, string>;
}

export interface ImageEntry {
  ref: string;
  mediaType: string;
  digest: string;
}

export interface Containerd {
  /** The gRPC socket, for `ctr --address`. */
  address: string;
  namespace: string;
  /** The instance's temporary directory (config.toml, root/, state/, containerd.log). */
  dir: string;
  logFile: string;
  /** Any ctr command against this containerd and namespace: `ctr('images', 'ls')`. */
  ctr(...args: string[]): Promise<CtrResult>;
  /** `ctr images pull --hosts-dir <dir> <ref>`; resolves with ctr's result, failed or not. */
  pull(ref: string, options: PullOptions): Promise<CtrResult>;
  /** The images the namespace holds (`ctr images ls`). */
  images(): Promise<ImageEntry[]>;
  /** Every blob in the content store (`ctr content ls`). */
  content(): Promise<ContentEntry[]>;
  /** One blob's bytes from the content store (`ctr content get`). */
  readBlob(digest: string): Promise<Buffer>;
  /** SIGTERM (SIGKILL after 5 s), then removes the temporary directory. Idempotent. */
  stop(): Promise<void>;
}

export async function startContainerd(): Promise<Containerd> {
  const dir = await mkdtemp(join(tmpdir(), 'outpost-e2e-containerd-'));
  const address = join(dir, 'containerd.sock');
  const logFile = join(dir, 'containerd.log');
  const config = [
    'version = 2',
    `root = ${JSON.stringify(join(dir, 'root'))}`,
    `state = ${JSON.stringify(join(dir, 'state'))}`,
    `disabled_plugins = ${JSON.stringify(DISABLED_PLUGINS)}`,
    '[grpc]',
    `  address = ${JSON.stringify(address)}`,
    '[ttrpc]',
    `  address = ${JSON.stringify(`${address}.ttrpc`)}`,
    '',
  ].join('\n');
  await writeFile(join(dir, 'config.toml'), config);

  const daemon = await startDaemon({
    label: 'containerd',
    command: 'containerd',
    args: ['--config', join(dir, 'config.toml')],
    logFile,
    ready: async () => existsSync(address) && (await runCtr(address, ['version'])).code === 0,
  });

  const ctr = (...args: string[]) => runCtr(address, ['--namespace', NAMESPACE, ...args]);
  const ok = async (...args: string[]) => {
    const result = await ctr(...args);
    if (result.code !== 0) throw new Error(`ctr ${args.join(' ')} failed (${result.code}):\n${result.stderr}`);
    return result.stdout;
  };
  let stopped = false;

  return {
    address,
    namespace: NAMESPACE,
    dir,
    logFile,
    ctr,
    pull(ref, options) {
      const args = ['images', 'pull', '--snapshotter', SNAPSHOTTER, '--hosts-dir', options.hostsDir];
      if (options.plainHttp) args.push('--plain-http');
      if (options.user) args.push('--user', options.user);
      if (options.platform) args.push('--platform', options.platform);
      if (options.allPlatforms) args.push('--all-platforms');
      return ctr(...args, ref);
    },
    async images() {
      // REF TYPE DIGEST SIZE PLATFORMS LABELS, the size in two columns ("1.2 KiB").
      return rows(await ok('images', 'ls')).map((cols) => ({ ref: cols[0]!, mediaType: cols[1]!, digest: cols[2]! }));
    },
    async content() {
      // DIGEST SIZE AGE LABELS; the size is rounded ("4.268kB"): readBlob(digest).length is exact.
      return rows(await ok('content', 'ls')).map((cols) => ({
        digest: cols[0]!,
        labels: Object.fromEntries(
          (cols.at(-1)!.includes('=') ? cols.at(-1)!.split(',') : []).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
        ),
      }));
    },
    async readBlob(digest) {
      return ctrBytes(address, ['--namespace', NAMESPACE, 'content', 'get', digest]);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await daemon.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A `server` that refuses at once (the discard port on loopback). containerd falls back to the
 * namespace's server when every host fails (a 404 included), so a pull the test expects to fail
 * would otherwise go on to registry-1.docker.io, which a machine with internet answers.
 */
export const UNREACHABLE_SERVER = 'http://127.0.0.1:9';

export interface HostOptions {
  /** What containerd may ask this host for; default pull and resolve (a mirror). */
  capabilities?: Array<'pull' | 'resolve' | 'push'>;
  /**
   * The namespace's own registry, tried after the host: default https://registry-1.docker.io
   * for docker.io and https://<namespace> otherwise. See UNREACHABLE_SERVER.
   */
  server?: string;
  skipVerify?: boolean;
  /** The host URL's path is the API root itself (no /v2 appended). */
  overridePath?: boolean;
}

/**
 * Writes `<hostsDir>/<namespace>/hosts.toml` sending the pulls of `namespace` (a registry host
 * such as docker.io, as it appears in references) to `hostUrl` first, e.g.
 *   server = "https://registry-1.docker.io"
 *   [host."http://127.0.0.1:5000"]
 *     capabilities = ["pull", "resolve"]
 * containerd then adds `?ns=<namespace>` to every request it sends to that host (to any host
 * that is not the reference's own registry). Returns the file's path. (containerd 1.6 cannot
 * parse a hosts.toml without a [host] table, and silently falls back to the defaults.)
 */
export async function writeHostsToml(hostsDir: string, namespace: string, hostUrl: string, options: HostOptions = {}): Promise<string> {
  const server = options.server ?? (namespace === 'docker.io' ? 'https://registry-1.docker.io' : `https://${namespace}`);
  const lines = [`server = ${JSON.stringify(server)}`, '', `[host.${JSON.stringify(hostUrl)}]`];
  lines.push(`  capabilities = ${JSON.stringify(options.capabilities ?? ['pull', 'resolve'])}`);
  if (options.skipVerify) lines.push('  skip_verify = true');
  if (options.overridePath) lines.push('  override_path = true');
  const dir = join(hostsDir, namespace);
  await mkdir(dir, { recursive: true });
  const file = join(dir, 'hosts.toml');
  await writeFile(file, `${lines.join('\n')}\n`);
  return file;
}

/** Rows of a ctr table, without the header, split on runs of spaces. */
function rows(table: string): string[][] {
  return table
    .split('\n')
    .slice(1)
    .filter((line) => line.trim() !== '')
    .map((line) => line.trim().split(/\s+/));
}

function runCtr(address: string, args: string[]): Promise<CtrResult> {
  const argv = ['--address', address, ...args];
  return new Promise((resolveRun) => {
    execFile('ctr', argv, { timeout: CTR_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      // The progress table is coloured even without a terminal.
      resolveRun({ code, stdout: stdout.replace(ANSI_COLOUR, ''), stderr });
    });
  });
}

function ctrBytes(address: string, args: string[]): Promise<Buffer> {
  const argv = ['--address', address, ...args];
  return new Promise((resolveRun, reject) => {
    execFile('ctr', argv, { timeout: CTR_TIMEOUT_MS, maxBuffer: 256 * 1024 * 1024, encoding: 'buffer' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`ctr ${argv.join(' ')} failed (${err.code ?? err.signal}):\n${stderr.toString()}`));
      else resolveRun(stdout);
    });
  });
}
