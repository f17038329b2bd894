/**
 * Tests that need a program npm does not install (promtool, kubectl, prometheus,
 * PostgreSQL's server binaries): on a developer's machine without it they skip
 * and say why; under CI=true, where `.ci/run` installs them, they fail, so a
 * missing tool never turns a CI run green by skipping what it should prove.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Whether `file` exists and this process may execute it. */
export function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The first executable `command` in the directories of `path` (default $PATH), or undefined. */
export function findOnPath(command: string, path = process.env.PATH ?? ''): string | undefined {
  return path
    .split(delimiter)
    .filter(Boolean)
    .map((dir) => join(dir, command))
    .find(isExecutable);
}

/**
 * In a mocha hook or test: skips it, printing `reason`, or, under CI=true,
 * fails with `reason`. `reason` says what is missing and how to install it.
 */
export function skipOrFailInCi(context: Mocha.Context, reason: string): never {
  if (process.env.CI === 'true') throw new Error(`CI=true and ${reason}`);
  const title = context.currentTest?.parent?.fullTitle() || context.test?.parent?.fullTitle() || context.test?.title || 'tests';
  process.stderr.write(`      skipping "${title}": ${reason} (CI=true makes this fail)\n`);
  context.skip();
  // Mocha's skip() throws; this line only satisfies the `never` type.
  throw new Error(`skipped: ${reason}`);
}

/**
 * In a suite's `before`: the path of `command` on PATH; without it the suite
 * skips (fails under CI=true), naming `install`, e.g. "Debian package `prometheus`".
 */
export function requireTool(context: Mocha.Context, command: string, install: string): string {
  return findOnPath(command) ?? skipOrFailInCi(context, `${command} is not on PATH (install ${install})`);
}
