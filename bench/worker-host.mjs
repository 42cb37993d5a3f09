// Runs a bundled Worker in one workerd process through Miniflare (no wrangler dev proxy in
// front), so the benchmark measures the Worker and nothing else.
//   node --experimental-websocket bench/worker-host.mjs <bundle.js> <port> '<bindings as JSON>' <report.json> [<profile.cpuprofile>]
// Through workerd's inspector (the DevTools protocol; Node 20 needs --experimental-websocket)
// the host watches the Worker's isolate: every 50 ms its heap and the backing stores of its
// ArrayBuffers (Runtime.getHeapUsage), what a Workers isolate's 128 MB limit is about, unlike
// the process's RSS, which also holds workerd's own buffers. On SIGUSR1 it writes the peak since
// the last one to <report.json>; on SIGUSR2 the same, and with a profile path a CPU profile taken
// from ready until then.
import { Miniflare } from 'miniflare';
import { renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname } from 'node:path';

const [bundle, port, bindings, reportPath, profilePath] = process.argv.slice(2);
const inspectorPort = await freePort();
const mf = new Miniflare({
  scriptPath: bundle,
  modules: true,
  modulesRoot: dirname(bundle),
  compatibilityDate: '2026-04-20',
  compatibilityFlags: ['nodejs_compat'],
  bindings: JSON.parse(bindings),
  host: '127.0.0.1',
  port: Number(port),
  inspectorPort,
});
const url = await mf.ready;
const inspector = await connect(inspectorPort);
if (profilePath) {
  await inspector.call('Profiler.enable');
  await inspector.call('Profiler.setSamplingInterval', { interval: 500 });
  await inspector.call('Profiler.start');
}
let peak = 0;
const watch = setInterval(async () => {
  const usage = await inspector.call('Runtime.getHeapUsage');
  if (usage) peak = Math.max(peak, usage.usedSize + (usage.backingStorageSize ?? 0));
}, 50);
console.log(`worker ready on ${url}`);
process.on('SIGTERM', () => void mf.dispose().then(() => process.exit(0)));
// The peak since the last SIGUSR1 (or since ready), and a fresh start for the next.
process.on('SIGUSR1', () => {
  report();
  peak = 0;
});
// Miniflare stops workerd itself on SIGTERM, so the report is asked for with another signal.
process.on('SIGUSR2', async () => {
  clearInterval(watch);
  if (profilePath) writeFileSync(profilePath, JSON.stringify((await inspector.call('Profiler.stop')).profile));
  report();
});

/** The peak, written whole (a reader polls for the file). */
function report() {
  writeFileSync(`${reportPath}.tmp`, JSON.stringify({ peakIsolateBytes: peak }));
  renameSync(`${reportPath}.tmp`, reportPath);
}

/** The DevTools session of the Worker itself, not of Miniflare's own entry and helper workers. */
async function connect(port) {
  const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  const socket = new WebSocket(targets.find((t) => t.id.startsWith('core:user:')).webSocketDebuggerUrl);
  await new Promise((resolve, reject) => ((socket.onopen = resolve), (socket.onerror = reject)));
  let id = 0;
  const pending = new Map();
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    // workerd echoes each command's method beside its result.
    pending.get(message.id)?.(message.result);
    pending.delete(message.id);
  };
  return {
    call: (method, params = {}) =>
      new Promise((resolve) => {
        pending.set(++id, resolve);
        socket.send(JSON.stringify({ id, method, params }));
      }),
  };
}

function freePort() {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}
