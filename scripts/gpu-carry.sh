#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh needs on a GPU machine that has no Node.js and no network
# (the `device` tool's): a node binary (xz), the Node-API headers, and it lists the paths to carry.
#   bash scripts/gpu-carry.sh     then carry: .carry node_modules/node-addon-api node_modules/@braid packages/collectives/dist packages/compression/dist
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.carry/' .git/info/exclude 2>/dev/null || echo '/.carry/' >>.git/info/exclude
mkdir -p .carry/include
xz -T0 -c "$(command -v node)" >.carry/node.xz
node_include=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")/include/node
[ -f "$node_include/node_api.h" ] || node_include=/usr/include/node
for h in node_api.h node_api_types.h js_native_api.h js_native_api_types.h; do cp "$node_include/$h" .carry/include/; done
npm run build --workspace @braid/collectives >/dev/null
npm run build --workspace @braid/compression >/dev/null
echo "carry: .carry node_modules/node-addon-api node_modules/@braid packages/collectives/dist packages/compression/dist ($(du -sh .carry | cut -f1) in .carry)"
