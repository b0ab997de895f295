// GET / — one self-contained page (no build step, no external assets): the activity log (newest
// page from /api/transactions?before=…, then live from /api/events), a transaction's detail with
// headers and bodies, the WebSocket message view of a connection, and conversations.
// Everything user-controlled is inserted with textContent, never innerHTML.
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>greytap</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:13px/1.4 system-ui,sans-serif;margin:0;display:flex;flex-direction:column;height:100vh}
header{display:flex;gap:1em;align-items:center;padding:.4em .8em;background:#223;color:#eee}
header button{background:none;border:0;color:#aac;cursor:pointer;font:inherit}
header button.on{color:#fff;text-decoration:underline}
#status{margin-left:auto;font-size:12px;color:#9a9}
main{flex:1;display:flex;min-height:0}
#list{flex:1;overflow:auto;border-right:1px solid #ccc}
#detail{flex:1.2;overflow:auto;padding:.6em}
table{border-collapse:collapse;width:100%}
td,th{padding:2px 6px;border-bottom:1px solid #eee;text-align:left;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:28em}
tr.row{cursor:pointer} tr.row:hover{background:#f3f6ff} tr.sel{background:#dde6ff}
.err{color:#b00} .k-HTTP{color:#036} .k-WS_REQ{color:#060} .k-WS_RESP{color:#630} .k-WS_CTRL{color:#888}
pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap;word-break:break-all;max-height:40em;overflow:auto}
.msg{border-left:3px solid #ccc;margin:.3em 0;padding-left:.5em} .msg.client{border-color:#4a4} .msg.server{border-color:#a64}
.turn{margin:.5em 0;padding:.3em .5em;background:#fafafa;border-left:3px solid #88a} .turn.superseded{opacity:.6;border-left-style:dashed}
.sub{margin-left:1.5em}
h3{margin:.6em 0 .3em} a{color:#36c;cursor:pointer}
</style></head><body>
<header><b>greytap</b><button id="tab-act" class="on">Activity</button><button id="tab-conv">Conversations</button>
<a href="/ca.pem" style="color:#aac">CA certificate</a><a href="/metrics" style="color:#aac">metrics</a><span id="status">connecting…</span></header>
<main><div id="list"></div><div id="detail"><p>Select a record.</p></div></main>
<script>
"use strict";
const $ = (t, props, ...kids) => { const e = document.createElement(t); Object.assign(e, props || {}); for (const k of kids) e.append(k); return e; };
const listEl = document.getElementById('list'), detail = document.getElementById('detail'), statusEl = document.getElementById('status');
const MAX_ROWS = 2000;
let tab = 'act', tbody = null, es = null;
const seen = new Set();
async function get(u) { const r = await fetch(u); if (!r.ok) throw new Error(u + ': ' + r.status + ' ' + (await r.text())); return r.json(); }
function time(ts) { const d = new Date(ts); return d.toLocaleTimeString() + '.' + String(d.getMilliseconds()).padStart(3, '0'); }
function pretty(s) { try { return JSON.stringify(JSON.parse(s), null, 2); } catch { return s; } }
function size(n) { return n == null ? '' : n < 1024 ? n + ' B' : n < 1048576 ? (n / 1024).toFixed(1) + ' KiB' : (n / 1048576).toFixed(1) + ' MiB'; }
function what(r) { return r.kind === 'HTTP' ? r.method + ' ' + (r.status ?? '…') : r.direction + ' ' + r.opcode + (r.closeCode ? ' ' + r.closeCode : ''); }
function row(r) {
  const tr = $('tr', { className: 'row' + (r.error ? ' err' : '') });
  tr.dataset.id = r.id;
  tr.append($('td', { textContent: time(r.ts) }), $('td', { textContent: r.kind, className: 'k-' + r.kind }), $('td', { textContent: what(r) }),
    $('td', { textContent: r.host + ':' + r.port }), $('td', { textContent: r.path, title: r.path }),
    $('td', { textContent: size(r.kind === 'HTTP' ? r.respBodySize ?? r.respBytes : r.size) }), $('td', { textContent: r.error || '' }));
  tr.onclick = () => { for (const s of tbody.querySelectorAll('.sel')) s.classList.remove('sel'); tr.classList.add('sel'); showTransaction(r.id); };
  return tr;
}
function add(r) {
  if (!tbody || seen.has(r.id)) return;
  seen.add(r.id);
  tbody.append(row(r));
  while (tbody.rows.length > MAX_ROWS) { seen.delete(tbody.rows[0].dataset.id); tbody.rows[0].remove(); }
  if (listEl.scrollHeight - listEl.scrollTop - listEl.clientHeight < 80) listEl.scrollTop = listEl.scrollHeight;
}
async function activity() {
  tab = 'act'; seen.clear();
  tbody = $('tbody');
  listEl.replaceChildren($('table', {}, $('thead', {}, $('tr', {}, ...['time', 'kind', 'what', 'host', 'path', 'size', 'error'].map((h) => $('th', { textContent: h })))), tbody));
  const page = await get('/api/transactions?before=ffffffffffffffff&limit=500');
  for (const r of page.items) add(r);
  listEl.scrollTop = listEl.scrollHeight;
  if (!es) {
    es = new EventSource('/api/events');
    es.onopen = () => { statusEl.textContent = 'live'; };
    es.onerror = () => { statusEl.textContent = 'reconnecting…'; };
    for (const k of ['HTTP', 'WS_REQ', 'WS_RESP', 'WS_CTRL']) es.addEventListener(k, (ev) => { if (tab === 'act') add(JSON.parse(ev.data)); });
  }
}
function headers(title, hs) {
  const t = $('table');
  for (const [n, v] of hs || []) t.append($('tr', {}, $('td', { textContent: n }), $('td', { textContent: v, title: v })));
  return [$('h3', { textContent: title }), t];
}
function body(title, text, b64, n) {
  if (text == null && b64 == null) return [];
  return [$('h3', { textContent: title + ' (' + size(n ?? (text ?? b64).length) + (b64 != null ? ', base64' : '') + ')' }), $('pre', { textContent: text != null ? pretty(text) : b64 })];
}
async function showTransaction(id) {
  detail.replaceChildren($('p', { textContent: 'loading…' }));
  try {
    const r = await get('/api/transactions/' + id);
    const out = [$('h3', { textContent: r.kind + ' ' + what(r) + ' ' + r.scheme + '://' + r.host + ':' + r.port + r.path })];
    if (r.error) out.push($('p', { className: 'err', textContent: 'error: ' + r.error + (r.errorDetail ? ' — ' + r.errorDetail : '') }));
    const conn = $('a', { textContent: 'connection ' + r.conn });
    conn.onclick = () => showConnection(r.conn, r.kind === 'HTTP' ? r.id : r.upgrade);
    out.push($('p', {}, conn, ' · id ' + r.id + (r.durationMs != null ? ' · ' + r.durationMs + ' ms' : '') + (r.truncated ? ' · truncated' : '')));
    if (r.kind === 'HTTP') {
      if (r.status === 101) { const a = $('a', { textContent: 'WebSocket messages →' }); a.onclick = () => showConnection(r.conn, r.id); out.push($('p', {}, a)); }
      out.push(...headers('Request headers', r.reqHeaders), ...body('Request body', r.reqBody, r.reqBodyBase64, r.reqBodySize),
        ...headers('Response headers', r.respHeaders));
      if (r.respEvents) out.push($('h3', { textContent: 'Server-sent events (' + r.respEvents.length + ')' }), $('pre', { textContent: r.respEvents.map((e) => (e.event ? e.event + ': ' : '') + e.data).join('\\n') }));
      else out.push(...body('Response body', r.respBody, r.respBodyBase64, r.respBodySize));
    } else {
      out.push($('p', { textContent: 'seq ' + r.seq + ' · ' + r.frames + ' frame(s) · ' + r.wireBytes + ' wire bytes' + (r.compressed ? ' · compressed' : '') + (r.closeReason ? ' · reason: ' + r.closeReason : '') }));
      out.push(...body('Payload', r.body, r.bodyBase64, r.size));
    }
    detail.replaceChildren(...out);
  } catch (e) { detail.replaceChildren($('p', { className: 'err', textContent: String(e) })); }
}
async function showConnection(id, upgrade) {
  detail.replaceChildren($('p', { textContent: 'loading…' }));
  try {
    const c = await get('/api/connections/' + id);
    const out = [$('h3', { textContent: 'Connection ' + c.id + ' — ' + c.host + ':' + c.port + ' (' + c.mode + ', ' + c.listener + ')' }),
      $('p', { textContent: 'client ' + c.clientAddr + (c.clientUser ? ' as ' + c.clientUser : '') + ' · up ' + size(c.bytesUp) + ' · down ' + size(c.bytesDown) + (c.closeReason ? ' · ' + c.closeReason : '') })];
    const msgs = c.messages.filter((m) => !upgrade || m.upgrade === upgrade);
    out.push($('h3', { textContent: 'WebSocket messages (' + msgs.length + (c.messagesTruncated ? '+' : '') + ')' }));
    const payload = (m) => (m.body != null ? pretty(m.body) : m.bodyBase64 != null ? '[base64] ' + m.bodyBase64 : '');
    for (const m of msgs) {
      const pre = $('pre', { textContent: payload(m) });
      // past the response's body budget a message comes without its body: fetched when asked for
      if (m.body == null && m.bodyBase64 == null && m.size > 0 && c.bodiesOmitted) {
        const a = $('a', { textContent: 'load payload' });
        a.onclick = async () => { pre.textContent = payload(await get('/api/transactions/' + m.id)); };
        pre.replaceChildren(a);
      }
      out.push($('div', { className: 'msg ' + m.direction }, $('div', { textContent: (m.direction === 'client' ? '→ ' : '← ') + time(m.ts) + ' #' + m.seq + ' ' + m.opcode + ' ' + size(m.size) + (m.error ? ' [' + m.error + ']' : '') + (m.closeCode ? ' ' + m.closeCode + ' ' + (m.closeReason || '') : '') }), pre));
    }
    detail.replaceChildren(...out);
  } catch (e) { detail.replaceChildren($('p', { className: 'err', textContent: String(e) })); }
}
async function conversations() {
  tab = 'conv'; tbody = null;
  const t = $('tbody');
  // a page ends early when its conversations are large: "more" goes on from its cursor
  const page = async (after) => {
    const p = await get('/api/conversations?limit=500' + (after ? '&after=' + encodeURIComponent(after) : ''));
    for (const c of p.items) { // most recently updated first
      const tr = $('tr', { className: 'row' }, $('td', { textContent: time(c.updatedTs) }), $('td', { textContent: c.client }), $('td', { textContent: c.provider }),
        $('td', { textContent: c.model || '' }), $('td', { textContent: c.turns.length + ' turns' + (c.parent ? ' · sub-agent' : '') }));
      tr.onclick = () => showConversation(c.id);
      t.append(tr);
    }
    if (p.next) {
      const a = $('a', { textContent: 'more…' }), tr = $('tr', {}, $('td', { colSpan: 5 }, a));
      a.onclick = () => { tr.remove(); page(p.next).catch((e) => { t.append($('tr', {}, $('td', { colSpan: 5, className: 'err', textContent: String(e) }))); }); };
      t.append(tr);
    }
  };
  await page(null);
  listEl.replaceChildren($('table', {}, $('thead', {}, $('tr', {}, ...['updated', 'client', 'provider', 'model', 'turns'].map((h) => $('th', { textContent: h })))), t));
}
async function showConversation(id) {
  try {
    const c = await get('/api/conversations/' + id);
    const turns = (list) => list.map((turn) => {
      const d = $('div', { className: turn.superseded ? 'turn superseded' : 'turn' }, $('b', { textContent: turn.role }));
      if (turn.superseded) d.append(' · superseded: a later history no longer carries it (compacted or edited)');
      for (const b of turn.blocks) {
        const label = b.type === 'tool_call' ? 'tool call ' + b.name : b.type === 'tool_result' ? 'tool result ' + b.callId : b.type;
        const text = b.type === 'tool_call' ? JSON.stringify(b.arguments, null, 2) : b.type === 'tool_result' ? (typeof b.output === 'string' ? b.output : JSON.stringify(b.output, null, 2)) : b.text;
        d.append($('div', { textContent: label }), $('pre', { textContent: text }));
      }
      if (turn.usage) d.append($('div', { textContent: 'usage ' + JSON.stringify(turn.usage) }));
      return d;
    });
    const out = [$('h3', { textContent: c.client + ' · ' + c.provider + ' · ' + (c.model || '') })];
    if (c.parent) {
      const a = $('a', { textContent: 'conversation ' + c.parent });
      a.onclick = () => showConversation(c.parent);
      out.push($('p', { className: 'parent' }, 'a sub-agent, started by ', a));
    }
    out.push(...turns(c.turns));
    for (const sub of c.subagents || []) {
      out.push($('h4', { textContent: 'sub-agent of tool call ' + sub.callId + (sub.model ? ' · ' + sub.model : '') }), $('div', { className: 'sub' }, ...turns(sub.turns)));
    }
    detail.replaceChildren(...out);
  } catch (e) { detail.replaceChildren($('p', { className: 'err', textContent: String(e) })); }
}
const tabs = { act: document.getElementById('tab-act'), conv: document.getElementById('tab-conv') };
function select(name) { for (const [k, b] of Object.entries(tabs)) b.classList.toggle('on', k === name); (name === 'act' ? activity : conversations)().catch((e) => { listEl.textContent = String(e); }); }
tabs.act.onclick = () => select('act'); tabs.conv.onclick = () => select('conv');
select('act');
</script></body></html>
`;
