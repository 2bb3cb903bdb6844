// Builds the workflow editor (frontend/editor/) into static/console/editor/: editor.js (one
// self-contained ES module, minified), editor.css, and LICENSES.txt (the license of every
// package in the bundle, read from node_modules). The output is committed; the build is
// deterministic, so CI rebuilds it and checks that `git diff --exit-code` finds nothing.
//
//   npm run build:editor

import { build } from "esbuild";
import { readFileSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const outdir = join(root, "static/console/editor");

const result = await build({
  absWorkingDir: root,
  entryPoints: { editor: "frontend/editor/index.jsx" },
  outdir,
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  minify: true,
  jsx: "automatic",
  charset: "utf8",
  legalComments: "none",
  sourcemap: false,
  metafile: true,
  define: { "process.env.NODE_ENV": '"production"' },
  banner: { js: "/* Weft workflow editor: built by `npm run build:editor` from frontend/editor/. Licenses: LICENSES.txt */", css: "/* Weft workflow editor: built from frontend/editor/. Licenses: LICENSES.txt */" },
  logLevel: "warning",
});

// Every package whose code is in the bundle, with its version and license text.
// A package's prebuilt file may inline others: their notices are in <file>.LEGAL.txt beside it.
const packages = new Map();
const legal = new Map();
for (const input of Object.keys(result.metafile.inputs)) {
  const m = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
  if (!m) continue;
  const dir = join(root, input.slice(0, m.index + m[0].length));
  if (!packages.has(m[1])) packages.set(m[1], dir);
  if (existsSync(join(root, `${input}.LEGAL.txt`))) legal.set(m[1], [...(legal.get(m[1]) || []), `${input}.LEGAL.txt`].sort());
}
const sections = [...packages.entries()]
  .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  .map(([name, dir]) => {
    const meta = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
    const file = readdirSync(dir)
      .filter((f) => /^(licen[sc]e|copying)(\.(md|txt))?$/i.test(f))
      .sort()[0];
    const text = file && existsSync(join(dir, file)) ? readFileSync(join(dir, file), "utf8").trim() : `License: ${meta.license} (no license file in the package)`;
    const inlined = (legal.get(name) || []).map((f) => `\nNotices of the code inlined in ${f.replace(/^.*node_modules\//, "")}:\n\n${readFileSync(join(root, f), "utf8").trim()}\n`);
    return `${"=".repeat(78)}\n${name} ${meta.version} (${meta.license})\n${"=".repeat(78)}\n\n${text}\n${inlined.join("")}`;
  });
writeFileSync(
  join(outdir, "LICENSES.txt"),
  `The packages bundled into editor.js and editor.css (built from frontend/editor/ by \`npm run build:editor\`),\nwith their licenses.\n\n${sections.join("\n")}`,
);
const sizes = Object.entries(result.metafile.outputs).map(([file, out]) => `${relative(root, join(root, file))} ${out.bytes} bytes`);
console.log(sizes.join("\n"));
console.log(`LICENSES.txt: ${packages.size} packages`);
