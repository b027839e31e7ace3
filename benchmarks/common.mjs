// What every benchmark script reads its command line with, and the median its figures are.

/** `opt('--np', '2')`: the value after a flag, or the fallback; `args`: the arguments themselves. */
export function commandLine(argv = process.argv.slice(2)) {
  const opt = (name, fallback) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : fallback;
  };
  return { args: argv, opt };
}

/** The middle value (the upper one of the two middle values for an even count). */
export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
