import { spawn } from 'node:child_process';
import { baseEnv, CLI } from './server.js';

/**
 * `outpost gc` as an operator runs it: the built CLI (dist/entry/cli.js) with the OUTPOST_*
 * settings of the store in `env`. `killAfterMs` SIGKILLs the run that long after its start, as a
 * crash half-way through a collection would; its status is then null.
 */

const GC_TIMEOUT_MS = 60_000;

export interface GcCliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function gcCli(args: string[], env: Record<string, string>, options: { killAfterMs?: number } = {}): Promise<GcCliRun> {
  return new Promise((done, reject) => {
    const child = spawn(process.execPath, [CLI, 'gc', ...args], { env: { ...baseEnv(), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const kill = options.killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), options.killAfterMs);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`outpost gc ${args.join(' ')} did not exit within ${GC_TIMEOUT_MS} ms; output:\n${stdout}${stderr}`));
    }, GC_TIMEOUT_MS);
    child.on('error', reject);
    child.on('exit', (status) => {
      clearTimeout(timer);
      if (kill) clearTimeout(kill);
      done({ status, stdout, stderr });
    });
  });
}

/** The objects a run reports deleted (its totals line). */
export function deletedCount(stdout: string): number {
  return Number(/deleted (\d+) objects/.exec(stdout)?.[1] ?? 0);
}
