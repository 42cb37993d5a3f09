import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * A real S3-compatible server on loopback: a throw-away one-node Ceph cluster (memstore OSD)
 * with a RADOS Gateway, made and torn down by scripts/ceph-s3.sh. The gateway checks SigV4
 * signatures (headers and presigned URLs) against the one user it is given, so a wrong secret
 * gets 403. Startup takes a few seconds; the first run on a fresh machine also installs the
 * Debian packages (needs root), which takes about a minute.
 *
 * No daemon outlives the test run: stop() kills them, an exit handler kills them if stop() was
 * never called, and the script's watchdog kills them within a second or so of this process
 * dying by a signal (it watches this pid).
 */

export interface S3ServerInfo {
  /** `http://127.0.0.1:PORT`; use path-style addressing (forcePathStyle: true). */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
}

export interface S3Server extends S3ServerInfo {
  /** The daemons' pids (ceph-mon, ceph-osd, radosgw). */
  pids: number[];
  /** The cluster's directory (ceph.conf, logs in log/); removed by stop(). */
  dir: string;
  stop(): Promise<void>;
}

export interface StartS3Options {
  /** Size of the in-memory OSD in bytes (CEPH_MEMSTORE_BYTES; the script's default is 3 GiB). */
  memstoreBytes?: number;
  /** Seconds to wait for the gateway to answer (CEPH_S3_TIMEOUT; default 120). */
  timeoutSeconds?: number;
}

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const SCRIPT = join(ROOT, 'scripts/ceph-s3.sh');

let installed: Promise<void> | undefined;

/** Installs the Ceph packages if missing (once per process). */
export function installS3Server(): Promise<void> {
  installed ??= run(['install'], {}).then(
    () => undefined,
    (error: unknown) => {
      installed = undefined;
      throw error;
    },
  );
  return installed;
}

export async function startS3(options: StartS3Options = {}): Promise<S3Server> {
  await installS3Server();
  const dir = mkdtempSync(join(tmpdir(), 'outpost-s3-'));
  const env: Record<string, string> = { CEPH_S3_OWNER_PID: String(process.pid) };
  if (options.memstoreBytes !== undefined) env.CEPH_MEMSTORE_BYTES = String(options.memstoreBytes);
  if (options.timeoutSeconds !== undefined) env.CEPH_S3_TIMEOUT = String(options.timeoutSeconds);

  let stdout: string;
  try {
    stdout = await run(['start', dir], env);
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  const lastLine = stdout.trim().split('\n').pop() ?? '';
  const info = JSON.parse(lastLine) as S3ServerInfo & { pids: number[] };

  let stopped = false;
  const onExit = (): void => killNow(dir, info.pids);
  process.once('exit', onExit);

  return {
    endpoint: info.endpoint,
    accessKeyId: info.accessKeyId,
    secretAccessKey: info.secretAccessKey,
    region: info.region,
    pids: info.pids,
    dir,
    async stop() {
      if (stopped) return;
      stopped = true;
      process.removeListener('exit', onExit);
      await run(['stop', dir], {});
    },
  };
}

function run(args: string[], env: Record<string, string>): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile(
      'bash',
      [SCRIPT, ...args],
      { cwd: ROOT, env: { ...process.env, ...env }, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) {
          reject(new Error(`scripts/ceph-s3.sh ${args.join(' ')} failed: ${error.message}\n${stderr}`));
        } else {
          resolvePromise(stdout);
        }
      },
    );
  });
}

/** Synchronous teardown for process exit: SIGKILL the recorded daemons, then the script's stop. */
function killNow(dir: string, pids: number[]): void {
  for (const pid of pids) {
    if (!isCephDaemon(pid)) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  spawnSync('bash', [SCRIPT, 'stop', dir], { stdio: 'ignore' });
}

/** Guards against pid reuse: only a running ceph-mon, ceph-osd or radosgw is ours to kill. */
function isCephDaemon(pid: number): boolean {
  try {
    return /ceph-mon|ceph-osd|radosgw/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
  } catch {
    return false;
  }
}
