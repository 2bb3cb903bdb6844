// A form generated from a JSON schema (a node type's config_schema, or the DSL's error_policy):
// objects become fieldsets, arrays lists with add and remove, enums selects, strings text fields
// with {{ }} completion (code and templates in a monospace editor), free-form objects key/value
// rows. Each field carries data-field="<path>", the path the validate endpoint names, and shows
// the problems reported for it.

import { useRef, useState } from "react";
import { CodeEditor } from "./CodeEditor.jsx";
import { emptyOf } from "./model.js";

const CODE_FIELDS = new Set(["code", "template", "prompt", "system", "body", "content", "expression"]);

function resolve(schema, root) {
  let s = schema || {};
  while (s.$ref && root) s = root.$defs?.[s.$ref.replace("#/$defs/", "")] || {};
  return s;
}

function mainType(schema) {
  const types = [].concat(schema.type || []).filter((t) => t !== "null");
  return types[0] || (schema.properties ? "object" : schema.items ? "array" : null);
}

function domId(path) {
  return `field-${path.replace(/[^A-Za-z0-9_-]+/g, "-")}`;
}

function Problems({ path, ctx }) {
  const mine = ctx.issues.filter((issue) => issue.field === path);
  if (!mine.length) return null;
  return (
    <ul className="weft-field-issues" data-issues-for={path}>
      {mine.map((issue, i) => (
        <li key={i}>{issue.message}</li>
      ))}
    </ul>
  );
}

