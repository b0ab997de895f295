// The `greytap` command (DESIGN.md "CLI"). Bad options exit 2 with a one-line reason.
import { loadConfig, openingOption, ConfigError, DEFAULTS } from './config.js';
import type { RecordKind } from './records.js';
import { hostPort } from './io/authority.js';
import type { Page, Store } from './store/store.js';
import type { LmdbStore, StoreOptions } from './store/lmdb.js';

const USAGE = `usage:
  greytap serve [--config FILE] [--data-dir DIR] [--http-proxy ADDR|off] [--socks ADDR|off] [--api ADDR|off]
                [--workers N] [--upstream-ca FILE]... [--map HOST:PORT=HOST:PORT]... [--no-intercept GLOB]...
                [--max-body BYTES] [--retention AGE|SIZE] [--socks-auth USER:PASS]... [--redact-header NAME]...
                [--allow-remote] [--max-capture-memory BYTES] [--max-conn-capture-memory BYTES] [--capture-nice 0-19]
                [--handshake-timeout DURATION] [--dissect-rules FILE]
  greytap ca [--data-dir DIR]
  greytap export [--data-dir DIR] [--format jsonl|har] [--kind K] [--host H] [--since T]
  greytap conversations [--data-dir DIR] [--id ID] [--format json|markdown] [--rebuild [--dissect-rules FILE]]`;

/** Options of the read-side commands: simple --flag value pairs. */
function simpleOpts(argv: string[], allowed: string[], flags: string[] = []): Record<string, string | true> {
  const out: Record<string, string | true> = {};
  for (let i = 0; i < argv.length; i++) {
    const [k, inline] = argv[i].split(/=(.*)/s, 2);
    const name = k.replace(/^--/, '');
    if (!k.startsWith('--') || ![...allowed, ...flags].includes(name)) throw new ConfigError(`unknown option ${argv[i]}`);
    if (flags.includes(name)) { out[name] = true; continue; }
    const v = inline ?? argv[++i];
    if (v === undefined) throw new ConfigError(`${k} needs a value`);
    out[name] = v;
  }
  return out;
}

function parseSince(s: string): number {
  if (/^\d+$/.test(s)) return Number(s);
  const rel = /^(\d+)([smhd])$/.exec(s);
  if (rel) return Date.now() - Number(rel[1]) * { s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7 }[rel[2] as 's']!;
  const t = Date.parse(s);
  if (Number.isNaN(t)) throw new ConfigError(`--since: expected ms since epoch, an ISO date or an age like 1h, got "${s}"`);
  return t;
}

/** The store of a read-side command: one that is missing or cannot be opened is a bad --data-dir. */
async function openDataDir(o: Record<string, string | true>, opts: StoreOptions): Promise<LmdbStore> {
  const { openStore } = await import('./store/lmdb.js');
  const dir = String(o['data-dir'] ?? DEFAULTS.dataDir);
  return openingOption('--data-dir', dir, () => openStore(dir, opts));
}

