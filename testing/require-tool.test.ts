import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { expect } from 'chai';
import { findOnPath, requireTool, skipOrFailInCi } from './require-tool';

/** A stand-in for the mocha context: records skip() and throws as mocha's does. */
function fakeContext(): { context: Mocha.Context; skipped: () => boolean } {
  let skipped = false;
  const context = {
    test: { title: 'needs a tool', parent: { fullTitle: () => 'suite that needs a tool' } },
    skip() {
      skipped = true;
      throw new Error('pending');
    },
  } as unknown as Mocha.Context;
  return { context, skipped: () => skipped };
}

/** Runs `fn` with CI set to `value` (undefined: unset), then restores it. */
function withCi<T>(value: string | undefined, fn: () => T): T {
  const saved = process.env.CI;
  if (value === undefined) delete process.env.CI;
  else process.env.CI = value;
  try {
    return fn();
  } finally {
    if (saved === undefined) delete process.env.CI;
    else process.env.CI = saved;
  }
}

describe('test tools: find a program, else skip (fail under CI=true)', () => {
  let dirs: string[] = [];
  beforeEach(() => {
    dirs = [mkdtempSync(join(tmpdir(), 'shieldx-tool-a-')), mkdtempSync(join(tmpdir(), 'shieldx-tool-b-'))];
  });
  afterEach(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  // Only an executable file counts, and the first directory on the path that has one wins.
  it('finds the first executable on the path', () => {
    const [a, b] = dirs as [string, string];
    writeFileSync(join(a, 'tool'), '#!/bin/sh\n', { mode: 0o644 });
    expect(findOnPath('tool', [a, b].join(delimiter))).to.equal(undefined);
    writeFileSync(join(b, 'tool'), '#!/bin/sh\n', { mode: 0o755 });
    expect(findOnPath('tool', ['', a, b].join(delimiter))).to.equal(join(b, 'tool'));
    chmodSync(join(a, 'tool'), 0o755);
    expect(findOnPath('tool', [a, b].join(delimiter))).to.equal(join(a, 'tool'));
    expect(findOnPath('other', [a, b].join(delimiter))).to.equal(undefined);
  });

  // On a developer's machine a missing tool skips the suite; nothing fails.
  it('skips without CI=true', () => {
    const { context, skipped } = fakeContext();
    expect(() => withCi(undefined, () => skipOrFailInCi(context, 'frobtool is not on PATH'))).to.throw('pending');
    expect(skipped()).to.equal(true);
  });

  // Under CI=true the same absence is a failure naming what is missing, not a skip.
  it('fails under CI=true', () => {
    const { context, skipped } = fakeContext();
    expect(() => withCi('true', () => skipOrFailInCi(context, 'frobtool is not on PATH'))).to.throw('CI=true and frobtool is not on PATH');
    expect(skipped()).to.equal(false);
  });

  // requireTool: the path when the program is there; the reason names the program and how to install it.
  it('returns the program, or says how to install it', () => {
    const [a] = dirs as [string];
    writeFileSync(join(a, 'frobtool'), '#!/bin/sh\n', { mode: 0o755 });
    const savedPath = process.env.PATH;
    try {
      process.env.PATH = a;
      expect(requireTool(fakeContext().context, 'frobtool', 'the package `frob`')).to.equal(join(a, 'frobtool'));
      process.env.PATH = dirs[1];
      expect(() => withCi('true', () => requireTool(fakeContext().context, 'frobtool', 'the package `frob`'))).to.throw(
        'CI=true and frobtool is not on PATH (install the package `frob`)',
      );
    } finally {
      process.env.PATH = savedPath;
    }
  });
});
