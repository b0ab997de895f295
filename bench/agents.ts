// Real coding agents through greytap, end to end, offline (run by bench/agents.sh, which installs
// the clients). Starts bench/agent-origin.ts (the fake OpenAI/Anthropic/Gemini APIs) and `greytap
// serve` routing api.openai.com, api.anthropic.com, chatgpt.com and generativelanguage.googleapis.com
// to it, then runs each client once through the proxy and once straight to the origin, and prints
// what greytap captured: the transactions, the conversations (roles and the start of each block,
// sub-agents under their calls), and whether a credential got into the store.
//
//   node dist/bench/agents.js --bin DIR/node_modules/.bin [--dir SCRATCH] [--fixtures DIR]
//
// --fixtures DIR: also save the LLM exchanges greytap captured as replay fixtures
// (bench/agent-fixture.ts's format, for test/conversations/real-clients.test.ts).
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { installExitHandlers, spawnChild, stopChild } from './children.js';
import { NO_WS_ACCOUNT_SUFFIX, startAgentOrigin } from './agent-origin.js';
import { saveFixture } from './agent-fixture.js';

const API_KEY_OPENAI = 'sk-test-agents-0123456789abcdef';
const API_KEY_ANTHROPIC = 'sk-ant-test-agents-0123456789abcdef';
const API_KEY_GEMINI = 'AIzaTestAgents0123456789abcdefABCDEFGHIJ';
/** every credential the clients are given: none may reach the store */
const SECRETS = [API_KEY_OPENAI, API_KEY_ANTHROPIC, API_KEY_GEMINI];
const PROMPT = 'Run echo hi and tell me what it printed';
const GREYTAP = fileURLToPath(new URL('../../bin/greytap.js', import.meta.url));

interface Run { name: string; cmd: string; args: string[]; env: NodeJS.ProcessEnv }

/** Runs a client to its end with stdin closed (codex exec reads a piped stdin into the prompt). */
function run(r: Run, cwd: string, timeoutMs = 180_000): Promise<{ code: number; out: string }> {
  return new Promise((res) => {
    const p = spawn(r.cmd, r.args, { cwd, env: r.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (b: Buffer) => { out += b; });
    p.stderr.on('data', (b: Buffer) => { out += b; });
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('error', (e) => { out += `\n${e.message}\n`; });
    p.on('close', (code, sig) => { clearTimeout(t); res({ code: code ?? (sig ? 128 : 1), out }); });
  });
}

const mkdirp = (dir: string) => { mkdirSync(dir, { recursive: true }); return dir; };

/**
 * A CODEX_HOME signed in with ChatGPT, offline: auth.json with unsigned JWTs carrying the claims
 * codex reads (account, plan), refreshed now so codex does not try auth.openai.com.
 */
function chatgptHome(dir: string, account: string): string {
  mkdirp(dir);
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: 'user-greytap-agents', iat: now, exp: now + 86_400, 'https://api.openai.com/auth': { chatgpt_plan_type: 'pro', chatgpt_account_id: account, chatgpt_user_id: 'user-greytap-agents' } };
  const jwt = (extra: object) => `${b64({ alg: 'RS256', typ: 'JWT' })}.${b64({ ...claims, ...extra })}.${b64('unsigned')}`;
  const tokens = { id_token: jwt({ email: 'agents@example.com', email_verified: true }), access_token: jwt({ aud: ['https://api.openai.com/v1'] }), refresh_token: 'rt_greytap_agents', account_id: account };
  SECRETS.push(tokens.access_token, tokens.id_token);
  writeFileSync(join(dir, 'auth.json'), JSON.stringify({ auth_mode: 'chatgpt', OPENAI_API_KEY: null, tokens, last_refresh: new Date().toISOString() }));
  return dir;
}

/** A HOME for Gemini CLI: API-key auth chosen, folder trust and usage statistics off. */
function geminiHome(dir: string): string {
  mkdirp(join(dir, '.gemini'));
  const settings = { security: { auth: { selectedType: 'gemini-api-key' }, folderTrust: { enabled: false } }, privacy: { usageStatisticsEnabled: false }, general: { disableAutoUpdate: true } };
  writeFileSync(join(dir, '.gemini', 'settings.json'), JSON.stringify(settings));
  return dir;
}

