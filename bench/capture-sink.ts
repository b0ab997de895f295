// The baseline worker of bench/capture.ts: receives a batch (Piscina's deserialisation and the
// task round trip, as the capture worker pays them) and returns, decoding and storing nothing.
export default function receive(task: { parts?: unknown[] }): number {
  return task.parts?.length ?? 0;
}
