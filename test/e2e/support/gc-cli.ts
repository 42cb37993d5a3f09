import { outpostCli, type CliRun } from './cli.js';

/**
 * `outpost gc` as an operator runs it (support/cli.ts's outpostCli), with the OUTPOST_*
 * settings of the store in `env`. `killAfterMs` SIGKILLs the run that long after its start, as a
 * crash half-way through a collection would; its status is then null.
 */

const GC_TIMEOUT_MS = 60_000;

export function gcCli(args: string[], env: Record<string, string>, options: { killAfterMs?: number } = {}): Promise<CliRun> {
  return outpostCli(['gc', ...args], { env, timeoutMs: GC_TIMEOUT_MS, killAfterMs: options.killAfterMs });
}

/** The objects a run reports deleted (its totals line). */
export function deletedCount(stdout: string): number {
  return Number(/deleted (\d+) objects/.exec(stdout)?.[1] ?? 0);
}
