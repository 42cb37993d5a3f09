import { spawn } from 'node:child_process';
import { baseEnv, CLI } from './server.js';

/**
 * One `outpost` command run to its end as an operator runs it: the built CLI
 * (dist/entry/cli.js) as a process of its own, with the OUTPOST_* settings in `env` and `input`
 * piped to its stdin (not a terminal: `hash-password` reads the first line without a prompt).
 * (operations.test.ts's run() and gc-cli.ts's gcCli() could be this too.)
 */

const CLI_TIMEOUT_MS = 30_000;

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function outpostCli(args: string[], options: { env?: Record<string, string>; input?: string } = {}): Promise<CliRun> {
  return new Promise((done, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...baseEnv(), ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`outpost ${args.join(' ')} did not exit within ${CLI_TIMEOUT_MS} ms; output:\n${stdout}${stderr}`));
    }, CLI_TIMEOUT_MS);
    child.on('error', reject);
    child.on('exit', (status) => {
      clearTimeout(timer);
      done({ status, stdout, stderr });
    });
    child.stdin.end(options.input ?? '');
  });
}
