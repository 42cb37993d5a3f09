import { exports } from 'cloudflare:workers';
import { expect, it, vi } from 'vitest';
import type { UpkeepReport } from '../../src/entry/upkeep.js';

/**
 * The Cron Trigger's way in: a scheduled event for the default export of the Worker that
 * wrangler.toml names, with its bindings and workerd's ExecutionContext, over the project's
 * store (shared with the other files). The default grace of a day keeps all they push;
 * gc.test.ts checks what a run deletes.
 */

it('runs one garbage collection and the leftovers for a scheduled event, and logs both with the cron', async () => {
  const lines: string[] = [];
  // The Worker runs in the tests' isolate: its log writes through this console.
  const spy = vi.spyOn(console, 'log').mockImplementation((line: unknown) => void lines.push(String(line)));
  let report: UpkeepReport;
  try {
    report = (await exports.default.scheduled({ cron: '*/30 * * * *' })) as unknown as UpkeepReport;
  } finally {
    spy.mockRestore();
  }
  expect(report.gc).toMatchObject({ dryRun: false, deleted: 0, failed: 0 });
  expect(report.leftovers.uploads).toBeDefined();
  const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  expect(logged.find((l) => l.msg === 'garbage collection'), JSON.stringify(logged)).toMatchObject({
    level: 'info',
    cron: '*/30 * * * *',
    examined: report.gc.examined,
    deleted: 0,
    failed: 0,
  });
  expect(logged.find((l) => l.msg === 'reclaimed leftovers')).toMatchObject({ level: 'info', cron: '*/30 * * * *' });
});
