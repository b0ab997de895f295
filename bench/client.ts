// The load client, in a process of its own (forked by the runner once per workload × contender).
// Receives one ClientJob over IPC, opens its connections (not timed), runs a closed loop for
// warm-up + the measured window, lets in-flight operations finish (bounded), and sends back a
// ClientResult. Only operations that complete inside the window count towards rates and
// latencies; `wire` counts everything, for the capture-completeness check.
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type tls from 'node:tls';
import { WebSocket } from 'ws';
import { dialTls, target } from './dial.js';
import { LatencyRecorder } from './latency.js';
import { messagePool, jsonMessage } from './payload.js';
import type { ClientJob, ClientProgress, ClientResult, Route, Workload } from './protocol.js';

const now = () => performance.now();

class Run {
  readonly lat = new LatencyRecorder();
  ops = 0;
  /** every operation completed during the run, warm-up and drain included (what the proxy's CPU paid for) */
  opsTotal = 0;
  bytes = 0;
  errors = 0;
  firstError?: string;
  gaveUp = false;
  wire = { wsClient: 0, wsServer: 0, httpExchanges: 0 };
  start = 0;
  /** the measured time: the window, or for bulk the time spent downloading */
  elapsedMs: number;
  warmEnd = 0;
  end = 0;
  /** this process's CPU from the job's arrival on: the load's own cost, beside the proxy's */
  private readonly cpu0 = process.cpuUsage();
  /** sends a ClientProgress every job.progressMs, when asked for */
  private progress?: NodeJS.Timeout;

  constructor(readonly job: ClientJob) { this.elapsedMs = job.durationMs; }
  begin(): void {
    this.start = now();
    this.warmEnd = this.start + this.job.warmupMs;
    this.end = this.warmEnd + this.job.durationMs;
    if (this.job.progressMs) {
      this.progress = setInterval(() => {
        const p: ClientProgress = { progress: true, opsTotal: this.opsTotal, errors: this.errors, firstError: this.firstError, wire: { ...this.wire } };
        process.send?.(p);
      }, this.job.progressMs);
    }
  }
  running(): boolean { return now() < this.end; }
  inWindow(t: number): boolean { return t >= this.warmEnd && t < this.end; }
  /** One completed operation at time t that started at t0 and moved `bytes` payload bytes. */
  done(t0: number, t: number, bytes: number): void {
    this.opsTotal++;
    if (!this.inWindow(t)) return;
    this.ops++;
    this.bytes += bytes;
    this.lat.add(t - t0);
  }
  fail(e: unknown): void {
    this.errors++;
    this.firstError ??= e instanceof Error ? e.message : String(e);
  }
  result(): ClientResult {
    clearInterval(this.progress);
    const cpu = process.cpuUsage(this.cpu0);
    return {
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      ok: this.job.workload.kind === 'bulk' ? this.bytes > 0 : this.ops > 0,
      ops: this.ops,
      opsTotal: this.opsTotal,
      bytes: this.bytes,
      elapsedMs: this.elapsedMs,
      latency: this.lat.summary(),
      errors: this.errors,
      firstError: this.firstError,
      gaveUp: this.gaveUp,
      wire: this.wire,
    };
  }
}

const hostHeader = (route: Route, hostIdx: number | null) => { const t = target(route, hostIdx); return `${t.host}:${t.port}`; };

// ── WebSocket echo (workloads a, b, c) ────────────────────────────────────────────────────────────

function openWs(route: Route, deflate: boolean, maxPayload: number): Promise<WebSocket> {
  return dialTls(route, null).then((sock) => new Promise<WebSocket>((resolve, reject) => {
    // The TLS socket is already through the proxy; ws writes its upgrade request on it.
    const ws = new WebSocket(`ws://${hostHeader(route, null)}/ws?deflate=${deflate ? 1 : 0}`, {
      createConnection: () => sock,
      perMessageDeflate: deflate ? { threshold: 0 } : false,
      maxPayload,
      handshakeTimeout: 15_000,
    });
    ws.once('open', () => { ws.removeListener('error', reject); resolve(ws); });
    ws.once('error', reject);
  }));
}

