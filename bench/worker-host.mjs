// Runs a bundled Worker in one workerd process through Miniflare (no wrangler dev proxy in
// front), so the benchmark measures the Worker and nothing else.
//   node bench/worker-host.mjs <bundle.js> <port> '<bindings as JSON>' [<profile.cpuprofile>]
// With a profile path, the Worker's isolate is CPU-profiled through workerd's inspector (the
// DevTools protocol) from ready to SIGUSR2, and the profile written there (node needs
// --experimental-websocket on Node 20).
import { Miniflare } from 'miniflare';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname } from 'node:path';

const [bundle, port, bindings, profilePath] = process.argv.slice(2);
const inspectorPort = profilePath ? await freePort() : undefined;
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
const profiler = profilePath ? await startProfiler(inspectorPort) : undefined;
console.log(`worker ready on ${url}`);
process.on('SIGTERM', () => void mf.dispose().then(() => process.exit(0)));
// Miniflare stops workerd itself on SIGTERM, so the profile is asked for with another signal.
process.on('SIGUSR2', async () => {
  if (profiler) writeFileSync(profilePath, JSON.stringify(await profiler.stop()));
});

async function startProfiler(port) {
  const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  // The Worker itself, not Miniflare's own entry and helper workers.
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
  const call = (method, params = {}) =>
    new Promise((resolve) => {
      pending.set(++id, resolve);
      socket.send(JSON.stringify({ id, method, params }));
    });
  await call('Profiler.enable');
  await call('Profiler.setSamplingInterval', { interval: 500 });
  await call('Profiler.start');
  return { stop: async () => (await call('Profiler.stop')).profile };
}

function freePort() {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}
