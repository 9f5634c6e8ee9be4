// The part of madge's JS API (madge 8, lib/api.js) that test/unit/imports.test.ts uses; madge ships no types.
declare module 'madge' {
  interface MadgeConfig {
    baseDir?: string;
    fileExtensions?: string[];
    tsConfig?: string | object;
    excludeRegExp?: Array<string | RegExp>;
    includeNpm?: boolean;
    /** Per-syntax options for precinct's detectives (detective-typescript for `ts`). */
    detectiveOptions?: Record<string, Record<string, unknown>>;
  }
  interface MadgeResult {
    /** Module → the modules it imports, as paths relative to baseDir. */
    obj(): Record<string, string[]>;
    circular(): string[][];
    /** Imports that could not be resolved to a file. */
    warnings(): { skipped: string[] };
  }
  function madge(path: string | string[], config?: MadgeConfig): Promise<MadgeResult>;
  export default madge;
}