async function wsEcho(run: Run, w: Workload): Promise<void> {
  const pool = messagePool(w.msgBytes ?? 1024);
  const size = pool[0].length;
  const conns = await Promise.all(Array.from({ length: w.concurrency }, () => openWs(run.job.route, !!w.deflate, size * 2)));
  run.begin();
  await Promise.all(conns.map((ws, k) => new Promise<void>((resolve) => {
    let i = k * 31;
    let sentAt = 0;
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(drainTimer);
      ws.close(1000);
      const t = setTimeout(() => { ws.terminate(); resolve(); }, 2000);
      ws.once('close', () => { clearTimeout(t); resolve(); });
    };
    const drainTimer = setTimeout(() => { run.fail(new Error('echo not back before drain deadline')); finish(); }, run.end - now() + run.job.drainMs);
    const sendNext = () => {
      if (!run.running()) { finish(); return; }
      sentAt = now();
      ws.send(pool[i++ % pool.length], { binary: false });
      run.wire.wsClient++;
    };
    ws.on('message', (data: Buffer) => {
      const t = now();
      run.wire.wsServer++;
      if (data.length !== size) run.fail(new Error(`echo of ${data.length} bytes, sent ${size}`));
      run.done(sentAt, t, 2 * size);
      sendNext();
    });
    ws.on('error', (e) => { run.fail(e); finish(); });
    ws.on('close', (code) => { if (!finished) { run.fail(new Error(`closed by peer (${code})`)); finished = true; clearTimeout(drainTimer); resolve(); } });
    sendNext();
  })));
}

// ── HTTP over a keep-alive agent whose connections go through the route (workloads d, e, bulk) ────

function tunnelAgent(route: Route, sockets: number): http.Agent {
  const agent = new http.Agent({ keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets });
  // Agent#createConnection may answer through its callback (Node's agent supports the async form).
  Object.assign(agent, {
    createConnection: (_o: unknown, cb: (e: Error | null, s?: tls.TLSSocket) => void) => {
      dialTls(route, null).then((s) => cb(null, s), (e: Error) => cb(e));
      return undefined;
    },
  });
  return agent;
}

interface Exchange { method: string; path: string; body?: Buffer; onData?: (chunk: Buffer) => void; timeoutMs?: number }

function request(run: Run, agent: http.Agent, x: Exchange): Promise<number> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { host: hostHeader(run.job.route, null) };
    if (x.body) { headers['content-type'] = 'application/json'; headers['content-length'] = String(x.body.length); }
    const req = http.request({ agent, method: x.method, path: x.path, headers });
    const deadline = setTimeout(() => { run.gaveUp = true; req.destroy(new Error('request timed out')); }, x.timeoutMs ?? Math.max(1000, run.end - now()) + run.job.drainMs);
    req.on('response', (res) => {
      let n = 0;
      if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
      res.on('data', (c: Buffer) => { n += c.length; x.onData?.(c); });
      res.on('end', () => { clearTimeout(deadline); run.wire.httpExchanges++; resolve(n); });
      res.on('error', (e) => { clearTimeout(deadline); reject(e); });
    });
    req.on('error', (e) => { clearTimeout(deadline); reject(e); });
    req.end(x.body);
  });
}

/** Runs `op` in `concurrency` closed loops until the window ends; the first op of each loop opens its connection before timing starts. */
async function loops(run: Run, concurrency: number, op: () => Promise<void>, warm?: () => Promise<void>): Promise<void> {
  if (warm) await Promise.all(Array.from({ length: concurrency }, warm));
  run.begin();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (run.running()) {
      try { await op(); } catch (e) { run.fail(e); await sleep(50); }
    }
  }));
}

async function httpReqResp(run: Run, w: Workload): Promise<void> {
  const agent = tunnelAgent(run.job.route, w.concurrency);
  const body = w.msgBytes ? jsonMessage(w.msgBytes, 7) : undefined;
  const path = `/http?resp=${w.respBytes ?? 1024}`;
  const x: Exchange = { method: body ? 'POST' : 'GET', path, body };
  const op = async () => {
    const t0 = now();
    const n = await request(run, agent, x);
    run.done(t0, now(), n + (body?.length ?? 0));
  };
  await loops(run, w.concurrency, op, async () => { await request(run, agent, x); });
  agent.destroy();
}

