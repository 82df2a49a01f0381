#!/bin/sh
# Copy the graph libraries the dashboard ships from npm (versions pinned by package-lock.json) into
# vendor/, which is committed: the package works offline and nothing is fetched at run time.
# Run after changing package.json: ./build.sh
set -eu
cd "$(dirname "$0")"
npm ci --ignore-scripts --no-audit --no-fund
mkdir -p vendor
cp node_modules/cytoscape/dist/cytoscape.min.js vendor/
cp node_modules/dagre/dist/dagre.min.js vendor/          # bundles graphlib and lodash
cp node_modules/cytoscape-dagre/cytoscape-dagre.js vendor/
for p in cytoscape dagre cytoscape-dagre graphlib lodash; do
  printf '%s %s\n' "$p" "$(node -p "require('./node_modules/$p/package.json').version")"
done > vendor/VERSIONS
rm -rf node_modules
