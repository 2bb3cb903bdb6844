// The console's JavaScript: browser ES modules, checked with eslint's recommended rules. The
// workflow editor's source (frontend/, JSX) is checked too; its built bundle is not.
import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["static/console/editor/**", "node_modules/**"] },
  js.configs.recommended,
  {
    files: ["static/console/**/*.js"],
    languageOptions: {
      ecmaVersion: 2024,
      sourceType: "module",
      globals: globals.browser,
    },
  },
  {
    files: ["frontend/editor/**/*.{js,jsx}"],
    languageOptions: {
      ecmaVersion: 2024,
      sourceType: "module",
      globals: globals.browser,
      parserOptions: { ecmaFeatures: { jsx: true } },
    },
  },
  {
    files: ["frontend/*.mjs"],
    languageOptions: {
      ecmaVersion: 2024,
      sourceType: "module",
      globals: globals.node,
    },
  },
];
