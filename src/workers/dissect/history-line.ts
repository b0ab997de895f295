// One line of turns and how a re-sent history continues it, by message signature (msgSig). Shared
// by the HTTP assembly (every request re-sends the history) and codex's WebSocket (a request with
// no previous_response_id re-sends the whole history, and so does a new socket of the same session).
import type { Turn } from '../../records.js';

/**
 * A turn of a line with its message signature. `optional`: a history that continues the line may
 * leave it out (a cut reply a client may or may not send back).
 */
export interface LineTurn { readonly turn: Turn; readonly sig: string; readonly optional: boolean }

/**
 * Where a history R (oldest first) continues the line T, by signature (read only as far as the
 * two match). Returns the line to keep and
 * the index in R from which R is new, or undefined when R has nothing in common with T:
 *   - R extends T → T is kept, R is new past what matched;
 *   - R is T minus its last reply → a retry/regenerate: that reply is dropped;
 *   - R diverges after a common start → the history was rewritten there (a compaction, an edited
 *     message): the line's turns from there on stay, superseded, and R goes on after them; when
 *     they are only the line's last reply, R's version of it replaces it.
 * A superseded turn is matched by no later history (a message repeated after the rewrite is new).
 * `start`: R is the history past its first `start.j` messages, which the line matches before index
 * `start.i` (the caller knows where); the returned `from` counts them. `at`: gets, at each matched
 * message's index in the history, its index in the line (the returned line keeps those places).
 */
export function continueLine(T: LineTurn[], R: readonly { readonly sig: string }[], start = { i: 0, j: 0 }, at?: number[]): { line: LineTurn[]; from: number } | undefined {
  let i = start.i, j = 0;
  while (i < T.length && j < R.length) {
    if (!T[i].turn.superseded && T[i].sig === R[j].sig) { if (at) at[start.j + j] = i; i++; j++; } else if (T[i].optional) i++; else break;
  }
  while (j === R.length && i < T.length && T[i].optional) i++;
  if (i === T.length) return { line: T, from: start.j + j };
  const rest = T.slice(i).filter((t) => !t.optional);
  if (j === R.length && rest.length === 1 && rest[0].turn.role === 'assistant') return { line: T.filter((t, k) => k < i || t.optional), from: start.j + j };
  if (start.j + j === 0) return undefined;
  // a client re-sending the line's last reply in its own form (Gemini CLI does) replaces it; a longer tail was rewritten
  if (rest.length === 1 && rest[0].turn.role === 'assistant') return { line: T.slice(0, i), from: start.j + j };
  return { line: [...T.slice(0, i), ...T.slice(i).map(superseded)], from: start.j + j };
}

/** The turn as kept after a rewritten history: optional (no history has to carry it) and never matched. */
export function superseded(t: LineTurn): LineTurn {
  return t.turn.superseded ? t : { turn: { ...t.turn, superseded: true }, sig: t.sig, optional: true };
}

/** The signature of the last instructions (system turn) in the line: clients re-send unchanged ones with every request. */
export function lastSystemSig(T: readonly LineTurn[]): string | undefined {
  for (let i = T.length - 1; i >= 0; i--) if (T[i].turn.role === 'system' && !T[i].turn.superseded) return T[i].sig;
  return undefined;
}
