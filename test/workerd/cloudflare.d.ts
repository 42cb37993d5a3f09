/**
 * The little of workerd's module API that the workerd tests use (the Workers pool provides the
 * modules at run time; @cloudflare/workers-types would declare all of them).
 */
declare module 'cloudflare:workers' {
  /** The Worker's bindings: wrangler.toml [vars] and the project's Miniflare bindings. */
  export const env: Record<string, unknown>;
  /** The main module's entrypoints, called through workerd as requests from outside are. */
  export const exports: { default: { fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> } };
}
