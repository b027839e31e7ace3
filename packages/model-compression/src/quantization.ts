// Post-training weight quantization into tfjs's own model.json format, as tensorflowjs_converter's
// --quantize_uint8 / --quantize_uint16 write it: each float32 weight tensor is stored as
// uint8/uint16 codes q with a per-tensor affine map value = q x scale + min in its weight spec
// ({ quantization: { dtype, scale, min } }), which tf.loadLayersModel decodes back to float32.
// The range is widened to hold 0 and nudged so that 0 is a code exactly: pruned weights stay zero.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { checkOptions, InvalidArgumentError } from '@braid/collectives';
import * as tf from '@tensorflow/tfjs-core';

export type QuantizationDtype = 'uint8' | 'uint16';

export interface QuantizeOptions {
  /** 'uint8' (4x smaller weights) or 'uint16' (2x). */
  dtype: QuantizationDtype;
  /** Which float32 weights to quantize (default: all). */
  quantize?: (weight: { name: string; shape: number[] }) => boolean;
}

export interface QuantizedModel {
  /** model.json + weights, ready for any tfjs IOHandler (tf.io.fromMemory, file://, ...). */
  artifacts: tf.io.ModelArtifacts;
  /** Weight bytes before and after. */
  originalBytes: number;
  bytes: number;
  /** originalBytes / bytes. */
  ratio: number;
  /** The largest |dequantized - original| over all weights. */
  maxError: number;
}

/** The parts of a LayersModel quantization uses (its save). */
export interface SavableModel {
  save(handler: tf.io.IOHandler, config?: { includeOptimizer?: boolean }): Promise<tf.io.SaveResult>;
}

/** The affine code of one tensor's values: q = round((v - min) / scale), with 0 exactly representable. */
export function quantizeValues(values: Float32Array, dtype: QuantizationDtype): { codes: Uint8Array | Uint16Array; scale: number; min: number } {
  const levels = dtype === 'uint8' ? 255 : 65535;
  let low = 0;
  let high = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isFinite(v)) throw new InvalidArgumentError(`quantization: a weight holds ${v}; only finite weights can be quantized`);
    if (v < low) low = v;
    if (v > high) high = v;
  }
  let scale = (high - low) / levels;
  if (scale === 0) scale = 1; // all zeros
  const zeroCode = Math.round(-low / scale);
  const min = -zeroCode * scale;
  const codes = dtype === 'uint8' ? new Uint8Array(values.length) : new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) codes[i] = Math.min(levels, Math.max(0, Math.round((values[i]! - min) / scale)));
  return { codes, scale, min };
}

/**
 * The model saved with quantized weights: `await quantizeModel(model, { dtype: 'uint8' })`, then
 * write `artifacts` with any IOHandler, e.g. `tf.io.withSaveHandler` or tfjs-node's `file://`.
 * The optimizer's state is not included.
 */
export async function quantizeModel(model: SavableModel, options: QuantizeOptions): Promise<QuantizedModel> {
  checkOptions('quantizeModel', options, ['dtype', 'quantize']);
  if (!model || typeof model.save !== 'function') throw new InvalidArgumentError('quantizeModel: pass a tfjs LayersModel');
  if (options?.dtype !== 'uint8' && options?.dtype !== 'uint16') {
    throw new InvalidArgumentError(`quantizeModel: dtype must be 'uint8' or 'uint16'; got ${JSON.stringify(options?.dtype)}`);
  }
  let saved: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      saved = artifacts;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
    { includeOptimizer: false },
  );
  if (!saved?.weightSpecs || saved.weightData === undefined) throw new InvalidArgumentError('quantizeModel: the model saved no weights');
  const specs = saved.weightSpecs;
  const data = saved.weightData instanceof ArrayBuffer ? saved.weightData : tf.io.concatenateArrayBuffers(saved.weightData as ArrayBuffer[]);
  const choose = options.quantize ?? (() => true);
  const parts: Uint8Array[] = [];
  const newSpecs: tf.io.WeightsManifestEntry[] = [];
  let offset = 0;
  let maxError = 0;
  for (const spec of specs) {
    if (spec.quantization) throw new InvalidArgumentError(`quantizeModel: weight ${spec.name} is quantized already`);
    const count = spec.shape.reduce((a, b) => a * b, 1);
    const bytes = count * 4; // float32 and int32: what LayersModel.save writes
    const raw = new Uint8Array(data, offset, bytes);
    offset += bytes;
    if (spec.dtype !== 'float32' || !choose({ name: spec.name, shape: [...spec.shape] })) {
      parts.push(raw.slice());
      newSpecs.push(spec);
      continue;
    }
    const values = new Float32Array(raw.slice().buffer);
    const { codes, scale, min } = quantizeValues(values, options.dtype);
    for (let i = 0; i < values.length; i++) maxError = Math.max(maxError, Math.abs(Math.fround(codes[i]! * scale + min) - values[i]!));
    parts.push(new Uint8Array(codes.buffer, codes.byteOffset, codes.byteLength));
    newSpecs.push({ ...spec, quantization: { dtype: options.dtype, scale, min } });
  }
  if (offset !== data.byteLength) throw new InvalidArgumentError(`quantizeModel: the weight specs cover ${offset} bytes of ${data.byteLength}; this model's weights are not plain float32/int32`);
  const weightData = tf.io.concatenateArrayBuffers(parts.map((p) => p.slice().buffer));
  return {
    artifacts: { ...saved, weightSpecs: newSpecs, weightData },
    originalBytes: data.byteLength,
    bytes: weightData.byteLength,
    ratio: data.byteLength / weightData.byteLength,
    maxError,
  };
}

/**
 * Writes artifacts as model.json + weights.bin, the layout tfjs-node's `file://` handler writes
 * and `tf.loadLayersModel('file://<folder>/model.json')` reads (tfjs-node), or any loader of
 * that layout (@braid/trainer's checkpointLoader). Returns the two files' sizes.
 */
export function writeModelFolder(artifacts: tf.io.ModelArtifacts, folder: string): { modelJsonBytes: number; weightBytes: number } {
  const weightData = artifacts.weightData === undefined ? new ArrayBuffer(0) : artifacts.weightData instanceof ArrayBuffer ? artifacts.weightData : tf.io.concatenateArrayBuffers(artifacts.weightData as ArrayBuffer[]);
  const modelJson: Record<string, unknown> = {
    modelTopology: artifacts.modelTopology,
    format: artifacts.format,
    generatedBy: artifacts.generatedBy,
    convertedBy: artifacts.convertedBy ?? null,
    weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs ?? [] }],
  };
  if (artifacts.trainingConfig) modelJson.trainingConfig = artifacts.trainingConfig;
  mkdirSync(folder, { recursive: true });
  const text = JSON.stringify(modelJson);
  writeFileSync(join(folder, 'model.json'), text);
  writeFileSync(join(folder, 'weights.bin'), new Uint8Array(weightData));
  return { modelJsonBytes: Buffer.byteLength(text), weightBytes: weightData.byteLength };
}
