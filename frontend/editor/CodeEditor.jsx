// A CodeMirror 6 editor for code (Python, highlighted) and templates, with {{ }} completion of
// the variables the node may read, undo history, and Tab to indent.

import { useEffect, useRef } from "react";
import { EditorState } from "@codemirror/state";
import { EditorView, keymap, lineNumbers, placeholder as placeholderText } from "@codemirror/view";
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { bracketMatching, defaultHighlightStyle, indentOnInput, syntaxHighlighting } from "@codemirror/language";
import { autocompletion, completionKeymap } from "@codemirror/autocomplete";
import { python } from "@codemirror/lang-python";

// After "{{" (and what is typed of a name): the node's variables, each closed with " }}".
function variableCompletions(varsRef) {
  return (context) => {
    const match = context.matchBefore(/\{\{\s*[A-Za-z0-9_.]*/);
    if (!match) return null;
    const typed = /[A-Za-z0-9_.]*$/.exec(match.text)[0];
    const from = match.to - typed.length;
    const lead = /\{\{$/.test(match.text.slice(0, match.text.length - typed.length)) ? " " : "";
    const closing = /^\s*\}\}/.test(context.state.sliceDoc(context.pos, context.pos + 8)) ? "" : " }}";
    return {
      from,
      options: varsRef.current.map((name) => ({ label: name, type: "variable", apply: `${lead}${name}${closing}` })),
      validFor: /^[A-Za-z0-9_.]*$/,
    };
  };
}

export function CodeEditor({ id, value, onChange, language, vars, label, placeholder }) {
  const host = useRef(null);
  const view = useRef(null);
  const applying = useRef(false);
  const onChangeRef = useRef(onChange);
  const varsRef = useRef(vars);
  onChangeRef.current = onChange;
  varsRef.current = vars;

  useEffect(() => {
    const extensions = [
      history(),
      indentOnInput(),
      bracketMatching(),
      syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
      // Only after "{{" does it offer anything, where Enter means "this one": no delay before it does.
      autocompletion({ override: [variableCompletions(varsRef)], icons: false, interactionDelay: 0 }),
      keymap.of([...completionKeymap, indentWithTab, ...defaultKeymap, ...historyKeymap]),
      EditorView.updateListener.of((update) => {
        if (update.docChanged && !applying.current) onChangeRef.current(update.state.doc.toString());
      }),
      EditorView.contentAttributes.of({ "aria-label": label || "", ...(id ? { id } : {}) }),
    ];
    if (language === "python") extensions.push(python(), lineNumbers());
    else extensions.push(EditorView.lineWrapping);
    if (placeholder) extensions.push(placeholderText(placeholder));
    view.current = new EditorView({ state: EditorState.create({ doc: value || "", extensions }), parent: host.current });
    return () => view.current.destroy();
    // The editor is made once; the value follows below.
  }, []);

  // A value changed from outside (undo on the canvas, the JSON view): the editor shows it.
  useEffect(() => {
    const v = view.current;
    const text = value || "";
    if (!v || v.state.doc.toString() === text) return;
    applying.current = true;
    try {
      v.dispatch({ changes: { from: 0, to: v.state.doc.length, insert: text } });
    } finally {
      applying.current = false;
    }
  }, [value]);

  return <div className="weft-cm" ref={host} data-code-editor={language || "template"} />;
}