async function sseStreams(run: Run, w: Workload): Promise<void> {
  const agent = tunnelAgent(run.job.route, w.concurrency);
  const path = `/sse?n=${w.events ?? 1000}`;
  const op = async () => {
    let tail = '';
    await request(run, agent, {
      method: 'GET', path,
      onData: (c) => {
        const t = now();
        const tNs = process.hrtime.bigint();
        const text = tail + c.toString('latin1');
        const parts = text.split('\n\n');
        tail = parts.pop() ?? '';
        for (const ev of parts) {
          // Server clock in the event: process.hrtime is CLOCK_MONOTONIC, shared by processes on a host.
          const m = /"t":"(\d+)"/.exec(ev);
          if (!m) continue;
          run.done(t - Number(tNs - BigInt(m[1])) / 1e6, t, ev.length + 2);
        }
      },
    });
  };
  await loops(run, w.concurrency, op, async () => { await request(run, agent, { method: 'GET', path: '/sse?n=1' }); });
  agent.destroy();
}

/** Whole downloads, one after another while the window lasts (at least one): a proxy that buffers
 *  the body before sending it on pays for that here, as its users do. Rate = bytes / download time. */
async function bulkDownload(run: Run, w: Workload): Promise<void> {
  const agent = tunnelAgent(run.job.route, 1);
  const size = w.bulkBytes ?? 64 << 20;
  let busyMs = 0;
  await request(run, agent, { method: 'GET', path: '/bulk?bytes=1024' }); // opens the connection
  run.begin();
  do {
    const t0 = now();
    let got = 0;
    try {
      await request(run, agent, { method: 'GET', path: `/bulk?bytes=${size}`, timeoutMs: run.job.bulkTimeoutMs, onData: (c) => { got += c.length; } });
      run.ops++;
      run.opsTotal++;
      run.lat.add(now() - t0);
    } catch (e) {
      // A download cut by its deadline still tells its rate (0 for a proxy that buffers the whole body).
      run.fail(new Error(`${(e as Error).message}: ${(got / 1048576).toFixed(1)} of ${size / 1048576} MiB after ${((now() - t0) / 1000).toFixed(0)} s`));
      busyMs += now() - t0;
      run.bytes += got;
      break;
    }
    busyMs += now() - t0;
    run.bytes += got;
  } while (run.running());
  run.elapsedMs = busyMs;
  agent.destroy();
}

// ── Connection churn (workload f): a new TLS connection per request, cycling host names ──────────

async function churn(run: Run, w: Workload): Promise<void> {
  const hosts = w.hosts ?? 100;
  let next = 0;
  const op = async () => {
    const idx = (next++ % hosts) + 1;
    const t0 = now();
    const s = await dialTls(run.job.route, idx);
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      const timer = setTimeout(() => s.destroy(new Error('response timed out')), 15_000);
      s.on('data', (c: Buffer) => chunks.push(c));
      s.once('end', () => { clearTimeout(timer); s.destroy(); resolve(Buffer.concat(chunks)); });
      s.once('error', (e) => { clearTimeout(timer); reject(e); });
      s.write(`GET /http?resp=256 HTTP/1.1\r\nHost: ${hostHeader(run.job.route, idx)}\r\nConnection: close\r\n\r\n`);
    });
    if (!reply.subarray(0, 12).toString('latin1').startsWith('HTTP/1.1 200')) throw new Error(`churn: bad reply ${reply.subarray(0, 40).toString('latin1')}`);
    run.wire.httpExchanges++;
    run.done(t0, now(), reply.length);
  };
  await loops(run, w.concurrency, op);
}

const KINDS = { ws: wsEcho, http: httpReqResp, sse: sseStreams, bulk: bulkDownload, churn };

async function main(job: ClientJob): Promise<ClientResult> {
  const run = new Run(job);
  try {
    await KINDS[job.workload.kind](run, job.workload);
  } catch (e) {
    run.fail(e);
  }
  return run.result();
}

process.once('message', (job: ClientJob) => {
  // Every loop is bounded by the window; this is the backstop if something hangs anyway.
  const hard = setTimeout(() => process.exit(3), job.warmupMs + job.durationMs + job.drainMs + (job.workload.kind === 'bulk' ? job.bulkTimeoutMs : 0) + 30_000);
  hard.unref();
  void main(job).then((r) => process.send?.(r, () => process.exit(0)));
});
process.on('disconnect', () => process.exit(0));
