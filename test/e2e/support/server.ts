import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';

/**
 * Outpost as a real child process: `node dist/entry/node.js` (built by global-setup.ts) on
 * 127.0.0.1, port 0 so the OS picks a free one, which we read back from the start-up log.
 *
 * No process outlives the tests: callers stop() in afterAll, every child still running when
 * the worker exits is killed, and each pid is recorded for global-setup's teardown, which
 * kills whatever a crashed worker left behind.
 */

const ENTRY = resolve(fileURLToPath(import.meta.url), '../../../../dist/entry/node.js');
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
  /** SIGTERM, then SIGKILL if it has not exited in time. Idempotent. */
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export async function startOutpost(dataDir: string): Promise<OutpostProcess> {
  const env: NodeJS.ProcessEnv = {};
  // The entry refuses unknown OUTPOST_* variables; pass only the ones we mean.
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('OUTPOST_')) env[key] = value;
  Object.assign(env, { OUTPOST_STORE: 'local', OUTPOST_HOST: '127.0.0.1', OUTPOST_PORT: '0', OUTPOST_DATA_DIR: dataDir });

  const child = spawn(process.execPath, [ENTRY], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start ${ENTRY}`);
  running.add(child);
  const pidFile = join(inject('e2ePidDir'), String(pid));
  writeFileSync(pidFile, String(pid));

  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (output += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (output += s));
  const exited = new Promise<void>((done) =>
    child.once('exit', () => {
      running.delete(child);
      rmSync(pidFile, { force: true });
      done();
    }),
  );

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
  };

  try {
    const port = await listeningPort(child, () => output, exited);
    const url = `http://127.0.0.1:${port}`;
    await untilAnswers(`${url}/v2/`, () => output);
    return { url, host: `127.0.0.1:${port}`, port, pid, logs: () => output, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Waits for the start-up line "serving ... on http://127.0.0.1:<port>/v2/". */
function listeningPort(child: ChildProcess, output: () => string, exited: Promise<void>): Promise<number> {
  return new Promise<number>((resolvePort, reject) => {
    const timer = setTimeout(() => fail(`did not report its port within ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
    const onData = () => {
      const m = /on http:\/\/127\.0\.0\.1:(\d+)\/v2\//.exec(output());
      if (m) done(() => resolvePort(Number(m[1])));
    };
    const fail = (why: string) => done(() => reject(new Error(`outpost (pid ${child.pid}) ${why}; its output:\n${output()}`)));
    const done = (settle: () => void) => {
      clearTimeout(timer);
      child.stdout!.off('data', onData);
      settle();
    };
    child.stdout!.on('data', onData);
    void exited.then(() => fail(`exited during start-up (${child.exitCode ?? child.signalCode})`));
  });
}

async function untilAnswers(url: string, output: () => string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    try {
      const res = await fetch(url);
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // Not accepting connections yet.
    }
    if (Date.now() > deadline) throw new Error(`GET ${url} did not answer 200 within ${START_TIMEOUT_MS} ms; output:\n${output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
