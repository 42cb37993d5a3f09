/**
 * The little of workerd's module API that the workerd tests use (the Workers pool provides the
 * modules at run time; @cloudflare/workers-types would declare all of them).
 */
declare module 'cloudflare:workers' {
  /** The Worker's bindings: wrangler.toml [vars] and the project's Miniflare bindings. */
  export const env: Record<string, unknown>;
  /** The main module's entrypoints, called through workerd as requests and Cron Triggers from outside are. */
  export const exports: {
    default: {
      fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
      /**
       * The default export's scheduled handler, called as a Cron Trigger calls it (with the
       * Worker's env and an ExecutionContext); answers what the handler returns.
       */
      scheduled(controller: { cron: string; scheduledTime?: number }): Promise<unknown>;
    };
  };
}

/** The helpers of @cloudflare/vitest-pool-workers that the workerd tests use. */
declare module 'cloudflare:test' {
  export interface TestExecutionContext {
    waitUntil(promise: Promise<unknown>): void;
    passThroughOnException(): void;
  }
  export interface TestScheduledController {
    readonly cron: string;
    readonly scheduledTime: number;
    noRetry(): void;
  }
  export function createExecutionContext(): TestExecutionContext;
  /** Settles when every promise given to the context's waitUntil has (a rejection rejects). */
  export function waitOnExecutionContext(ctx: TestExecutionContext): Promise<void>;
  export function createScheduledController(options?: { cron?: string; scheduledTime?: Date | number }): TestScheduledController;
}
