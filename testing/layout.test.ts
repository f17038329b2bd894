/**
 * The layout's rules (.dependency-cruiser.cjs, docs/design.md) hold for this repository, and each
 * rule really fails on the import it forbids: a rule that cannot fail would let the rooms decay
 * unnoticed. Also: the production build compiles nothing from testing/ or dev/.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { expect } from 'chai';
import { projectRoot } from '../platform/paths';

const ROOT = projectRoot();
const DEPCRUISE = join(ROOT, 'node_modules', '.bin', 'depcruise');

interface Violation {
  readonly rule: { readonly name: string };
  readonly from: string;
  readonly to: string;
}

function cruise(cwd: string, paths: string[]): { violations: Violation[] } {
  const run = spawnSync(DEPCRUISE, [...paths, '--config', '.dependency-cruiser.cjs', '--output-type', 'json'], { cwd, encoding: 'utf8' });
  const output = JSON.parse(run.stdout) as { summary: { violations: Violation[] } };
  return { violations: output.summary.violations };
}

describe('layout', function () {
  this.timeout(120_000);

  // The repository itself breaks none of its import rules.
  it('holds for this repository', () => {
    const { violations } = cruise(ROOT, ['platform', 'services', 'scripts', 'dev', 'testing', 'bench', 'ops', 'mesh', 'gen']);
    expect(violations.map((v) => `${v.rule.name}: ${v.from} -> ${v.to}`)).to.deep.equal([]);
  });

  // One small tree that breaks each rule once: every rule reports exactly its own break.
  it('fails on each import it forbids', () => {
    const dir = mkdtempSync(join(tmpdir(), 'shieldx-layout-'));
    try {
      copyFileSync(join(ROOT, '.dependency-cruiser.cjs'), join(dir, '.dependency-cruiser.cjs'));
      copyFileSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
      symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
      writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', strict: true } }));
      const files: Record<string, string> = {
        'gen/thing.ts': 'export const thing = 1;\n',
        'platform/leaf.ts': "import { shadowThing } from '../services/shadow/index';\nexport const leaf = shadowThing;\n",
        'platform/kit-user.ts': "import { kit } from '../testing/kit';\nexport const k = kit;\n",
        'testing/kit.ts': 'export const kit = 1;\n',
        'dev/launcher.ts': 'export const launcher = 1;\n',
        'services/shadow/index.ts': 'export const shadowThing = 1;\n',
        'services/shadow/domain/rule.ts': "import pg from 'pg';\nimport { thing } from '../../../gen/thing';\nexport const rule = [pg, thing];\n",
        'services/shadow/domain/uses-store.ts': "import { a } from '../store/cycle-a';\nexport const u = a;\n",
        'services/shadow/domain/pool-type.ts': "import type pg from 'pg';\nexport type Pool = pg.Pool;\n",
        'services/shadow/store/cycle-a.ts': "import { b } from './cycle-b';\nexport const a = () => b;\n",
        'services/shadow/store/cycle-b.ts': "import { a } from './cycle-a';\nexport const b = () => a;\n",
        'services/shadow/store/mock.ts': "import RedisMock from 'ioredis-mock';\nexport const mock = RedisMock;\n",
        'services/shadow/store/speaks-grpc.ts': "import { status } from '@grpc/grpc-js';\nexport const s = status;\n",
        'services/shadow/rpc/db.ts': "import pg from 'pg';\nexport const db = pg;\n",
        'services/shadow/rpc/dev-user.ts': "import { launcher } from '../../../dev/launcher';\nexport const l = launcher;\n",
        'services/credits/index.ts': "import { shadowThing } from '../shadow/index';\nexport const c = shadowThing;\n",
      };
      for (const [file, text] of Object.entries(files)) {
        mkdirSync(dirname(join(dir, file)), { recursive: true });
        writeFileSync(join(dir, file), text);
      }
      const { violations } = cruise(dir, ['platform', 'services', 'testing', 'dev', 'gen']);
      // The CI step (`npm run check:imports`, err output) exits non-zero on them.
      const ciStep = spawnSync(DEPCRUISE, ['platform', 'services', '--config', '.dependency-cruiser.cjs', '--output-type', 'err'], { cwd: dir });
      expect(ciStep.status, 'depcruise --output-type err exits non-zero on a violation').to.not.equal(0);
      const found = violations.map((v) => `${v.rule.name}: ${v.from} -> ${v.to.replace(/^.*node_modules\/((@[^/]+\/)?[^/]+)\/.*$/, '$1')}`).sort();
      expect(found).to.include.members([
        'platform-is-a-leaf: platform/leaf.ts -> services/shadow/index.ts',
        'platform-is-a-leaf: platform/kit-user.ts -> testing/kit.ts',
        'production-without-test-or-dev-code: platform/kit-user.ts -> testing/kit.ts',
        'production-without-test-or-dev-code: services/shadow/rpc/dev-user.ts -> dev/launcher.ts',
        'domain-is-pure: services/shadow/domain/rule.ts -> pg',
        'domain-is-pure: services/shadow/domain/rule.ts -> gen/thing.ts',
        'domain-is-pure: services/shadow/domain/uses-store.ts -> services/shadow/store/cycle-a.ts',
        'domain-is-pure: services/shadow/domain/pool-type.ts -> pg',
        'no-cycles: services/shadow/store/cycle-a.ts -> services/shadow/store/cycle-b.ts',
        'production-without-dev-dependencies: services/shadow/store/mock.ts -> ioredis-mock',
        'store-speaks-no-proto: services/shadow/store/speaks-grpc.ts -> @grpc/grpc-js',
        'only-store-touches-the-databases: services/shadow/rpc/db.ts -> pg',
        'services-stay-apart: services/credits/index.ts -> services/shadow/index.ts',
      ]);
      // Nothing else: the allowed imports in the same tree (index → nothing, store → store) pass.
      const allowedFiles = new Set(['gen/thing.ts', 'testing/kit.ts', 'dev/launcher.ts', 'services/shadow/index.ts']);
      expect(violations.filter((v) => allowedFiles.has(v.from))).to.deep.equal([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // What `npm run build` compiles (and the image ships) holds nothing of testing/ or dev/, and no test.
  it('builds nothing from testing/ or dev/', () => {
    const listed = execFileSync(join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.build.json', '--listFilesOnly'], { cwd: ROOT, encoding: 'utf8' })
      .split('\n')
      .filter((f) => f.startsWith(ROOT) && !f.includes('/node_modules/'))
      .map((f) => relative(ROOT, f));
    expect(listed.length).to.be.greaterThan(50);
    expect(listed.filter((f) => /^(testing|dev|bench)\/|\.test\.ts$/.test(f))).to.deep.equal([]);
    expect(listed).to.include.members(['scripts/start-service.ts', 'platform/server.ts']);
  });
});
