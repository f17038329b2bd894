/**
 * The project root, found by walking up to package.json, so the same code finds
 * `migrations/` and `gen/descriptors.binpb` when run from source (tsx) and from
 * the compiled `dist/` tree.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

let cached: string | undefined;

export function projectRoot(): string {
  if (cached) return cached;
  let dir = __dirname;
  for (let depth = 0; depth < 8; depth++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'migrations'))) return (cached = dir);
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new Error(`project root (package.json + migrations/) not found above ${__dirname}`);
}

export function projectPath(...segments: string[]): string {
  return join(projectRoot(), ...segments);
}