/** A HOME for opencode: no auto-update, no sharing; straight to the origin, its Anthropic base URL. */
function opencodeHome(dir: string, anthropic?: string): string {
  mkdirp(join(dir, '.config', 'opencode'));
  const config = { autoupdate: false, share: 'disabled', ...(anthropic ? { provider: { anthropic: { options: { baseURL: `${anthropic}/v1` } } } } : {}) };
  writeFileSync(join(dir, '.config', 'opencode', 'opencode.json'), JSON.stringify(config));
  return dir;
}

/** The clients, configured for a proxy (or none) and a CA file. */
function clients(bin: string, home: string, base: { openai: string; anthropic: string; chatgpt?: string; gemini?: string }, proxy: string | undefined, ca: string): Run[] {
  const quiet = { DISABLE_TELEMETRY: '1', DISABLE_ERROR_REPORTING: '1', DISABLE_AUTOUPDATER: '1', CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1' };
  const via = proxy ? { HTTPS_PROXY: proxy, https_proxy: proxy, HTTP_PROXY: proxy, NO_PROXY: '', no_proxy: '' } : {};
  const env = { PATH: process.env.PATH, HOME: process.env.HOME, TERM: 'dumb', ...via, ...quiet };
  mkdirSync(join(home, 'codex'), { recursive: true }); // codex refuses a CODEX_HOME that does not exist
  const codexEnv = { ...env, CODEX_HOME: join(home, 'codex'), OPENAI_API_KEY: API_KEY_OPENAI, CODEX_CA_CERTIFICATE: ca };
  const codexArgs = ['exec', '--skip-git-repo-check', '-s', 'workspace-write', '-m', 'gpt-5-codex'];
  // a provider of our own: codex's built-in one insists on api.openai.com, and it speaks HTTP+SSE (the built-in one WebSocket)
  const plain = ['-c', 'model_provider=plain', '-c', `model_providers.plain={name="plain",base_url="${base.openai}/v1",env_key="OPENAI_API_KEY",wire_api="responses"}`];
  const claudeEnv = { ...env, CLAUDE_CONFIG_DIR: join(home, 'claude'), ANTHROPIC_API_KEY: API_KEY_ANTHROPIC, ANTHROPIC_BASE_URL: base.anthropic, NODE_EXTRA_CA_CERTS: ca };
  const out: Run[] = [];
  // the fake answers a prompt that asks for a sub-agent with codex's spawn_agent, then wait_agent
  const viaSubagent = `Use a subagent to ${PROMPT[0].toLowerCase()}${PROMPT.slice(1)}`;
  if (proxy) out.push({ name: 'codex (WebSocket, built-in openai provider)', cmd: join(bin, 'codex'), args: [...codexArgs, PROMPT], env: codexEnv });
  if (proxy) out.push({ name: 'codex (WebSocket, a sub-agent)', cmd: join(bin, 'codex'), args: [...codexArgs, viaSubagent], env: codexEnv });
  out.push({ name: 'codex (HTTP+SSE, custom provider)', cmd: join(bin, 'codex'), args: [...codexArgs, ...plain, PROMPT], env: codexEnv });
  out.push({ name: 'codex (HTTP+SSE, a sub-agent)', cmd: join(bin, 'codex'), args: [...codexArgs, ...plain, viaSubagent], env: codexEnv });
  // Signed in with ChatGPT, codex talks to chatgpt.com/backend-api/codex/responses (straight to the
  // origin: chatgpt_base_url). The *_http account is refused WebSocket by the origin, so codex
  // falls back to HTTP + SSE with zstd-coded request bodies.
  const viaChatgpt = base.chatgpt ? ['-c', `chatgpt_base_url="${base.chatgpt}/backend-api/"`] : [];
  for (const [how, account] of [['WebSocket', 'acct_greytap_ws'], ['HTTP+SSE, zstd request bodies', `acct_greytap${NO_WS_ACCOUNT_SUFFIX}`]]) {
    const chatgptEnv = { ...env, CODEX_HOME: chatgptHome(join(home, `codex-${account}`), account), CODEX_CA_CERTIFICATE: ca };
    out.push({ name: `codex (ChatGPT sign-in, ${how})`, cmd: join(bin, 'codex'), args: [...codexArgs, ...viaChatgpt, PROMPT], env: chatgptEnv });
  }
  const geminiEnv = { ...env, HOME: geminiHome(join(home, 'gemini')), GEMINI_API_KEY: API_KEY_GEMINI, NODE_EXTRA_CA_CERTS: ca, ...(base.gemini ? { GOOGLE_GEMINI_BASE_URL: base.gemini } : {}) };
  out.push({ name: 'gemini -p', cmd: join(bin, 'gemini'), args: ['-p', PROMPT, '--yolo', '-m', 'gemini-2.5-pro'], env: geminiEnv });
  const opencodeEnv = { ...env, HOME: opencodeHome(join(home, 'opencode'), proxy ? undefined : base.anthropic), ANTHROPIC_API_KEY: API_KEY_ANTHROPIC, NODE_EXTRA_CA_CERTS: ca };
  out.push({ name: 'opencode run (Anthropic)', cmd: join(bin, 'opencode'), args: ['run', '-m', 'anthropic/claude-sonnet-4-5', PROMPT], env: opencodeEnv });
  const qwenEnv = { ...env, HOME: mkdirp(join(home, 'qwen')), OPENAI_API_KEY: API_KEY_OPENAI, OPENAI_BASE_URL: `${base.openai}/v1`, OPENAI_MODEL: 'qwen3-coder-plus', NODE_EXTRA_CA_CERTS: ca };
  out.push({ name: 'qwen -p (Chat Completions)', cmd: join(bin, 'qwen'), args: ['-p', PROMPT, '--yolo'], env: qwenEnv });
  out.push({ name: 'claude -p', cmd: join(bin, 'claude'), args: ['-p', PROMPT, '--allowedTools', 'Bash', '--model', 'claude-sonnet-4-5'], env: claudeEnv });
  // the fake answers a prompt that asks for a sub-agent with Claude Code's Agent tool
  out.push({ name: 'claude -p (a sub-agent)', cmd: join(bin, 'claude'), args: ['-p', viaSubagent, '--allowedTools', 'Bash,Agent', '--model', 'claude-sonnet-4-5'], env: claudeEnv });
  return out;
}

async function get(api: string, path: string): Promise<any> {
  const r = await fetch(api + path);
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

const short = (s: unknown, n = 70) => JSON.stringify(typeof s === 'string' ? s : s ?? null).slice(0, n);

async function main(): Promise<void> {
  const { values: a } = parseArgs({ options: { bin: { type: 'string' }, dir: { type: 'string' }, fixtures: { type: 'string' } } });
  if (!a.bin) throw new Error('usage: --bin DIR/node_modules/.bin [--dir SCRATCH] [--fixtures DIR]');
  const bin = resolve(a.bin);
  const dir = resolve(a.dir ?? '/tmp/greytap-agents-run');
  rmSync(dir, { recursive: true, force: true });
  const work = join(dir, 'work');
  mkdirSync(work, { recursive: true });
  installExitHandlers();

  const origin = await startAgentOrigin(join(dir, 'origin'));
  const direct = `https://127.0.0.1:${origin.port}`;
  console.log(`fake origin https://127.0.0.1:${origin.port} (log: ${join(dir, 'origin', 'origin.jsonl')})`);

  // Without the proxy: the client talks to the origin directly (by IP), trusting the origin's CA.
  const plainOut = new Map<string, string>();
  for (const r of clients(bin, join(dir, 'home-direct'), { openai: direct, anthropic: direct, chatgpt: direct, gemini: direct }, undefined, origin.caPath)) {
    const res = await run(r, work);
    plainOut.set(r.name, res.out);
    console.log(`direct  ${r.name}: exit ${res.code}, ${/\bhi\b/.test(res.out) ? 'answer mentions "hi"' : 'NO "hi" in the output'}`);
  }

  const data = join(dir, 'data');
  const maps = ['api.openai.com', 'api.anthropic.com', 'chatgpt.com', 'generativelanguage.googleapis.com'].flatMap((h) => ['--map', `${h}:443=127.0.0.1:${origin.port}`]);
  const g = spawnChild(process.execPath, [GREYTAP, 'serve', '--data-dir', data, '--http-proxy', '127.0.0.1:0', '--socks', 'off', '--api', '127.0.0.1:0', '--workers', '1', '--upstream-ca', origin.caPath, ...maps]);
  const banner = await new Promise<string>((res, rej) => {
    let text = '';
    g.proc.stdout!.on('data', (b: Buffer) => { text += b; if (/api http:\/\/\S+/.test(text)) res(text); });
    g.proc.once('exit', () => rej(new Error(`greytap exited: ${g.tail()}`)));
  });
  const proxy = 'http://' + /http-proxy (\S+)/.exec(banner)![1];
  const api = /api (http:\/\/[^/\s]+)/.exec(banner)![1];
  const ca = join(data, 'ca', 'greytap-ca.pem');
  console.log(`greytap proxy ${proxy}, api ${api}, CA ${ca}\n`);

  for (const r of clients(bin, join(dir, 'home'), { openai: 'https://api.openai.com', anthropic: 'https://api.anthropic.com' }, proxy, ca)) {
    const res = await run(r, work);
    writeFileSync(join(dir, `${r.name.replace(/[^a-z0-9]+/gi, '-').replace(/-$/, '')}.out`), res.out);
    const same = plainOut.has(r.name) ? (/\bhi\b/.test(res.out) === /\bhi\b/.test(plainOut.get(r.name)!) ? 'same outcome as direct' : 'DIFFERS from direct') : '';
    console.log(`proxied ${r.name}: exit ${res.code}, ${/\bhi\b/.test(res.out) ? 'answer mentions "hi"' : 'NO "hi" in the output'} ${same}`);
  }

  await new Promise((r) => setTimeout(r, 1500)); // captures of the last exchanges settle
  const txs = (await get(api, '/api/transactions?limit=1000')).items as any[];
  console.log(`\n== transactions (${txs.length})`);
  const counts = new Map<string, number>();
  for (const t of txs) {
    const k = t.kind === 'HTTP' ? `HTTP ${t.method} ${t.host}${t.path.split('?')[0]} → ${t.status ?? '-'}${t.error ? ` error ${t.error}` : ''}` : `${t.kind} ${t.host}${t.path}${t.error ? ` error ${t.error}` : ''}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  for (const [k, n] of counts) console.log(`  ${String(n).padStart(3)} × ${k}`);

  const convs = (await get(api, '/api/conversations?limit=100')).items as any[];
  console.log(`\n== conversations (${convs.length})`);
  for (const c of convs) {
    console.log(`  ${c.id} client=${c.client} provider=${c.provider} model=${c.model} key=${c.key}${c.incomplete ? ` incomplete=${c.incomplete}` : ''}`);
    const turns = (list: any[], indent: string) => list.forEach((t: any, i: number) => {
      const blocks = t.blocks.map((b: any) => `${b.type}${b.scaffolding ? '(scaffolding)' : ''}${b.name ? ` ${b.name}` : ''} ${short(b.text ?? b.arguments ?? b.output)}`);
      console.log(`${indent}${String(i).padStart(2)} ${t.role.padEnd(9)} ${blocks.join(' | ')}`);
    });
    turns(c.turns, '    ');
    for (const sub of c.subagents ?? []) {
      console.log(`       sub-agent of ${sub.callId} model=${sub.model}`);
      turns(sub.turns, '         ');
    }
  }

  if (a.fixtures) {
    mkdirSync(a.fixtures, { recursive: true });
    const fixtures: [string, string, RegExp][] = [
      ['api.anthropic.com', 'claude-code', /^claude-cli\//], ['api.anthropic.com', 'opencode', /^opencode\//],
      ['api.openai.com', 'codex-http', /^codex/], ['api.openai.com', 'qwen-code', /^QwenCode\//], ['generativelanguage.googleapis.com', 'gemini-cli', /GeminiCLI/i],
    ];
    for (const [host, name, ua] of fixtures) {
      const n = await saveFixture(api, host, name, `bench/agents.ts: "${PROMPT}" against bench/agent-origin.ts`, join(a.fixtures, `${name}.json`), ua);
      console.log(`fixture ${join(a.fixtures, `${name}.json`)}: ${n} exchanges`);
    }
  }

  await stopChild(g);
  const exported = await run({ name: 'export', cmd: process.execPath, args: [GREYTAP, 'export', '--data-dir', data, '--format', 'jsonl'], env: process.env }, work);
  const leaks = SECRETS.filter((k) => exported.out.includes(k));
  console.log(`\n== credentials in the export: ${leaks.length ? `LEAKED ${leaks.map((k) => k.slice(0, 24) + '…').join(', ')}` : `none of the ${SECRETS.length} (API keys, ChatGPT tokens)`}`);

  await origin.close();
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
}
