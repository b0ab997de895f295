// Message bodies shaped like agent traffic: JSON with words from a small vocabulary, so deflate
// finds what it finds in real LLM events (~3–4×), and no two messages in a 32 KiB window repeat
// (context takeover must not get free matches from an identical previous message).

const WORDS = ('the model response delta item tool call function arguments reasoning summary output text content ' +
  'assistant user system message token usage input cached completed created id type index status name file path ' +
  'line error result value read write search query patch diff apply shell command exit code stdout stderr').split(' ');

/** Deterministic PRNG (mulberry32): the same bodies every run, no crypto cost. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One JSON message of exactly `bytes` bytes (≥ 64). */
export function jsonMessage(bytes: number, seed: number): Buffer {
  const r = prng(seed);
  const head = `{"type":"response.output_text.delta","item_id":"msg_${seed.toString(36).padStart(8, '0')}","seq":${seed},"delta":"`;
  const tail = '"}';
  let text = '';
  const want = bytes - head.length - tail.length;
  while (text.length < want) text += WORDS[Math.floor(r() * WORDS.length)] + ' ';
  return Buffer.from(head + text.slice(0, Math.max(0, want)) + tail);
}

/** A pool of distinct messages to cycle through: 256 × 1 KiB spans 8 deflate windows. */
export function messagePool(bytes: number, count = bytes >= 32768 ? 8 : 256): Buffer[] {
  return Array.from({ length: count }, (_, i) => jsonMessage(bytes, i + 1));
}
