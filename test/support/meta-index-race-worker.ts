/**
 * One contender in the multi-process SQLite race (test/contract/meta-index.test.ts), started as
 *   node --import ./test/support/register-ts.mjs test/support/meta-index-race-worker.ts DB ID WORKERS ROUNDS
 * It opens its own SqliteMetaIndex on DB, prints "ready", waits for "go" on stdin so that all
 * contenders start together, then for each round r competes for the same items as the others:
 *   wait until every contender has put barrier/<its id> >= r   (all finished round r - 1)
 *   putIfAbsent race/create-r, compareAndSet race/cas-r from version 1, acquireLease race/lease-r,
 *   add race/counter +1
 *   put barrier/<id> = r + 1
 * and prints what it won, and whom each refused acquireLease named, as one JSON line. The
 * barrier makes every round a real collision (without it one process runs ahead and wins each
 * round unopposed); it uses only plain puts, one writer per item, so a broken conditional
 * write fails the assertions instead of hanging.
 */
import { once } from 'node:events';
import { SqliteMetaIndex } from '../../src/adapters/local/sqlite-meta-index.js';

export interface RaceReport {
  id: string;
  created: number[];
  swapped: number[];
  leases: Array<{ round: number; token: number }>;
  /** The holder each refused acquireLease named. */
  refusals: Array<{ round: number; holder: string; token: number }>;
  totals: number[];
}

const [file, id, workers, rounds] = process.argv.slice(2);
if (!file || !id || !workers || !rounds) throw new Error('usage: meta-index-race-worker.ts DB ID WORKERS ROUNDS');

const index = new SqliteMetaIndex(file);
const report: RaceReport = { id, created: [], swapped: [], leases: [], refusals: [], totals: [] };

await index.put({ pk: 'barrier', sk: id }, 0);
process.stdout.write('ready\n');
process.stdin.setEncoding('utf8');
await once(process.stdin, 'data');

const counter = { pk: 'race', sk: 'counter' };
const deadline = Date.now() + 15_000;
async function barrier(round: number): Promise<void> {
  for (;;) {
    const arrived = await index.list<number>('barrier', { limit: 1000 });
    if (arrived.length === Number(workers) && arrived.every((a) => a.item.value >= round)) return;
    if (Date.now() > deadline) throw new Error(`worker ${id} timed out at the barrier of round ${round}`);
  }
}

for (let round = 0; round < Number(rounds); round++) {
  await barrier(round);
  if (await index.putIfAbsent({ pk: 'race', sk: `create-${round}` }, id)) report.created.push(round);
  if ((await index.compareAndSet({ pk: 'race', sk: `cas-${round}` }, 1, id)) !== undefined) report.swapped.push(round);
  const lease = await index.acquireLease({ pk: 'race', sk: `lease-${round}` }, id, 60_000);
  if (lease.acquired) report.leases.push({ round, token: lease.lease.token });
  else report.refusals.push({ round, holder: lease.holder, token: lease.token });
  report.totals.push(await index.add(counter, 1));
  await index.put({ pk: 'barrier', sk: id }, round + 1);
}

index.close();
process.stdout.write(JSON.stringify(report) + '\n');
process.stdin.destroy();
