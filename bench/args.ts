// Options of the benches that run on their own (capture.ts, store.ts, soak.ts): numbers checked against
// their minimum, `--help`, and a one-line error with the usage instead of a stack trace — a typo
// in a flag should not cost a reader the meaning of a 30-second run.
import { parseArgs } from 'node:util';

export interface NumberOption { default: number; min: number; help: string }
/**
 * A string option: its help alone (a file name, no default), or with the word the usage shows for
 * its value, a default, and a check that throws on a value it refuses (its message is the error).
 */
export type StringOption = string | { help: string; arg: string; default?: string; check?: (v: string) => void };

type Parsed<N extends string, F extends string, S extends string> =
  { [K in N]: number } & { [K in F]: boolean } & { [K in S]: string | undefined };

export function benchArgs<N extends string, F extends string = never, S extends string = never>(
  what: string,
  numbers: Record<N, NumberOption>,
  flags = {} as Record<F, string>,
  strings = {} as Record<S, StringOption>,
  argv = process.argv.slice(2),
): Parsed<N, F, S> {
  const usage = [
    what,
    ...Object.entries<NumberOption>(numbers).map(([k, o]) => `  --${k} N  ${o.help} (default ${o.default}, at least ${o.min})`),
    ...Object.entries<string>(flags).map(([k, help]) => `  --${k}  ${help}`),
    ...Object.entries<StringOption>(strings).map(([k, o]) => typeof o === 'string'
      ? `  --${k} FILE  ${o}`
      : `  --${k} ${o.arg}  ${o.help}${o.default === undefined ? '' : ` (default ${o.default})`}`),
  ].join('\n');
  const fail = (msg: string): never => {
    process.stderr.write(`${msg}\n${usage}\n`);
    process.exit(2);
  };
  const options: Record<string, { type: 'string' | 'boolean' }> = { help: { type: 'boolean' } };
  for (const k of Object.keys(numbers)) options[k] = { type: 'string' };
  for (const k of Object.keys(flags)) options[k] = { type: 'boolean' };
  for (const k of Object.keys(strings)) options[k] = { type: 'string' };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: argv, options }));
  } catch (e) {
    return fail((e as Error).message);
  }
  if (values.help) {
    process.stdout.write(usage + '\n');
    process.exit(0);
  }
  const out: Record<string, number | boolean | string | undefined> = {};
  for (const [k, o] of Object.entries<NumberOption>(numbers)) {
    const raw = values[k] as string | undefined;
    const n = raw === undefined ? o.default : Number(raw);
    if (!Number.isFinite(n) || n < o.min) fail(`--${k} ${raw}: needs a number, at least ${o.min}`);
    out[k] = n;
  }
  for (const k of Object.keys(flags)) out[k] = values[k] === true;
  for (const [k, o] of Object.entries<StringOption>(strings)) {
    const v = (values[k] as string | undefined) ?? (typeof o === 'string' ? undefined : o.default);
    if (v !== undefined && typeof o !== 'string') {
      // (a check may call a parser whose message already starts with the option's name)
      try { o.check?.(v); } catch (e) { fail(`--${k} ${v}: ${(e as Error).message.replace(`--${k}: `, '')}`); }
    }
    out[k] = v;
  }
  return out as Parsed<N, F, S>;
}
