import type { TestProject } from 'vitest/node';
import { startDynalite } from './dynalite.js';

/**
 * vitest globalSetup: one DynamoDB-compatible server (dynalite, in memory) on loopback for a
 * whole project run, reachable from Outpost processes and workerd alike. In a test:
 *   const { endpoint } = inject('dynamodb');
 * and create a table of its own per test file (test/support/dynalite.ts `createTable`).
 */
declare module 'vitest' {
  export interface ProvidedContext {
    dynamodb: { endpoint: string };
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const server = await startDynalite();
  project.provide('dynamodb', { endpoint: server.endpoint });
  return () => server.stop();
}
