import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Content, GiB, drain, freePort, median, report, rss, send, start, timed, type Row, type Server } from './harness.js';
import { cliNodeFlags } from '../test/support/node-flags.js';

/**
 * Outpost on its embedded store against Docker Distribution 2.8 (Debian's docker-registry,
 * filesystem driver) on the same machine, same workload, same run: push a blob of BENCH_BYTES
 * (default 1 GiB) with POST + a streamed PUT, pull it back, BENCH_ROUNDS times (default 3;
 * the median round counts). Prints MiB/s, the ratio to Distribution, and each server's peak
 * RSS growth over its idle baseline.
 *
 *   npm run build && npm run bench:local
 */
const SIZE = Number(process.env.BENCH_BYTES ?? GiB);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const ROOT = resolve(import.meta.dirname, '..');

async function push(server: Server, content: Content): Promise<void> {
  const post = await fetch(`${server.url}/v2/bench/blob/blobs/uploads/`, { method: 'POST' });
  if (post.status !== 202) throw new Error(`${server.label} POST: ${post.status} ${await post.text()}`);
  const location = new URL(post.headers.get('location')!, server.url);
  location.searchParams.set('digest', content.digest);
  const put = await send('PUT', location, content);
  if (put.status !== 201) throw new Error(`${server.label} PUT: ${put.status} ${put.body}`);
}

async function pull(server: Server, content: Content): Promise<void> {
  const res = await fetch(`${server.url}/v2/bench/blob/blobs/${content.digest}`);
  const got = await drain(res.body);
  if (res.status !== 200 || got.digest !== content.digest) throw new Error(`${server.label} pull: ${res.status} ${got.digest}`);
}

async function measure(server: Server, rounds: Content[]) {
  const idle = rss(server.pid).now;
  const pushes: number[] = [];
  const pulls: number[] = [];
  for (const content of rounds) {
    pushes.push((await timed(() => push(server, content))).seconds);
    pulls.push((await timed(() => pull(server, content))).seconds);
  }
  return { push: median(pushes), pull: median(pulls), rssGrowth: rss(server.pid).peak - idle };
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'outpost-bench-'));
  const servers: Server[] = [];
  try {
    console.log(`bench: generating ${ROUNDS} x ${SIZE} bytes of content`);
    const rounds = Array.from({ length: ROUNDS }, (_, i) => new Content(SIZE, i + 1));

    const distPort = await freePort();
    const config = join(work, 'distribution.yml');
    writeFileSync(
      config,
      `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${join(work, 'distribution')}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${distPort}\n`,
    );
    const distribution = await start('Distribution 2.8', 'docker-registry', ['serve', config], {}, distPort);
    servers.push(distribution);
    const outpostPort = await freePort();
    const outpost = await start(
      'Outpost (local store)',
      process.execPath,
      [...cliNodeFlags(), join(ROOT, 'dist/entry/cli.js'), 'serve'],
      { OUTPOST_PORT: String(outpostPort), OUTPOST_DATA_DIR: join(work, 'outpost') },
      outpostPort,
    );
    servers.push(outpost);

    const peer = await measure(distribution, rounds);
    const ours = await measure(outpost, rounds);
    const rows: Row[] = [
      { subject: distribution.label, operation: 'push', seconds: peer.push, bytes: SIZE, rssGrowth: peer.rssGrowth },
      { subject: distribution.label, operation: 'pull', seconds: peer.pull, bytes: SIZE },
      { subject: outpost.label, operation: 'push', seconds: ours.push, bytes: SIZE, peer: { label: 'Distribution', seconds: peer.push }, rssGrowth: ours.rssGrowth },
      { subject: outpost.label, operation: 'pull', seconds: ours.pull, bytes: SIZE, peer: { label: 'Distribution', seconds: peer.pull } },
    ];
    console.log(report(`blob of ${(SIZE / GiB).toFixed(2)} GiB, median of ${ROUNDS} rounds (peak RSS growth covers all rounds)`, rows));
  } finally {
    for (const s of servers) s.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
