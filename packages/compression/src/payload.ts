// The payload format: a 32-byte header, then the compressor's sections, padded to 4 bytes.
//
//   0  magic 'BRZ1'   4 version (2)   5 kind   6 reserved (0)   8 length (elements)
//   12 param0   16 param1   20 seedA   24 seedB   28 checksum of bytes [0, 28) and the body
//
// A decoder checks all of it before reading a section, so a truncated, altered or foreign
// payload is a CORRUPT_PAYLOAD error, never an out-of-bounds read.
import { CorruptPayloadError } from '@braid/collectives';
import { loadAddon } from '@braid/native';

export const HEADER_BYTES = 32;
const MAGIC = 0x315a5242; // 'BRZ1' little-endian
// Version 2: the checksum hashes 16 KiB chunks on their own (1 chained the whole body).
const VERSION = 2;

export const KINDS = ['none', 'fp16', 'bf16', 'topk', 'randomk', 'qsgd', 'int8', 'sign', 'powersgd'] as const;
export type CompressorName = (typeof KINDS)[number];

export interface Header {
  kind: CompressorName;
  length: number;
  param0: number;
  param1: number;
  seedA: number;
  seedB: number;
}

export const kernels = () => loadAddon().compress;

export function padded(bytes: number): number {
  return (bytes + 3) & ~3;
}

/** A zeroed payload with the header written (the checksum is filled in by seal). */
export function newPayload(header: Header, bodyBytes: number): Uint8Array {
  const payload = new Uint8Array(HEADER_BYTES + padded(bodyBytes));
  const view = new DataView(payload.buffer);
  view.setUint32(0, MAGIC, true);
  view.setUint8(4, VERSION);
  view.setUint8(5, KINDS.indexOf(header.kind));
  view.setUint32(8, header.length, true);
  view.setUint32(12, header.param0, true);
  view.setUint32(16, header.param1, true);
  view.setUint32(20, header.seedA >>> 0, true);
  view.setUint32(24, header.seedB >>> 0, true);
  return payload;
}

function checksumOf(payload: Uint8Array): number {
  const k = kernels();
  // The checksum covers the header's first 28 bytes and the body: hash each and combine.
  const head = k.checksum(payload.subarray(0, 28));
  const body = k.checksum(payload.subarray(HEADER_BYTES));
  return (Math.imul(head ^ 0x9e3779b9, 0x85ebca6b) ^ body) >>> 0;
}

export function seal(payload: Uint8Array): Uint8Array {
  new DataView(payload.buffer, payload.byteOffset).setUint32(28, checksumOf(payload), true);
  return payload;
}

/** Reads and checks a payload's header; `bodyBytes(header)` says how long the body must be. */
export function openPayload(payload: unknown, expected: CompressorName, bodyBytes: (h: Header) => number): { header: Header; payload: Uint8Array } {
  if (!(payload instanceof Uint8Array)) throw new CorruptPayloadError(`decompress: the payload must be a Uint8Array; got ${typeof payload}`);
  if (payload.length < HEADER_BYTES) throw new CorruptPayloadError(`decompress: the payload is ${payload.length} bytes, shorter than its ${HEADER_BYTES}-byte header (truncated?)`);
  // Sections are read through Float32Array / Uint32Array views, which need 4-byte alignment.
  const aligned = payload.byteOffset % 4 === 0 ? payload : payload.slice();
  const view = new DataView(aligned.buffer, aligned.byteOffset, aligned.byteLength);
  if (view.getUint32(0, true) !== MAGIC) throw new CorruptPayloadError('decompress: not a Braid compression payload (bad magic number)');
  const version = view.getUint8(4);
  if (version !== VERSION) throw new CorruptPayloadError(`decompress: payload format version ${version}; this build reads version ${VERSION}`);
  const kind = KINDS[view.getUint8(5)];
  if (kind === undefined || view.getUint16(6, true) !== 0) throw new CorruptPayloadError('decompress: the payload header is corrupted (unknown compressor)');
  const header: Header = {
    kind,
    length: view.getUint32(8, true),
    param0: view.getUint32(12, true),
    param1: view.getUint32(16, true),
    seedA: view.getUint32(20, true),
    seedB: view.getUint32(24, true),
  };
  if (view.getUint32(28, true) !== checksumOf(aligned)) {
    throw new CorruptPayloadError(`decompress: the payload's checksum does not match its contents (corrupted or truncated in transit; ${payload.length} bytes)`);
  }
  if (kind !== expected) throw new CorruptPayloadError(`decompress: this payload was made by the '${kind}' compressor, not '${expected}'`);
  let body: number;
  try {
    body = bodyBytes(header);
  } catch (err) {
    throw new CorruptPayloadError(`decompress: the payload's parameters are invalid (${(err as Error).message})`);
  }
  if (aligned.length !== HEADER_BYTES + padded(body)) {
    throw new CorruptPayloadError(`decompress: a '${kind}' payload of ${header.length} elements is ${HEADER_BYTES + padded(body)} bytes; this one is ${aligned.length}`);
  }
  return { header, payload: aligned };
}

// Per-call seeds: the stream advances with every call, so QSGD stays unbiased across steps.
export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

export function callSeeds(seed: number, call: number): [number, number] {
  const a = mix32((seed ^ mix32(call + 0x632be5ab)) >>> 0);
  const b = mix32((a + 0x9e3779b9 + call) >>> 0);
  return [a, b];
}