// A text input or textarea that offers the node's variables after "{{".
export function TemplateText({ id, value, onChange, multiline, code, vars, label, ...rest }) {
  const ref = useRef(null);
  const [menu, setMenu] = useState(null); // {prefix, options, index}
  const update = (text, caret) => {
    onChange(text);
    const before = text.slice(0, caret);
    const m = /\{\{\s*([A-Za-z0-9_.]*)$/.exec(before);
    if (m && vars.length) {
      const options = vars.filter((v) => v.startsWith(m[1]) && v !== m[1]);
      setMenu(options.length ? { typed: m[1], options, index: 0 } : null);
    } else setMenu(null);
  };
  const choose = (option) => {
    const el = ref.current;
    const caret = el.selectionStart;
    const before = value.slice(0, caret).replace(/[A-Za-z0-9_.]*$/, "");
    const after = value.slice(caret);
    const closing = /^\s*\}\}/.test(after) ? "" : " }}";
    const spaced = before.endsWith("{{") ? `${before} ` : before;
    const text = `${spaced}${option}${closing}${after}`;
    onChange(text);
    setMenu(null);
    const at = spaced.length + option.length + closing.length;
    requestAnimationFrame(() => {
      el.focus();
      el.setSelectionRange(at, at);
    });
  };
  const onKeyDown = (event) => {
    if (menu) {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        const step = event.key === "ArrowDown" ? 1 : -1;
        setMenu({ ...menu, index: (menu.index + step + menu.options.length) % menu.options.length });
        return;
      }
      if (event.key === "Enter" || event.key === "Tab") {
        event.preventDefault();
        choose(menu.options[menu.index]);
        return;
      }
      if (event.key === "Escape") {
        setMenu(null);
        return;
      }
    }
    if (code && event.key === "Tab" && !event.shiftKey) {
      event.preventDefault();
      const el = event.currentTarget;
      const { selectionStart: s, selectionEnd: e } = el;
      onChange(`${value.slice(0, s)}    ${value.slice(e)}`);
      requestAnimationFrame(() => el.setSelectionRange(s + 4, s + 4));
    }
  };
  const props = {
    id,
    ref,
    value: value ?? "",
    "aria-label": label,
    spellCheck: false,
    autoComplete: "off",
    onChange: (event) => update(event.target.value, event.target.selectionStart),
    onKeyDown,
    onBlur: () => setTimeout(() => setMenu(null), 150),
    ...rest,
  };
  return (
    <div className="weft-text">
      {multiline ? (
        <textarea {...props} className={code ? "weft-code" : undefined} rows={code ? 8 : 3} />
      ) : (
        <input type="text" {...props} />
      )}
      {menu && (
        <ul className="weft-complete" role="listbox" aria-label="Variables">
          {menu.options.map((option, i) => (
            <li
              key={option}
              role="option"
              aria-selected={i === menu.index}
              data-variable={option}
              onMouseDown={(event) => {
                event.preventDefault();
                choose(option);
              }}
            >
              {option}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

function AnyInput({ id, value, onChange, label }) {
  const shown = value === undefined ? "" : typeof value === "string" ? value : JSON.stringify(value);
  return (
    <input
      id={id}
      type="text"
      aria-label={label}
      value={shown}
      placeholder="text, number or JSON"
      onChange={(event) => {
        const raw = event.target.value;
        let parsed = raw;
        if (/^\s*(-?\d|\[|\{|true\b|false\b|null\b)/.test(raw)) {
          try {
            parsed = JSON.parse(raw);
          } catch {
            parsed = raw;
          }
        }
        onChange(raw === "" ? undefined : parsed);
      }}
    />
  );
}

function JsonText({ id, value, onChange, label }) {
  const [text, setText] = useState(() => (value === undefined ? "" : JSON.stringify(value, null, 2)));
  const [bad, setBad] = useState(false);
  return (
    <textarea
      id={id}
      className="weft-code"
      rows={4}
      aria-label={label}
      aria-invalid={bad}
      spellCheck={false}
      value={text}
      onChange={(event) => {
        setText(event.target.value);
        if (event.target.value.trim() === "") {
          setBad(false);
          onChange(undefined);
          return;
        }
        try {
          onChange(JSON.parse(event.target.value));
          setBad(false);
        } catch {
          setBad(true);
        }
      }}
    />
  );
}

function KeyValues({ path, value, onChange, ctx, valueSchema }) {
  const entries = Object.entries(value || {});
  const set = (list) => onChange(Object.fromEntries(list));
  return (
    <div className="weft-kv" data-kv={path}>
      {entries.map(([key, inner], i) => (
        <div className="weft-kv-row" key={i}>
          <input
            type="text"
            aria-label={`${path} key ${i + 1}`}
            data-kv-key={i}
            value={key}
            onChange={(event) => set(entries.map((e, j) => (j === i ? [event.target.value, e[1]] : e)))}
          />
          {typeof inner === "string" || inner === undefined ? (
            <TemplateText
              label={`${path}.${key}`}
              data-kv-value={i}
              value={inner ?? ""}
              vars={ctx.vars}
              onChange={(text) => set(entries.map((e, j) => (j === i ? [e[0], text] : e)))}
            />
          ) : (
            <AnyInput label={`${path}.${key}`} value={inner} onChange={(v) => set(entries.map((e, j) => (j === i ? [e[0], v] : e)))} />
          )}
          <button type="button" className="weft-icon" aria-label={`Remove ${key || "row"}`} onClick={() => set(entries.filter((_, j) => j !== i))}>
            ×
          </button>
        </div>
      ))}
      <button
        type="button"
        className="weft-add"
        data-add={path}
        onClick={() => {
          let k = entries.length + 1;
          while (entries.some(([key]) => key === `key_${k}`)) k++;
          set([...entries, [`key_${k}`, valueSchema?.type && valueSchema.type !== "string" ? emptyOf(valueSchema) : ""]]);
        }}
      >
        + entry
      </button>
    </div>
  );
}

export function Field({ name, schema: raw, value, onChange, path, required, ctx }) {
  const schema = resolve(raw, ctx.root);
  const type = mainType(schema);
  const id = domId(`${ctx.prefix}-${path}`);
  const label = (
    <span className="weft-label">
      {name}
      {required ? " *" : ""}
      {schema.description ? <span className="weft-hint" title={schema.description}> ⓘ</span> : null}
    </span>
  );
  let control;
  if (schema.enum) {
    control = (
      <select id={id} value={value === undefined ? "" : String(value)} onChange={(event) => onChange(event.target.value === "" ? undefined : schema.enum.find((o) => String(o) === event.target.value))}>
        {!required || value === undefined ? <option value="">—</option> : null}
        {schema.enum.map((option) => (
          <option key={String(option)} value={String(option)}>
            {String(option)}
          </option>
        ))}
      </select>
    );
  } else if (type === "string" && CODE_FIELDS.has(name)) {
    control = (
      <CodeEditor
        id={id}
        label={path}
        value={value ?? ""}
        language={name === "code" ? "python" : null}
        vars={ctx.vars}
        placeholder={name === "code" ? "def main(**inputs):\n    return {}" : "Text with {{ variables }}"}
        onChange={(text) => onChange(text === "" && !required ? undefined : text)}
      />
    );
  } else if (type === "string") {
    control = (
      <TemplateText
        id={id}
        label={path}
        value={value ?? ""}
        multiline={CODE_FIELDS.has(name)}
        code={name === "code"}
        vars={ctx.vars}
        onChange={(text) => onChange(text === "" && !required ? undefined : text)}
      />
    );
  } else if (type === "number" || type === "integer") {
    control = (
      <input
        id={id}
        type="number"
        step={type === "integer" ? 1 : "any"}
        value={value ?? ""}
        onChange={(event) => onChange(event.target.value === "" ? undefined : Number(event.target.value))}
      />
    );
  } else if (type === "boolean") {
    return (
      <div className="weft-field weft-check" data-field={path}>
        <label htmlFor={id}>
          <input id={id} type="checkbox" checked={value === true} onChange={(event) => onChange(event.target.checked)} /> {name}
        </label>
        <Problems path={path} ctx={ctx} />
      </div>
    );
  } else if (type === "object" && schema.properties) {
    return (
      <fieldset className="weft-fieldset" data-field={path}>
        <legend>{name}</legend>
        <Problems path={path} ctx={ctx} />
        <ObjectFields schema={schema} value={value || {}} onChange={onChange} path={path} ctx={ctx} />
      </fieldset>
    );
  } else if (type === "object") {
    const valueSchema = typeof schema.additionalProperties === "object" ? schema.additionalProperties : null;
    const plain = value === undefined || (value && typeof value === "object" && !Array.isArray(value));
    control = plain ? (
      <KeyValues path={path} value={value} onChange={(v) => onChange(Object.keys(v).length || required ? v : undefined)} ctx={ctx} valueSchema={valueSchema} />
    ) : (
      <JsonText id={id} label={path} value={value} onChange={onChange} />
    );
  } else if (type === "array" && schema.items && (resolve(schema.items, ctx.root).type || resolve(schema.items, ctx.root).enum)) {
    const list = Array.isArray(value) ? value : [];
    const itemSchema = resolve(schema.items, ctx.root);
    return (
      <fieldset className="weft-fieldset weft-list" data-field={path}>
        <legend>{name}{required ? " *" : ""}</legend>
        <Problems path={path} ctx={ctx} />
        {list.map((item, i) => (
          <div className="weft-list-item" key={i}>
            <Field
              name={`${name}[${i}]`}
              schema={itemSchema}
              value={item}
              path={`${path}[${i}]`}
              required
              ctx={ctx}
              onChange={(v) => onChange(list.map((old, j) => (j === i ? v : old)))}
            />
            <button type="button" className="weft-icon" aria-label={`Remove ${name}[${i}]`} onClick={() => onChange(list.filter((_, j) => j !== i))}>
              ×
            </button>
          </div>
        ))}
        <button type="button" className="weft-add" data-add={path} onClick={() => onChange([...list, emptyItem(itemSchema, list)])}>
          + {name}
        </button>
      </fieldset>
    );
  } else {
    const free = type === null && !schema.items;
    control = free ? <AnyInput id={id} label={path} value={value} onChange={onChange} /> : <JsonText id={id} label={path} value={value} onChange={onChange} />;
  }
  return (
    <div className="weft-field" data-field={path}>
      <label htmlFor={id}>{label}</label>
      {control}
      <Problems path={path} ctx={ctx} />
    </div>
  );
}

function emptyItem(schema, list) {
  if (mainType(schema) === "object") {
    const item = {};
    for (const name of schema.required || []) item[name] = emptyOf(resolve(schema.properties?.[name]));
    if (schema.properties?.id && typeof item.id === "string") item.id = `case_${list.length + 1}`;
    if (schema.properties?.name && typeof item.name === "string") item.name = `input_${list.length + 1}`;
    return item;
  }
  return emptyOf(schema);
}

export function ObjectFields({ schema, value, onChange, path, ctx }) {
  const properties = schema.properties || {};
  const required = new Set(schema.required || []);
  return Object.entries(properties).map(([name, inner]) => (
    <Field
      key={name}
      name={name}
      schema={inner}
      value={value?.[name]}
      path={path ? `${path}.${name}` : name}
      required={required.has(name)}
      ctx={ctx}
      onChange={(v) => {
        const next = { ...(value || {}) };
        if (v === undefined) delete next[name];
        else next[name] = v;
        onChange(next);
      }}
    />
  ));
}