/** Every page of a conversation listing. */
function allConversations<T>(store: Store, list: (s: Store, q: { limit: number; after?: string }) => Page<T>): T[] {
  const out: T[] = [];
  for (let after: string | undefined; ;) {
    const page = list(store, { limit: 1000, after });
    out.push(...page.items);
    if (!page.next) return out;
    after = page.next;
  }
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'serve': {
      const cfg = loadConfig(rest);
      (await import('./heap-tuning.js')).tuneV8ForServe();
      const { serve } = await import('./serve.js');
      const running = await serve(cfg);
      const a = running.addresses;
      const fmt = (x?: { host: string; port: number }) => (x ? hostPort(x.host, x.port) : 'off');
      // One write: whoever reads the addresses off a pipe gets the CA path with them, not a chunk later.
      console.log([
        `greytap serving: http-proxy ${fmt(a.httpProxy)}  socks5 ${fmt(a.socks)}  api ${a.api ? `http://${fmt(a.api)}/` : 'off'}`,
        `CA certificate: ${running.caPath}  (trust it${a.api ? `, or: curl http://${fmt(a.api)}/ca.pem` : ''})`,
        `data: ${cfg.dataDir}  workers: ${cfg.workers}  max-body: ${cfg.maxBody} bytes`,
      ].join('\n'));
      // Its own output going away (the terminal closed: EIO; a pipe whose reader left: EPIPE) must
      // not end serve: unhandled, the error killed it before the SIGHUP that came with it flushed.
      for (const out of [process.stdout, process.stderr]) out.on('error', () => {});
      await new Promise<void>((resolve) => {
        const stop = (sig: string) => {
          console.log(`greytap: ${sig}, flushing captured records…`);
          const stopped = () => {
            // After a hangup, end by the signal itself (flushed, as a hung-up process does): an exit
            // would have Node restore the closed terminal's settings, fail, and abort (Node 20).
            if (sig === 'SIGHUP') process.kill(process.pid, 'SIGHUP');
            // Everything is committed and closed by now; a socket still mid-dial (up to its 10 s
            // connect timeout) must not hold the exit: container managers kill after ~10 s.
            setTimeout(() => process.exit(), 2_000).unref();
            resolve();
          };
          running.stop().then(stopped, (e) => { console.error(`greytap: shutdown: ${(e as Error).message}`); stopped(); });
        };
        process.once('SIGINT', () => stop('SIGINT'));
        process.once('SIGTERM', () => stop('SIGTERM'));
        // a closed terminal or a dropped ssh session: flush what is queued rather than lose it
        process.once('SIGHUP', () => stop('SIGHUP'));
      });
      return 0;
    }
    case 'ca': {
      const o = simpleOpts(rest, ['data-dir']);
      const { readCaPem } = await import('./io/tls-intercept.js');
      const dir = String(o['data-dir'] ?? DEFAULTS.dataDir);
      process.stdout.write(openingOption('--data-dir', dir, () => readCaPem(dir)));
      return 0;
    }
    case 'export': {
      const o = simpleOpts(rest, ['data-dir', 'format', 'kind', 'host', 'since']);
      const format = String(o.format ?? 'jsonl');
      if (format !== 'jsonl' && format !== 'har') throw new ConfigError(`--format: expected jsonl or har, got "${format}"`);
      const kind = o.kind as RecordKind | undefined;
      if (kind && !['HTTP', 'WS_REQ', 'WS_RESP', 'WS_CTRL'].includes(kind)) throw new ConfigError(`--kind: expected HTTP, WS_REQ, WS_RESP or WS_CTRL, got "${kind}"`);
      const { exportRecords, OutputClosedError } = await import('./store/export.js');
      const store = await openDataDir(o, { readOnly: true });
      // A reader that stops early (`greytap export | head`) closes the pipe: the export ends
      // quietly, as other filters do, instead of with an EPIPE stack trace. Other errors stand.
      let outError: NodeJS.ErrnoException | undefined;
      const onOutError = (e: NodeJS.ErrnoException) => { outError ??= e; };
      process.stdout.on('error', onOutError);
      try {
        await exportRecords(store, { format, kind, host: o.host as string | undefined, since: o.since ? parseSince(String(o.since)) : undefined }, process.stdout);
      } catch (e) {
        const err = (e instanceof OutputClosedError && outError) || (e as NodeJS.ErrnoException);
        if (err.code !== 'EPIPE' && !(err instanceof OutputClosedError)) throw err;
      } finally {
        process.stdout.off('error', onOutError);
        await store.close();
      }
      if (outError && outError.code !== 'EPIPE') throw outError;
      return 0;
    }
    case 'conversations': {
      const o = simpleOpts(rest, ['data-dir', 'id', 'format', 'dissect-rules'], ['rebuild']);
      const format = String(o.format ?? 'json');
      if (format !== 'json' && format !== 'markdown') throw new ConfigError(`--format: expected json or markdown, got "${format}"`);
      if (o['dissect-rules'] && !o.rebuild) throw new ConfigError('--dissect-rules: only with --rebuild (stored conversations were assembled already)');
      const rules = o['dissect-rules'] ? (await import('./workers/dissect/index.js')).loadDissectRules(String(o['dissect-rules'])) : undefined;
      const { conversationMarkdown } = await import('./api/conversation-markdown.js');
      const store = await openDataDir(o, { readOnly: !o.rebuild, mustExist: true });
      try {
        if (o.rebuild) {
          const { rebuildConversations } = await import('./workers/assemble.js');
          const n = await rebuildConversations(store, { rules });
          console.error(`rebuilt ${n} conversations`);
        }
        const { getPublicConversation, listPublicConversations } = await import('./api/public-conversations.js');
        const list = o.id ? [getPublicConversation(store, String(o.id))].filter((c) => c !== undefined) : allConversations(store, listPublicConversations);
        if (o.id && list.length === 0) { console.error(`greytap: no conversation ${o.id}`); return 1; }
        if (format === 'json') process.stdout.write(JSON.stringify(o.id ? list[0] : list, null, 2) + '\n');
        else process.stdout.write(list.map(conversationMarkdown).join('\n\n---\n\n'));
      } finally { await store.close(); }
      return 0;
    }
    case undefined: case '-h': case '--help': case 'help':
      console.log(USAGE);
      return cmd ? 0 : 2;
    default:
      throw new ConfigError(`unknown command "${cmd}"\n${USAGE}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e) => {
    if (e instanceof ConfigError) console.error(`greytap: ${e.message}`);
    else console.error(`greytap: ${(e as Error).stack ?? e}`);
    process.exitCode = 2;
  },
);
