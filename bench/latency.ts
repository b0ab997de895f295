// Latency samples with bounded memory: every sample until the cap, then reservoir sampling
// (Vitter's algorithm R) so percentiles stay unbiased over a long run.
import type { LatencySummary } from './protocol.js';

const CAP = 1 << 20;

/** The middle value (the upper one of an even count): what the benches report over rounds. */
export function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[xs.length >> 1];
}

export class LatencyRecorder {
  private buf = new Float64Array(4096);
  private n = 0;
  private seen = 0;
  private sum = 0;

  add(ms: number): void {
    this.seen++;
    this.sum += ms;
    if (this.n < CAP) {
      if (this.n === this.buf.length) {
        const b = new Float64Array(Math.min(CAP, this.buf.length * 2));
        b.set(this.buf);
        this.buf = b;
      }
      this.buf[this.n++] = ms;
      return;
    }
    const j = Math.floor(Math.random() * this.seen);
    if (j < CAP) this.buf[j] = ms;
  }

  summary(): LatencySummary | null {
    if (this.n === 0) return null;
    const s = this.buf.slice(0, this.n).sort();
    const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
    return { n: this.seen, p50: at(0.5), p99: at(0.99), p999: at(0.999), mean: this.sum / this.seen };
  }
}
