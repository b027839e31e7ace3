// Charts for the benchmarks: a Vega-Lite spec compiled and rendered headless by `vega` to SVG,
// and to PNG with rsvg-convert (Debian's librsvg2-bin) when it is installed, to look at.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';

import * as vega from 'vega';
import { compile } from 'vega-lite';

/** Renders `spec` (Vega-Lite) to `svgPath`, and beside it a .png; returns the paths written. */
export async function renderChart(spec, svgPath) {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  writeFileSync(svgPath, svg);
  const written = [svgPath];
  const pngPath = svgPath.replace(/\.svg$/, '.png');
  const png = spawnSync('rsvg-convert', ['-b', 'white', '-o', pngPath, svgPath]);
  if (png.status === 0) written.push(pngPath);
  return written;
}
