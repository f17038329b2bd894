/**
 * The README is executable: `npm start` (dev/dev.ts, as a user runs it: in-process Redis
 * stand-in, development key) serves the mesh, and every command in the README's `sh` examples
 * runs against it and must succeed with a JSON answer. grpcurl commands run through
 * testing/peers/grpcurl, which hands them to `buf curl` (no grpcurl package exists here); curl
 * commands run with real curl. The README's ports are mapped to the free ports the mesh got, and
 * `<evaluation id>` / `<decision id>` to what the commands before them answered.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { freePort } from '../dev/local-servers';
import { projectPath } from '../platform/paths';
import { SERVICES } from '../scripts/services';
import { createDatabase, testInfrastructure } from './harness';
import { findOnPath, skipOrFailInCi } from './require-tool';

const run = promisify(execFile);

/** The commands of the README's ```sh blocks: continuations, multi-line quotes and heredocs joined. */
export function readmeCommands(markdown: string): string[] {
  const commands: string[] = [];
  const blocks = [...markdown.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
  for (const block of blocks) {
    let current = '';
    let heredoc: string | undefined;
    for (const line of block.split('\n')) {
      if (heredoc !== undefined) {
        current += `${line}\n`;
        if (line === heredoc) {
          commands.push(current.trimEnd());
          current = '';
          heredoc = undefined;
        }
        continue;
      }
      if (current === '' && (line.trim() === '' || line.trim().startsWith('#'))) continue;
      current += `${line}\n`;
      const marker = /<<'(\w+)'\s*$/.exec(line);
      if (marker) {
        heredoc = marker[1];
        continue;
      }
      const openQuote = (current.match(/'/g)?.length ?? 0) % 2 === 1;
      if (openQuote || line.endsWith('\\')) continue;
      commands.push(current.trimEnd());
      current = '';
    }
    if (current.trim() !== '') commands.push(current.trimEnd());
  }
  return commands;
}

interface Mesh {
  readonly child: ChildProcess;
  readonly key: string;
  readonly ports: Map<string, string>;
  readonly output: string[];
}

async function startMesh(databaseUrl: string): Promise<Mesh> {
  // LOG_LEVEL stays info: npm start waits for each service's "listening" line.
  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: databaseUrl, LOG_LEVEL: 'info' };
  delete env.REDIS_URL;
  delete env.SHIELDX_API_KEYS;
  const ports = new Map<string, string>();
  for (const service of SERVICES) {
    const prefix = service.name.toUpperCase();
    for (const [variable, readmePort] of [
      [`${prefix}_PORT`, service.defaultGrpcPort],
      [`${prefix}_HTTP_PORT`, service.defaultHttpPort],
      [`${prefix}_METRICS_PORT`, service.defaultMetricsPort],
    ] as const) {
      const port = String(await freePort());
      env[variable] = port;
      ports.set(String(readmePort), port);
    }
  }
  const child = spawn(process.execPath, ['--import', 'tsx', projectPath('dev', 'dev.ts')], { cwd: projectPath(), env, stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  child.stderr!.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  // A mesh that does not come up must not outlive the test (its services would keep running).
  const failed = (error: unknown) => {
    if (child.exitCode === null) child.kill('SIGTERM');
    throw error;
  };
  const key = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`npm start did not come up in 90 s: ${output.join('')}`)), 90_000);
    child.once('exit', (code) => reject(new Error(`npm start exited with ${code}: ${output.join('')}`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      output.push(line);
      const found = /development API key \(all scopes\): (\S+)/.exec(line);
      if (found) {
        clearTimeout(timer);
        resolve(found[1]!);
      }
    });
  }).catch(failed);
  return { child, key, ports, output };
}

describe('README examples, against npm start', function () {
  this.timeout(300_000);
  let mesh: Mesh | undefined;
  let dropDatabase: (() => Promise<void>) | undefined;

  before(async function () {
    for (const tool of ['curl', 'bash']) if (!findOnPath(tool)) skipOrFailInCi(this, `${tool} is not on PATH`);
    const database = await createDatabase(testInfrastructure().serverUrl, 'shieldx_readme');
    dropDatabase = database.drop;
    mesh = await startMesh(database.url);
  });
  after(async () => {
    if (mesh && mesh.child.exitCode === null) {
      const exited = new Promise((resolve) => mesh!.child.once('exit', resolve));
      mesh.child.kill('SIGTERM');
      await exited;
    }
    await dropDatabase?.();
  });

  // The splitter finds every example: one command per grpcurl or curl call.
  it('finds the examples', () => {
    const commands = readmeCommands(readFileSync(projectPath('README.md'), 'utf8'));
    const calls = commands.filter((c) => /^(grpcurl|curl) /.test(c));
    expect(calls.length).to.be.at.least(15);
    expect(calls.filter((c) => c.startsWith('curl ')).length, 'a curl example per service').to.be.at.least(3);
  });

  // Each example, in README order, succeeds and answers JSON (or the listing it shows).
  it('runs every example and each answers', async () => {
    const commands = readmeCommands(readFileSync(projectPath('README.md'), 'utf8')).filter((c) => !/^KEY=/.test(c));
    const captured = new Map<string, string>();
    const env = { ...process.env, KEY: mesh!.key, PATH: `${join(__dirname, 'peers')}:${projectPath('node_modules', '.bin')}:${process.env.PATH}` };
    for (const original of commands) {
      if (!/^(grpcurl|curl) /.test(original)) continue;
      let command = original.replace(/127\.0\.0\.1:(\d{4})\b/g, (whole, port: string) => `127.0.0.1:${mesh!.ports.get(port) ?? port}`);
      command = command.replace(/<evaluation id>/g, () => captured.get('evaluation') ?? 'missing-evaluation-id');
      command = command.replace(/<decision id>/g, () => captured.get('decision') ?? 'missing-decision-id');
      const label = original.split('\n')[0]!.slice(0, 120) + (/\/(\w+)\s*(<<|$)/m.exec(original)?.[1] ?? '');
      const answer = await run('bash', ['-c', command], { env, timeout: 60_000, maxBuffer: 16 * 1024 * 1024 }).catch((error: { stdout?: string; stderr?: string; message: string }) => {
        throw new Error(`README command failed:\n${command}\n${error.stderr ?? ''}${error.stdout ?? ''}${error.message}`);
      });
      const out = answer.stdout.trim();
      expect(out, label).to.not.equal('');
      if (/ list$/.test(command.trim())) {
        expect(out.split('\n'), label).to.include('grpc.health.v1.Health');
        continue;
      }
      if (/ describe /.test(command)) {
        expect(out, label).to.include('/Consume');
        continue;
      }
      // One JSON value per answer (several for streams); a Connect error body has `code`.
      const values = out.split(/\n(?=\{)/).map((part) => JSON.parse(part) as Record<string, unknown>);
      for (const value of values) expect(value, `${label}: ${out}`).to.not.have.property('code');
      const evaluation = values.map((v) => (v.evaluation as { id?: string } | undefined)?.id).find(Boolean);
      if (evaluation && command.includes('/StartEvaluation')) captured.set('evaluation', evaluation);
      const decision = values.map((v) => v.decisionId as string | undefined).find(Boolean);
      if (decision && command.includes('/Assess') && !captured.has('decision')) captured.set('decision', decision);
    }
    expect(captured.has('evaluation'), 'StartEvaluation answered an id').to.equal(true);
    expect(captured.has('decision'), 'Assess answered a decision id').to.equal(true);
  });
});
