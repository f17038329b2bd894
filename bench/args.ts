/**
 * Command-line options of the benches: `--name value` (or `--name=value`), else
 * the option's environment variable, else its default. Built on node:util's
 * parseArgs (strict), so an unknown flag, a missing value or a stray argument
 * is an error rather than a run with settings nobody asked for; values are
 * checked here too, so `--duration ten` fails instead of running NaN seconds.
 */
import { parseArgs } from 'node:util';

export interface NumberRule {
  readonly integer?: boolean;
  readonly min?: number;
  readonly max?: number;
}

export type BenchOption =
  | ({ readonly type: 'number'; readonly env?: string; readonly default: number } & NumberRule)
  /** Comma-separated numbers, e.g. `--concurrency 16,32,64`. */
  | ({ readonly type: 'numbers'; readonly env?: string; readonly default: readonly number[] } & NumberRule)
  | { readonly type: 'string'; readonly env?: string; readonly default: string; readonly choices?: readonly string[] }
  /** Comma-separated words, e.g. `--phases closed,open`. */
  | { readonly type: 'list'; readonly env?: string; readonly default: readonly string[]; readonly choices?: readonly string[] }
  /** `--flag` alone; the environment variable may say true/false/1/0. */
  | { readonly type: 'boolean'; readonly env?: string };

type ValueOf<O extends BenchOption> = O extends { type: 'number' }
  ? number
  : O extends { type: 'numbers' }
    ? number[]
    : O extends { type: 'string' }
      ? string
      : O extends { type: 'list' }
        ? string[]
        : boolean;

export type BenchArgs<T extends Record<string, BenchOption>> = { readonly [K in keyof T]: ValueOf<T[K]> };

export interface BenchArgsSettings {
  /** Accept arguments that are not flags (returned in `positionals`); default: they are an error. */
  readonly positionals?: boolean;
  readonly argv?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
}

/** `raw` as a number obeying `rule`, or an Error naming `what` (e.g. "--rate"). */
export function parseNumber(raw: string, what: string, rule: NumberRule = {}): number {
  const value = raw.trim() === '' ? NaN : Number(raw);
  if (!Number.isFinite(value)) throw new Error(`${what} must be a number, not "${raw}"`);
  if (rule.integer && !Number.isInteger(value)) throw new Error(`${what} must be an integer, not "${raw}"`);
  if (rule.min !== undefined && value < rule.min) throw new Error(`${what} must be at least ${rule.min}, not ${raw}`);
  if (rule.max !== undefined && value > rule.max) throw new Error(`${what} must be at most ${rule.max}, not ${raw}`);
  return value;
}

function words(raw: string): string[] {
  return raw
    .split(',')
    .map((word) => word.trim())
    .filter(Boolean);
}

function checkChoices(values: readonly string[], what: string, choices: readonly string[] | undefined): void {
  for (const value of values) {
    if (choices && !choices.includes(value)) throw new Error(`${what}: unknown value "${value}" (${choices.join(', ')})`);
  }
}

function convert(option: BenchOption, raw: string | boolean, what: string): unknown {
  switch (option.type) {
    case 'boolean':
      if (typeof raw === 'boolean') return raw;
      if (['true', '1'].includes(raw)) return true;
      if (['false', '0', ''].includes(raw)) return false;
      throw new Error(`${what} must be true or false, not "${raw}"`);
    case 'number':
      return parseNumber(String(raw), what, option);
    case 'numbers': {
      const values = words(String(raw)).map((word) => parseNumber(word, what, option));
      if (values.length === 0) throw new Error(`${what} must list at least one number`);
      return values;
    }
    case 'string':
      checkChoices([String(raw)], what, option.choices);
      return String(raw);
    case 'list': {
      const values = words(String(raw));
      if (values.length === 0) throw new Error(`${what} must list at least one value`);
      checkChoices(values, what, option.choices);
      return values;
    }
  }
}

/**
 * Reads `options` from the command line (default process.argv), falling back
 * to each option's environment variable, then to its default. Throws on an
 * unknown flag, a flag without its value, or a value of the wrong kind.
 */
export function benchArgs<const T extends Record<string, BenchOption>>(
  options: T,
  settings: BenchArgsSettings = {},
): BenchArgs<T> & { readonly positionals: readonly string[] } {
  const env = settings.env ?? process.env;
  const parsed = parseArgs({
    args: [...(settings.argv ?? process.argv.slice(2))],
    options: Object.fromEntries(Object.entries(options).map(([name, option]) => [name, { type: option.type === 'boolean' ? 'boolean' : 'string' }])) as Record<
      string,
      { type: 'boolean' | 'string' }
    >,
    strict: true,
    allowPositionals: settings.positionals ?? false,
  });
  const values: Record<string, unknown> = {};
  for (const [name, option] of Object.entries(options)) {
    const given = parsed.values[name];
    const fromEnv = option.env === undefined ? undefined : env[option.env];
    if (given !== undefined) values[name] = convert(option, given, `--${name}`);
    else if (fromEnv !== undefined && fromEnv !== '') values[name] = convert(option, fromEnv, option.env!);
    else values[name] = option.type === 'boolean' ? false : Array.isArray(option.default) ? [...option.default] : option.default;
  }
  return { ...(values as BenchArgs<T>), positionals: parsed.positionals };
}
