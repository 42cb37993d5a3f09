import { spawn } from 'node:child_process';
import { expect } from 'vitest';
import { baseEnv, CLI } from './server.js';

/**
 * One `outpost` command run to its end as an operator runs it: the built CLI
 * (dist/entry/cli.js) as a process of its own, with the OUTPOST_* settings in `env` and `input`
 * piped to its stdin (not a terminal: `hash-password` reads the first line without a prompt;
 * without `input` stdin is /dev/null). `killAfterMs` SIGKILLs the run that long after its
 * start, as a crash half-way through would; its status is then null.
 */

const CLI_TIMEOUT_MS = 30_000;

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: Record<string, string>;
  input?: string;
  /** How long the run may take before it is killed and the call rejects. */
  timeoutMs?: number;
  killAfterMs?: number;
}

export function outpostCli(args: string[], options: CliOptions = {}): Promise<CliRun> {
  const timeoutMs = options.timeoutMs ?? CLI_TIMEOUT_MS;
  return new Promise((done, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...baseEnv(), ...options.env }, stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const kill = options.killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), options.killAfterMs);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`outpost ${args.join(' ')} did not exit within ${timeoutMs} ms; output:\n${stdout}${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('exit', (status) => {
      clearTimeout(timer);
      if (kill) clearTimeout(kill);
      done({ status, stdout, stderr });
    });
    child.stdin?.end(options.input);
  });
}

/** `outpost hash-password`, the password piped on stdin: the hash, which never holds the password. */
export async function hashPassword(password: string): Promise<string> {
  const hashed = await outpostCli(['hash-password'], { input: `${password}\n` });
  expect(hashed.status, hashed.stderr).toBe(0);
  const hash = hashed.stdout.trim();
  expect(hash).toMatch(/^pbkdf2-sha256\$100000\$/);
  expect(hashed.stdout + hashed.stderr).not.toContain(password);
  return hash;
}

/** `outpost token-key [args]`: a PKCS#8 PEM private key. */
export async function newTokenKey(...args: string[]): Promise<string> {
  const key = await outpostCli(['token-key', ...args]);
  expect(key.status, key.stderr).toBe(0);
  expect(key.stdout).toMatch(/^-----BEGIN PRIVATE KEY-----\n[\s\S]+\n-----END PRIVATE KEY-----\n$/);
  return key.stdout;
}
