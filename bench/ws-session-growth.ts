// What a long codex session over one WebSocket costs conversation assembly, request by request:
// codex sends only the new items with previous_response_id, so what the capture worker does per
// request should stay in proportion to the session's state it must re-pack, not grow faster.
//
//   node dist/bench/ws-session-growth.js [options]     (--help lists them with their defaults)
//
// Each request (a tool output continuing the last response) is answered by a streamed reasoning
// summary and a function call, as codex's events; every record is committed into a fresh real store
// and assembled alone with the live pacing (throttle), as a capture worker does when messages
// arrive one by one. Every `--every` requests it prints the median CPU of that window's requests
// (all their records' assemblies) against the median CPU of committing the same records (what
// capture pays for them without assembly, measured in the same run), the assemblies that ran per
// request, and the stored state's size (the connection's against the conversation's).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pack } from 'msgpackr';
import { openStore } from '../src/store/lmdb.js';
import { nextId } from '../src/store/ids.js';
import { assembleRecords, conversationByKey } from '../src/workers/assemble.js';
import type { WsMessageRecord } from '../src/records.js';
import { median } from './latency.js';
import { benchArgs } from './args.js';
import { cpuMs } from './procstat.js';

const o = benchArgs('node dist/bench/ws-session-growth.js [options]: assembly CPU per request as a codex WebSocket session grows', {
  requests: { default: 400, min: 1, help: 'requests of the session' },
  every: { default: 50, min: 1, help: 'requests per printed window' },
  deltas: { default: 30, min: 0, help: 'delta events per response' },
  instructions: { default: 12000, min: 0, help: 'bytes of the instructions codex sends with every request' },
}, {}, {});

const PCK = '0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b';
const conn = nextId(), upgrade = nextId();
const seqs = { client: 0, server: 0 };
function message(direction: 'client' | 'server', ts: number, body: unknown): WsMessageRecord {
  const text = JSON.stringify(body);
  return {
    id: nextId(), ts, kind: direction === 'client' ? 'WS_REQ' : 'WS_RESP', conn, host: 'api.openai.com', port: 443, scheme: 'wss', path: '/v1/responses',
    upgrade, seq: seqs[direction]++, direction, opcode: 'text', compressed: true, frames: 1, wireBytes: text.length + 6, size: text.length, truncated: false, body: text,
  };
}

const instructions = 'You are Codex, a coding agent. '.repeat(Math.ceil(o.instructions / 30)).slice(0, o.instructions);
const meta = { 'x-codex-turn-metadata': JSON.stringify({ session_id: PCK, turn_id: 't1' }) };
const create = (input: unknown[], prev?: string) => ({
  type: 'response.create', model: 'gpt-5-codex', instructions, input,
  tools: [{ type: 'function', name: 'shell', parameters: { type: 'object' } }], store: false, stream: true, prompt_cache_key: PCK, client_metadata: meta,
  ...(prev ? { previous_response_id: prev } : {}),
});

function answer(i: number): unknown[] {
  const id = `resp_${i}`, summary = `**Step ${i}** running the tests again to see what fails now. `.repeat(4);
  const reasoning = { type: 'reasoning', id: `rs_${i}`, summary: [{ type: 'summary_text', text: summary }], encrypted_content: 'gAAAA'.repeat(400) };
  const call = { type: 'function_call', id: `fc_${i}`, call_id: `call_${i}`, name: 'shell', arguments: JSON.stringify({ command: ['npm', 'test', '--', `parse ${i}`] }) };
  const part = (s: string, k: number, n: number) => s.slice(Math.floor((s.length * k) / n), Math.floor((s.length * (k + 1)) / n));
  const nd = Math.max(1, Math.floor(o.deltas / 2));
  let sn = 0;
  return [
    { type: 'response.created', response: { id, model: 'gpt-5-codex', status: 'in_progress' } },
    { type: 'response.in_progress', response: { id, model: 'gpt-5-codex', status: 'in_progress' } },
    { type: 'response.output_item.added', output_index: 0, item: { type: 'reasoning', id: `rs_${i}`, summary: [] } },
    { type: 'response.reasoning_summary_part.added', output_index: 0, summary_index: 0, item_id: `rs_${i}` },
    ...Array.from({ length: nd }, (_, k) => ({ type: 'response.reasoning_summary_text.delta', output_index: 0, summary_index: 0, item_id: `rs_${i}`, delta: part(summary, k, nd) })),
    { type: 'response.reasoning_summary_text.done', output_index: 0, summary_index: 0, item_id: `rs_${i}`, text: summary },
    { type: 'response.reasoning_summary_part.done', output_index: 0, summary_index: 0, item_id: `rs_${i}` },
    { type: 'response.output_item.done', output_index: 0, item: reasoning },
    { type: 'response.output_item.added', output_index: 1, item: { ...call, arguments: '' } },
    ...Array.from({ length: nd }, (_, k) => ({ type: 'response.function_call_arguments.delta', output_index: 1, item_id: `fc_${i}`, delta: part(call.arguments, k, nd) })),
    { type: 'response.function_call_arguments.done', output_index: 1, item_id: `fc_${i}`, arguments: call.arguments },
    { type: 'response.output_item.done', output_index: 1, item: call },
    { type: 'response.completed', response: { id, model: 'gpt-5-codex', status: 'completed', output: [reasoning, call], usage: { input_tokens: 9000 + i, output_tokens: 40 } } },
  ].map((e) => ({ ...e, sequence_number: sn++ }));
}

const dir = mkdtempSync(join(tmpdir(), 'greytap-ws-session-growth-'));
const store = openStore(dir);
let cpu: number[] = [], commit: number[] = [], runs: number[] = [];
console.log('requests | records | assembly ms per request | commit ms | assembly / commit | assemblies per request | connection state KiB | conversation KiB | state / conversation');
try {
  let ts = Date.now();
  for (let i = 1; i <= o.requests; i++) {
    const input = i === 1 ? [{ type: 'message', role: 'user', content: [{ type: 'input_text', text: 'Fix the failing test in src/parse.ts' }] }]
      : [{ type: 'function_call_output', call_id: `call_${i - 1}`, output: `# parse ${i - 1}\n` + 'ok 1 - parses\n'.repeat(100) }];
    const records = [message('client', ts += 2000, create(input, i > 1 ? `resp_${i - 1}` : undefined)), ...answer(i).map((e) => message('server', ts += 20, e))];
    let n = 0, put = 0, assembled = 0;
    for (const r of records) {
      put += await cpuMs(() => store.putTransactions([r]));
      assembled += await cpuMs(async () => { if ((await assembleRecords(store, [r], { throttle: true })).storeRecords?.CONVERSATION) n++; });
    }
    cpu.push(assembled);
    commit.push(put);
    runs.push(n);
    if (i % o.every === 0 || i === o.requests) {
      const state = pack(conversationByKey(store, 'openai-ws:' + conn)).length, convo = pack(conversationByKey(store, 'openai-ws:' + PCK)).length;
      const a = median(cpu), p = median(commit);
      console.log(`${i} | ${seqs.client + seqs.server} | ${a.toFixed(2)} | ${p.toFixed(2)} | ${(a / p).toFixed(2)}× | ${median(runs)} | ${(state / 1024).toFixed(0)} | ${(convo / 1024).toFixed(0)} | ${(state / convo).toFixed(2)}×`);
      cpu = []; commit = []; runs = [];
    }
  }
} finally {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}
process.exit(0); // (the pacing's trailing timers are unref'd, but an assembly may be pending)
