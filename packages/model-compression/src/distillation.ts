// Knowledge distillation (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
// Network", 2015): the student learns from the teacher's softened outputs as well as the labels,
//   loss = alpha x CE(labels, student) + (1 - alpha) x T^2 x KL(teacher_T || student_T),
// where x_T is softmax(log(x) / T), the outputs at temperature T (the T^2 keeps the soft term's
// gradients at the hard term's scale as T changes).
//
// A Keras loss sees the labels and the student's outputs, not the inputs the teacher needs, so the
// loss is told each batch's inputs first: @braid/trainer's fit does it (on each rank, for that
// rank's shard of the batch), a custom loop calls prepareBatch(x) before each step. A batch
// without prepared inputs (evaluation: fit's validation, model.evaluate) gets the hard term
// alone, the student's own loss on the labels, as Keras's Distiller evaluates.
import { checkOptions, InvalidArgumentError } from '@braid/collectives';
import * as tf from '@tensorflow/tfjs-core';

/** The mark @braid/trainer's fit looks for: a loss that wants each training batch's inputs first. */
export const BATCH_AWARE_LOSS = Symbol.for('braid.batchAwareLoss');

export interface DistillationOptions {
  /** The trained model to learn from (anything with predict: a LayersModel). */
  teacher: { predict(x: tf.Tensor | tf.Tensor[]): tf.Tensor | tf.Tensor[] };
  /** Softening temperature T (default 4). */
  temperature?: number;
  /** The hard (label) term's weight; 1 - alpha goes to the teacher's (default 0.1). */
  alpha?: number;
  /** What the teacher and the student output: 'probabilities' (a softmax layer, the default) or 'logits'. */
  teacherOutputs?: 'probabilities' | 'logits';
  studentOutputs?: 'probabilities' | 'logits';
}

export interface DistillationLoss {
  /** The per-example loss, for model.compile({ loss }). */
  (yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor;
  /** Runs the teacher on the next training batch's inputs (replacing the previous batch's). */
  prepareBatch(x: tf.Tensor | tf.Tensor[]): void;
  /** Frees the prepared batch; the loss is the hard term alone until the next prepareBatch. */
  releaseBatch(): void;
  /** Batches that got the teacher's term, and those that did not (evaluation). */
  readonly stats: { distilled: number; labelsOnly: number };
  readonly [BATCH_AWARE_LOSS]: true;
}

const EPSILON = 1e-7; // as Keras clips probabilities before a log

export function distillationLoss(options: DistillationOptions): DistillationLoss {
  checkOptions('distillationLoss', options, ['teacher', 'temperature', 'alpha', 'teacherOutputs', 'studentOutputs']);
  const { teacher } = options;
  if (!teacher || typeof teacher.predict !== 'function') throw new InvalidArgumentError('distillationLoss: teacher must be a trained model (something with predict)');
  const temperature = options.temperature ?? 4;
  if (typeof temperature !== 'number' || !(temperature > 0) || !Number.isFinite(temperature)) {
    throw new InvalidArgumentError(`distillationLoss: temperature must be a positive number; got ${JSON.stringify(options.temperature)}`);
  }
  const alpha = options.alpha ?? 0.1;
  if (typeof alpha !== 'number' || !(alpha >= 0 && alpha <= 1)) throw new InvalidArgumentError(`distillationLoss: alpha must be in [0, 1]; got ${JSON.stringify(options.alpha)}`);
  for (const key of ['teacherOutputs', 'studentOutputs'] as const) {
    const v = options[key];
    if (v !== undefined && v !== 'probabilities' && v !== 'logits') throw new InvalidArgumentError(`distillationLoss: ${key} must be 'probabilities' or 'logits'; got ${JSON.stringify(v)}`);
  }
  // Log-probabilities up to a constant per row: what softmax(. / T) needs.
  const logits = (t: tf.Tensor, kind: 'probabilities' | 'logits' | undefined) => ((kind ?? 'probabilities') === 'logits' ? t : tf.log(tf.clipByValue(t, EPSILON, 1)));
  let prepared: tf.Tensor | undefined; // the teacher's softened probabilities for the prepared batch
  const stats = { distilled: 0, labelsOnly: 0 };

  const loss = ((yTrue: tf.Tensor, yPred: tf.Tensor) =>
    tf.tidy(() => {
      const studentLog = logits(yPred, options.studentOutputs);
      const hard = tf.neg(tf.sum(tf.mul(yTrue, tf.logSoftmax(studentLog)), -1));
      if (!prepared) {
        stats.labelsOnly++;
        return hard;
      }
      if (prepared.shape[0] !== yPred.shape[0]) {
        throw new InvalidArgumentError(
          `distillationLoss: the prepared batch has ${prepared.shape[0]} rows but the loss got ${yPred.shape[0]}; call prepareBatch(x) with the inputs of the batch being trained`,
        );
      }
      stats.distilled++;
      const studentSoft = tf.logSoftmax(tf.div(studentLog, temperature));
      const teacherLog = tf.log(tf.clipByValue(prepared, EPSILON, 1));
      const kl = tf.sum(tf.mul(prepared, tf.sub(teacherLog, studentSoft)), -1);
      return tf.add(tf.mul(hard, alpha), tf.mul(kl, (1 - alpha) * temperature * temperature));
    })) as DistillationLoss;

  Object.defineProperties(loss, {
    prepareBatch: {
      value: (x: tf.Tensor | tf.Tensor[]) => {
        const next = tf.tidy(() => {
          const out = teacher.predict(x);
          if (Array.isArray(out)) throw new InvalidArgumentError('distillationLoss: the teacher has several outputs; distill from a model with one');
          return tf.softmax(tf.div(logits(out, options.teacherOutputs), temperature));
        });
        prepared?.dispose();
        prepared = next;
      },
    },
    releaseBatch: {
      value: () => {
        prepared?.dispose();
        prepared = undefined;
      },
    },
    stats: { value: stats },
    [BATCH_AWARE_LOSS]: { value: true },
  });
  return loss;
}
