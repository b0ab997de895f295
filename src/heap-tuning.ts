// V8 heap settings for `greytap serve`, applied at start-up before any worker exists (V8 flags are
// process-wide, so the capture workers' heaps get them too).
//
// Why: the forwarding thread keeps a small live heap (~10 MB) and allocates fast (a Buffer per
// TLS record, capture buffers of up to --max-body). V8 sizes the next old-generation limit from
// the live size with a factor it picks from GC speed — about 2.5× here — and starts incremental
// marking at once when that headroom is no larger than new space, which had grown to 16 MB
// (--trace-incremental-marking: "9MB / 25MB / 16MB slack"). Under a bulk download that meant a
// mark-compact every ~100 ms (≈90 in 9 s), with the concurrent marking threads using another
// sixth of a core; the TLS pipe in bench/ ran none. A fixed factor of 5× live leaves the headroom:
// on bench bulk-64m, mark-compacts 90 → 2–8 per run, greytap CPU per download −25 %. The price is
// a heap up to 5× the live data between full GCs: ~50 MB for the forwarding thread's ~10 MB
// (README, "Bounds"). Set here rather than on the node command line so every way of starting
// `greytap serve` gets it (--initial-old-space-size works too, but only as a node argument).
//
// Sweeping stays on the thread that owns the heap. V8's concurrent sweepers run on its platform
// threads, which serve every isolate at normal priority, so the capture workers' garbage too was
// swept at the agent's priority, not at --capture-nice. Under a bulk download those threads used
// ~27 ms of CPU per 256 MiB (the bench pipe's: 8); without concurrent (and ArrayBuffer) sweeping
// 11–14 ms, greytap CPU per download −3 % on average in four alternating pairs (bench bulk-256m,
// per-thread /proc counts), (a) unchanged. Concurrent marking stays on: --single-threaded-gc,
// which also turns it off, aborts V8 when set after start-up (a marking handle already exists).
import v8 from 'node:v8';

/** Old-generation growth after a full GC, as (1 + percent/100) × live size. */
export const HEAP_GROWING_PERCENT = 400;

export function tuneV8ForServe(): void {
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  v8.setFlagsFromString('--no-concurrent-sweeping');
  v8.setFlagsFromString('--no-concurrent-array-buffer-sweeping');
}
