import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';
import { cliNodeFlags } from '../../support/node-flags.js';
import { cloudEnv, type CloudStore } from './cloud-store.js';

/**
 * Outpost as a real child process: `node dist/entry/cli.js serve` (built by global-setup.ts) on
 * 127.0.0.1, port 0 so the OS picks a free one, which we read back from the start-up log; on
 * the local store (startOutpost) or on S3 + DynamoDB (startOutpostCloud). `launch` is the
 * bookkeeping shared with worker.ts, which runs `wrangler dev` the same way.
 *
 * No process outlives the tests: callers stop() in afterAll, every child still running when
 * the worker exits is killed, and each pid is recorded for global-setup's teardown, which
 * kills whatever a crashed worker left behind.
 */

/** The `outpost` command as npm installs it (package.json "bin"). */
export const CLI = resolve(fileURLToPath(import.meta.url), '../../../../dist/entry/cli.js');

const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5_000;

export interface OutpostProcess {
  /** Base URL, e.g. http://127.0.0.1:41234 (no trailing slash). */
  url: string;
  /** host:port, as skopeo's docker:// references want it. */
  host: string;
  port: number;
  pid: number;
  /** Everything the process wrote to stdout and stderr so far. */
  logs(): string;
  /** What it wrote to stderr alone. */
  stderr(): string;
  /** SIGTERM, then SIGKILL if it has not exited in time. Idempotent. */
  stop(): Promise<void>;
  /** Sends one signal (to the group, for a group); a process already gone is not an error. */
  signal(sig: NodeJS.Signals): void;
  /** Resolves when the process has exited, with its status or the signal that ended it. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface LaunchOptions {
  /** What the process is, for error messages: "outpost", "wrangler dev". */
  label: string;
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  cwd?: string;
  /**
   * Run the child as the leader of a process group of its own, and signal the whole group:
   * for tools that spawn children of their own (wrangler dev runs esbuild and workerd).
   */
  group?: boolean;
  /** The listening port, once the output shows it (undefined until then). */
  port: (output: string) => number | undefined;
  /** How long start-up (port, then GET /v2/ answering 200) may take. */
  startTimeoutMs?: number;
  /** Called once the process has exited (clean-up of temporary files). */
  onExit?: () => void;
  /**
   * The Authorization header of the start-up check's GET /v2/: with `auth:` configured the base
   * route answers 200 only to a caller who signed in.
   */
  authorization?: string;
}

const running = new Set<() => void>();
process.once('exit', () => {
  for (const kill of running) kill();
});

/** The environment minus OUTPOST_*: the entry refuses unknown variables, so pass only the ones we mean. */
export function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('OUTPOST_')) env[key] = value;
  return env;
}

/** What a start may add: the credentials of the start-up check (`auth:` configured). */
export interface StartOptions {
  authorization?: string;
}

/** Outpost on the local store in `dataDir`; `env` adds settings (OUTPOST_CONFIG, secrets it names). */
export function startOutpost(dataDir: string, env: Record<string, string> = {}, options: StartOptions = {}): Promise<OutpostProcess> {
  return startNode({ OUTPOST_STORE: 'local', OUTPOST_DATA_DIR: dataDir, ...env }, options);
}

/** The Node server on the cloud store: blobs in S3, the index in DynamoDB. */
export function startOutpostCloud(store: CloudStore, env: Record<string, string> = {}): Promise<OutpostProcess> {
  return startNode({ ...cloudEnv(store), ...env });
}

function startNode(outpost: Record<string, string>, options: StartOptions = {}): Promise<OutpostProcess> {
  return launch({
    ...options,
    label: 'outpost',
    command: process.execPath,
    args: [...cliNodeFlags(), CLI, 'serve'],
    env: { ...baseEnv(), ...outpost, OUTPOST_HOST: '127.0.0.1', OUTPOST_PORT: '0' },
    // The start-up line "serving ... on http://127.0.0.1:<port>/v2/".
    port: (output) => {
      const m = /on http:\/\/127\.0\.0\.1:(\d+)\/v2\//.exec(output);
      return m ? Number(m[1]) : undefined;
    },
  });
}

/**
 * Spawns a server, records it for the teardown (a pid file; "group:<pgid>" for a process
 * group), and resolves once it reports its port and GET /v2/ answers 200.
 */
export async function launch(options: LaunchOptions): Promise<OutpostProcess> {
  const { label } = options;
  const startTimeoutMs = options.startTimeoutMs ?? START_TIMEOUT_MS;
  const child = spawn(options.command, options.args, {
    env: options.env,
    cwd: options.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: options.group ?? false,
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start ${label} (${options.command})`);
  const signal = (sig: NodeJS.Signals) => {
    try {
      // A negative pid signals the whole group: the leader and every child it started.
      process.kill(options.group ? -pid : pid, sig);
    } catch {
      // Already gone.
    }
  };
  const killNow = () => signal('SIGKILL');
  running.add(killNow);
  const pidFile = join(inject('e2ePidDir'), String(pid));
  writeFileSync(pidFile, options.group ? `group:${pid}` : String(pid));

  let output = '';
  let errors = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (output += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    output += s;
    errors += s;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) =>
    child.once('exit', (code, sig) => {
      // The leader is gone; children of a group that outlived it go now.
      if (options.group) killNow();
      running.delete(killNow);
      rmSync(pidFile, { force: true });
      options.onExit?.();
      done({ code, signal: sig });
    }),
  );

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      signal('SIGTERM');
      const timer = setTimeout(killNow, STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
  };

  try {
    const port = await listeningPort(child, label, options.port, () => output, exited, startTimeoutMs);
    const url = `http://127.0.0.1:${port}`;
    await untilAnswers(`${url}/v2/`, () => output, startTimeoutMs, options.authorization);
    return { url, host: `127.0.0.1:${port}`, port, pid, logs: () => output, stderr: () => errors, stop, signal, exited };
  } catch (err) {
    await stop();
    throw err;
  }
}

function listeningPort(
  child: ChildProcess,
  label: string,
  parse: (output: string) => number | undefined,
  output: () => string,
  exited: Promise<unknown>,
  timeoutMs: number,
): Promise<number> {
  return new Promise<number>((resolvePort, reject) => {
    const timer = setTimeout(() => fail(`did not report its port within ${timeoutMs} ms`), timeoutMs);
    const onData = () => {
      const port = parse(output());
      if (port !== undefined) done(() => resolvePort(port));
    };
    const fail = (why: string) => done(() => reject(new Error(`${label} (pid ${child.pid}) ${why}; its output:\n${output()}`)));
    const done = (settle: () => void) => {
      clearTimeout(timer);
      child.stdout!.off('data', onData);
      child.stderr!.off('data', onData);
      settle();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void exited.then(() => fail(`exited during start-up (${child.exitCode ?? child.signalCode})`));
  });
}

async function untilAnswers(url: string, output: () => string, timeoutMs: number, authorization?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(url, authorization ? { headers: { Authorization: authorization } } : {});
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // Not accepting connections yet.
    }
    if (Date.now() > deadline) throw new Error(`GET ${url} did not answer 200 within ${timeoutMs} ms; output:\n${output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
