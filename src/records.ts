// Every record that crosses a boundary (main thread ↔ worker ↔ store ↔ API ↔ export) is typed here,
// once. Field names follow ../shared/DESIGN.md ("Records"); the API and `export --format jsonl`
// emit these objects as they are stored.

/** A header as seen on the wire: name case and order are kept. */
export type Header = [name: string, value: string];

/** Short error codes, the same in records, metrics labels and logs. */
export type ErrorCode =
  | 'queue_full' // capture dropped: over the capture memory bound (--max-capture-memory / --max-conn-capture-memory)
  | 'too_large' // body / message over --max-body: stored truncated
  | 'desynced' // context-takeover stream lost an earlier message: cannot inflate
  | 'worker_error' // a worker crashed or threw on this task
  | 'store_error' // the store refused the write (map full, disk full)
  | 'inflate_failed' // invalid DEFLATE data
  | 'invalid_utf8' // text message / close reason not valid UTF-8
  | 'bad_frame' // malformed WebSocket frame header (reserved opcode, RSV without extension, 64-bit length top bit…)
  | 'bad_http' // malformed HTTP/1.1 head or chunk framing
  | 'bad_socks' // SOCKS5 handshake refused: not SOCKS5, no acceptable method, failed authentication, unsupported command or address type
  | 'truncated_stream' // connection closed mid-message / mid-frame
  | 'decode_failed' // a content or transfer coding (gzip/br/deflate) is unknown or could not be undone
  | 'upstream_tls' // upstream certificate verification or handshake failed
  | 'upstream_unreachable' // dial failed
  | 'fd_limit' // dial failed in greytap itself: out of file descriptors (EMFILE, ENFILE)
  | 'client_tls'; // client rejected our certificate / handshake failed

export type Listener = 'http' | 'socks';
export type Scheme = 'http' | 'https' | 'ws' | 'wss';
export type RecordKind = 'HTTP' | 'WS_REQ' | 'WS_RESP' | 'WS_CTRL';

/** One accepted client connection (a CONNECT tunnel, a SOCKS5 session or a plain absolute-URI proxy connection). */
export interface ConnectionRecord {
  id: string;
  ts: number; // start, ms since epoch
  listener: Listener;
  clientAddr: string; // "ip:port" of the client
  clientUser?: string; // SOCKS5 username (the agent's identity, --socks-auth)
  host: string; // requested target host (before --map)
  port: number;
  dialed?: string; // "host:port" actually dialed when --map redirected it
  sni?: string;
  alpn?: string;
  intercepted: boolean; // TLS terminated by greytap
  mode: 'intercept' | 'tap' | 'raw'; // tap = plaintext HTTP inside the tunnel
  bytesUp: number; // client → server, wire bytes
  bytesDown: number; // server → client
  startTs: number;
  endTs?: number;
  closeReason?: string; // 'client_end' | 'server_end' | 'client_error' | 'server_error' | an ErrorCode …
  error?: ErrorCode;
}

interface TransactionBase {
  id: string; // sortable in commit order (see src/store/ids.ts)
  ts: number; // ms since epoch: request start (HTTP) or last byte of the message read (WS)
  kind: RecordKind;
  conn: string;
  host: string;
  port: number;
  scheme: Scheme;
  path: string;
  error?: ErrorCode;
  /** Free-form detail for `error` (e.g. zlib's message). */
  errorDetail?: string;
}

/** Decoded bytes: `body` when valid UTF-8, else `bodyBase64`. */
export interface Body {
  body?: string;
  bodyBase64?: string;
}

export interface SseEvent {
  event?: string;
  data: string;
  id?: string;
}

export interface HttpTransaction extends TransactionBase {
  kind: 'HTTP';
  method: string;
  status?: number; // absent when the upstream never answered
  statusText?: string;
  httpVersion: string;
  reqHeaders: Header[];
  respHeaders: Header[];
  reqBody?: string;
  reqBodyBase64?: string;
  respBody?: string;
  respBodyBase64?: string;
  respEvents?: SseEvent[]; // parsed when the response is text/event-stream
  reqBytes: number; // wire bytes of the request (head + body)
  respBytes: number;
  durationMs: number;
  truncated: boolean; // a body exceeded --max-body (or capture was cut short)
  reqBodySize?: number; // decoded size
  respBodySize?: number;
}

export type WsOpcodeName = 'text' | 'binary' | 'ping' | 'pong' | 'close';

export interface WsMessageRecord extends TransactionBase, Body {
  kind: 'WS_REQ' | 'WS_RESP' | 'WS_CTRL';
  upgrade: string; // id of the 101 HTTP transaction
  seq: number; // per connection and direction, from 0, in wire order (control frames included)
  direction: 'client' | 'server';
  opcode: WsOpcodeName;
  compressed: boolean;
  frames: number;
  wireBytes: number; // frame headers + payloads as on the wire
  size: number; // decoded bytes (before truncation)
  truncated: boolean;
  closeCode?: number;
  closeReason?: string;
}

export type TransactionRecord = HttpTransaction | WsMessageRecord;

// ── Conversations ────────────────────────────────────────────────────────────────────────────

export type ClientName = 'codex' | 'claude-code' | 'aider' | 'opencode' | 'gemini-cli' | 'qwen-code' | 'generic';
export type Provider = 'openai-responses' | 'openai-ws' | 'openai-chat' | 'anthropic' | 'gemini';

export type Block =
  | { type: 'text'; text: string; scaffolding?: boolean }
  | { type: 'reasoning'; text: string }
  | { type: 'tool_call'; callId: string; name: string; arguments: unknown; argumentsRaw?: string }
  | { type: 'tool_result'; callId: string; output: unknown; isError?: boolean; name?: string };

export interface Usage {
  inputTokens?: number;
  cachedTokens?: number;
  outputTokens?: number;
  reasoningTokens?: number;
  totalTokens?: number;
}

export interface Turn {
  role: 'user' | 'assistant' | 'system' | 'developer' | 'tool';
  blocks: Block[];
  usage?: Usage;
  responseId?: string;
  model?: string;
  source: string[]; // transaction ids this turn was built from
  incomplete?: string; // reason when the stream ended early
  error?: string; // the provider's error message when the response failed
  /**
   * A later history of the conversation no longer carries this turn (a compaction replaced the
   * turns before it with a summary, an earlier message was edited): kept where it was, as the
   * clients' own transcripts keep it, but no longer part of what the model is sent.
   */
  superseded?: true;
}

/** A sub-agent's own line of turns, under the tool call that started it (its result is the hand-back). */
export interface Subagent {
  callId: string;
  model?: string;
  turns: Turn[];
}

export interface Conversation {
  id: string;
  key: string; // the assembly key (e.g. "openai-ws:<prompt_cache_key>")
  client: ClientName;
  provider: Provider;
  model?: string;
  startedTs: number;
  updatedTs: number;
  turns: Turn[];
  /** the lines of the sub-agents the main line's tool calls started (Claude Code's Agent tool), by call */
  subagents?: Subagent[];
  /** the id of the conversation whose agent started this one (a codex sub-agent's parent thread); it may not be stored */
  parent?: string;
  incomplete?: string;
  /** assembler bookkeeping, not a conversation (per-connection WebSocket state, response-id pointers): lists skip it */
  internal?: boolean;
}
