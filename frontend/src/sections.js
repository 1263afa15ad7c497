// The leaf sections' editors: one CodeMirror editor per section on the page, bound to its Yjs
// text (people see each other's cursors and names), made when the section appears and dropped
// when it leaves the outline. A section an agent is writing (the shared `writers` map) shows
// who writes it and is read-only; the server refuses edits there too.

import { Compartment, EditorState } from "@codemirror/state";
import { EditorView, keymap, placeholder } from "@codemirror/view";
import { defaultKeymap } from "@codemirror/commands";
import { yCollab, yUndoManagerKeymap } from "y-codemirror.next";
import { markSection, marks } from "./marks.js";

const words = (text) => text.split(/\s+/).filter(Boolean).length;
const later = (fn) => setTimeout(fn, 0);  // never inside CodeMirror's own update

export class SectionEditors {
  constructor(root, { ydoc, awareness, suggesting, canEdit }) {
    Object.assign(this, { root, ydoc, awareness, suggesting, canEdit });
    this.writers = ydoc.getMap("writers");
    this.editors = new Map();  // section key -> { el, view, lock, hint, host, ytext }
    this.synced = false;  // the editors hold the whole shared text (counts and marks wait for it)
  }

  // An editor for every leaf section now on the page; none for those no longer there.
  bind() {
    const present = new Set();
    for (const el of this.root.querySelectorAll(".live-section[data-section-key]")) {
      present.add(el.dataset.sectionKey);
      if (!this.editors.has(el.dataset.sectionKey)) this.make(el);
    }
    for (const [key, editor] of this.editors) {
      if (!present.has(key)) { editor.view.destroy(); this.editors.delete(key); }  // deleted from the outline
    }
  }

  make(el) {
    const key = el.dataset.sectionKey;
    const ytext = this.ydoc.getText(`section:${key}`);
    const [lock, hint] = [new Compartment(), new Compartment()];
    const host = el.querySelector(".live-editor");
    const view = new EditorView({
      parent: host,
      state: EditorState.create({
        doc: ytext.toString(),
        extensions: [
          keymap.of([...yUndoManagerKeymap, ...defaultKeymap]),
          EditorView.lineWrapping,
          EditorView.contentAttributes.of({ "aria-label": `Text of ${el.dataset.heading}` }),
          hint.of(placeholder(this.emptyHint(key, host))),
          lock.of(this.editable(key)),
          EditorView.updateListener.of((update) => { if (update.selectionSet) selected(el, update.state); }),
          this.suggesting.extension(el),
          marks,
          yCollab(ytext, this.awareness),
        ],
      }),
    });
    ytext.observe(() => { this.count(el, ytext); later(() => this.mark(key)); });
    this.editors.set(key, { el, view, lock, hint, host, ytext });
    if (this.synced) el.closest(".doc-section")?.querySelector("details.formatted")?.removeAttribute("open");
  }

  editable(key) {
    const free = this.canEdit && !this.writers.has(key);
    return [EditorView.editable.of(free), EditorState.readOnly.of(!free)];
  }

  // What an empty section says: not "Type here" while an agent holds it.
  emptyHint(key, host) {
    const writer = this.writers.get(key);
    if (writer) return `${writer.name || "An agent"} is writing this section; its text appears here as it comes.`;
    return host.dataset.placeholder || "";
  }

  // Each editor locked or free as the writers map and this person's rights say, with its badge.
  refreshLocks() {
    for (const [key, editor] of this.editors) {
      editor.view.dispatch({ effects: [editor.lock.reconfigure(this.editable(key)),
                                       editor.hint.reconfigure(placeholder(this.emptyHint(key, editor.host)))] });
      const badge = editor.el.querySelector(".writer-badge");
      const writer = this.writers.get(key);
      badge.hidden = !writer;
      if (writer) {
        badge.querySelector(".writer-name").textContent = `${writer.name || "An agent"} is writing…`;
        badge.style.borderColor = writer.color || "#8e24aa";
      }
      editor.el.classList.toggle("being-written", Boolean(writer));
      const status = editor.el.closest(".doc-section")?.querySelector(".section-status");
      if (status && writer) { status.textContent = "Writing"; status.className = "badge badge-writing section-status"; }
    }
  }

  // The section's word count and bar, and the document's total.
  count(el, ytext) {
    if (!this.synced) return;
    const section = el.closest(".doc-section");
    const count = words(ytext.toString());
    const shown = section?.querySelector(".live-words");
    if (shown) shown.textContent = String(count);
    const bar = section?.querySelector("progress.words");
    if (bar) bar.value = Math.min(count, Number(bar.max));
    const total = document.getElementById("doc-words");
    if (total) {
      let sum = Number(total.dataset.fixedWords || 0);
      for (const editor of this.editors.values()) sum += words(editor.ytext.toString());
      total.textContent = String(sum);
    }
  }

  mark(key) {
    const editor = this.editors.get(key);
    if (editor && this.synced) markSection(this.root, key, editor);
  }

  // Counts and marks again (after a sync, or after the server's regions were swapped in).
  renew() {
    for (const [key, { el, ytext }] of this.editors) { this.count(el, ytext); this.mark(key); }
  }
}

// The words a person selects fill their section's "Suggest a change" and "Ask an agent" forms
// (offsets in UTF-16 units, as the server's selection_anchor reads them).
function selected(el, state) {
  const range = state.selection.main;
  if (range.empty) return;
  for (const form of el.closest(".doc-section")?.querySelectorAll("form.selection-form") || []) {
    form.elements.original.value = state.sliceDoc(range.from, range.to);
    form.elements.at.value = String(range.from);
  }
}
