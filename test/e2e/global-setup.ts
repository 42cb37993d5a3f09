import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';

/**
 * Prerequisites of the e2e project, once per run: the real peers (scripts/install-test-deps.sh,
 * the same script CI and people use) and a fresh build in dist/, which the tests start as
 * separate processes. Teardown kills any Outpost or wrangler process a test file failed to stop.
 */

declare module 'vitest' {
  export interface ProvidedContext {
    /** Directory where test/e2e/support/server.ts records the pid (or process group) of every process it starts. */
    e2ePidDir: string;
  }
}

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');

export default function setup(project: TestProject): () => void {
  run('scripts/install-test-deps.sh', [], 'installing the e2e test dependencies failed (see the output above)');
  run('npm', ['run', 'build'], '`npm run build` failed: the e2e tests run dist/entry/cli.js');

  const pidDir = mkdtempSync(join(tmpdir(), 'outpost-e2e-pids-'));
  project.provide('e2ePidDir', pidDir);
  return () => killLeftovers(pidDir);
}

function run(command: string, args: string[], failure: string): void {
  console.log(`e2e setup: ${[command, ...args].join(' ')}`);
  const result = spawnSync(command, args, { cwd: ROOT, stdio: 'inherit' });
  if (result.error) throw new Error(`${failure}: ${result.error.message}`);
  if (result.status !== 0) throw new Error(`${failure} (exit status ${result.status ?? result.signal})`);
}

/** Safety net behind each file's own afterAll: no Outpost or wrangler process outlives the run. */
function killLeftovers(pidDir: string): void {
  for (const file of readdirSync(pidDir)) {
    const recorded = readFileSync(join(pidDir, file), 'utf8');
    // "group:<pgid>": wrangler dev and the esbuild and workerd processes it started.
    const group = /^group:(\d+)$/.exec(recorded);
    const pid = Number(group ? group[1] : recorded);
    if (!(group ? isWranglerGroup(pid) : isOutpost(pid))) continue;
    try {
      process.kill(group ? -pid : pid, 'SIGKILL');
      console.warn(`e2e teardown: killed leftover ${group ? 'wrangler process group' : 'Outpost process'} ${pid}`);
    } catch {
      // Exited between the check and the kill.
    }
  }
  rmSync(pidDir, { recursive: true, force: true });
}

/** Guards against pid reuse: only a process still running Outpost's entry (dist/entry/cli.js) is ours to kill. */
function isOutpost(pid: number): boolean {
  return /dist\/entry\/(cli|node)\.js/.test(commandLine(pid));
}

/** The same guard for a process group: some member still runs wrangler or workerd. */
function isWranglerGroup(pgid: number): boolean {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // Field 5 of /proc/<pid>/stat is the process group; the command name before it may hold spaces.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) === pgid && /wrangler|workerd/.test(commandLine(Number(entry)))) return true;
    } catch {
      // Exited while we looked.
    }
  }
  return false;
}

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}
