// What a long agent session costs conversation assembly, request by request: a Claude Code session
// over HTTP re-sends its whole history with every request, so what the capture worker does per
// request must stay in proportion to that request, not grow with the session's length squared.
//
//   node dist/bench/session-growth.js [options]     (--help lists them with their defaults)
//
// Each request of one session (one more tool call and its output per request, a side call on a
// small model every tenth) is committed into a fresh real store and assembled alone, as a worker
// does when requests arrive seconds apart. Every `--every` requests it prints the median CPU of
// that window's assemblies against the median CPU of JSON.parse of the same requests' bodies (the
// decoding any capture of them pays, measured in the same run), and the stored conversation's size
// against its public turns' (the private state the assembly keeps beside them).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pack } from 'msgpackr';
import { openStore } from '../src/store/lmdb.js';
import { nextId } from '../src/store/ids.js';
import { assembleRecords, conversationByKey, publicConversation } from '../src/workers/assemble.js';
import type { HttpTransaction } from '../src/records.js';
import { median } from './latency.js';
import { benchArgs } from './args.js';
import { cpuMs } from './procstat.js';

const o = benchArgs('node dist/bench/session-growth.js [options]: assembly CPU per request as a Claude Code session grows', {
  requests: { default: 400, min: 1, help: 'requests of the session' },
  every: { default: 50, min: 1, help: 'requests per printed window' },
  'output-lines': { default: 100, min: 0, help: 'lines of each tool output (14 bytes each)' },
}, {}, {});

const SESSION = '0b7c6d1e-2f3a-4b5c-8d9e-0f1a2b3c4d5e';
const KEY = `anthropic:${SESSION}`;
const HEADERS: [string, string][] = [['Host', 'api.anthropic.com'], ['Content-Type', 'application/json'], ['User-Agent', 'claude-cli/2.0.14 (external, cli)']];
const base = { max_tokens: 32000, metadata: { user_id: `user_0_account_0_session_${SESSION}` } };

function exchange(ts: number, req: unknown, resp: unknown): HttpTransaction {
  const reqBody = JSON.stringify(req);
  return {
    id: nextId(), ts, kind: 'HTTP', conn: nextId(), host: 'api.anthropic.com', port: 443, scheme: 'https', path: '/v1/messages', method: 'POST',
    httpVersion: '1.1', status: 200, reqHeaders: HEADERS, respHeaders: [['Content-Type', 'application/json']], reqBody, reqBytes: reqBody.length,
    respBody: JSON.stringify(resp), respBytes: 400, durationMs: 900, truncated: false,
  };
}

const dir = mkdtempSync(join(tmpdir(), 'greytap-session-growth-'));
const store = openStore(dir);
const history: unknown[] = [{ role: 'user', content: [{ type: 'text', text: 'Fix the failing test in src/parse.ts' }] }];
const system = [{ type: 'text', text: 'You are Claude Code, an agent for software engineering. '.repeat(60) }];
const tools = ['Bash', 'Read', 'Edit', 'Grep'].map((name) => ({ name, description: `${name} tool`, input_schema: { type: 'object' } }));
let assembly: number[] = [], parse: number[] = [];
console.log('requests | history (messages) | request KiB | assembly ms per request | JSON.parse ms | assembly / parse | stored KiB | stored / turns');
try {
  for (let i = 1, ts = Date.now(); i <= o.requests; i++) {
    const call = { type: 'tool_use', id: `toolu_${i}`, name: 'Bash', input: { command: `npm test -- parse ${i}` } };
    const tx = exchange(ts += 3000, { model: 'claude-sonnet-4-5', ...base, system, tools, messages: history, stream: false },
      { id: `msg_${i}`, type: 'message', role: 'assistant', model: 'claude-sonnet-4-5', stop_reason: 'tool_use', content: [{ type: 'text', text: `Step ${i}: run the test.` }, call], usage: { input_tokens: 9, output_tokens: 40 } });
    const batch = [tx];
    if (i % 10 === 0) batch.push(exchange(ts + 1, { model: 'claude-haiku-4-5', ...base, max_tokens: 512, messages: [{ role: 'user', content: `Title for step ${i}` }] },
      { id: `side_${i}`, type: 'message', role: 'assistant', model: 'claude-haiku-4-5', content: [{ type: 'text', text: 'Fix parse test' }] }));
    for (const t of batch) {
      await store.putTransactions([t]);
      const ms = await cpuMs(() => assembleRecords(store, [t]));
      if (t === tx) assembly.push(ms);
    }
    parse.push(cpuMs((): unknown => JSON.parse(tx.reqBody!)));
    history.push({ role: 'assistant', content: [{ type: 'text', text: `Step ${i}: run the test.` }, call] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: call.id, content: `# parse ${i}\n` + 'ok 1 - parses\n'.repeat(o['output-lines']) }] });
    if (i % o.every === 0 || i === o.requests) {
      const c = conversationByKey(store, KEY)!;
      const stored = pack(c).length, turns = pack(publicConversation(c).turns).length;
      const a = median(assembly), p = median(parse);
      console.log(`${i} | ${history.length - 2} | ${(tx.reqBody!.length / 1024).toFixed(0)} | ${a.toFixed(2)} | ${p.toFixed(2)} | ${(a / p).toFixed(2)}× | ${(stored / 1024).toFixed(0)} | ${(stored / turns).toFixed(2)}×`);
      assembly = []; parse = [];
    }
  }
} finally {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}
