/**
 * The one Vite module API the workerd tests use: `import.meta.glob`, which Vite expands at
 * transform time (vite/client declares it, but the project's tsconfig loads only Node's types).
 */
interface ImportMeta {
  glob<T = unknown>(pattern: string | string[], options: { eager: true; query?: string; import?: string }): Record<string, T>;
}
