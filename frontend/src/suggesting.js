// Suggest mode: what a person types does not change the shared text; it becomes a draft change
// (the words deleted struck through, the words typed inserted, in their editor only) that is
// proposed as a suggestion, anchored like the reviewer's, once they pause. Others accept or
// reject it like any suggestion. Pure insertions are anchored on the word before them (a
// suggestion replaces words), so " really" typed after "loud" proposes "loud" -> "loud really".

import { EditorState, StateEffect, StateField } from "@codemirror/state";
import { Decoration, EditorView, WidgetType } from "@codemirror/view";

const PAUSE_MS = 1500;
const setDraft = StateEffect.define();

class Inserted extends WidgetType {
  constructor(text) { super(); this.text = text; }
  eq(other) { return other.text === this.text; }
  toDOM() {
    const ins = document.createElement("ins");
    ins.className = "cm-draft-insertion";
    ins.textContent = this.text;
    return ins;
  }
}

const draftField = StateField.define({
  create: () => null,  // { from, to, insert } in the document's coordinates, or null
  update(draft, tr) {
    for (const effect of tr.effects) if (effect.is(setDraft)) return effect.value;
    return draft && tr.docChanged ? { ...draft, from: tr.changes.mapPos(draft.from, -1),
                                      to: tr.changes.mapPos(draft.to, 1) } : draft;
  },
  provide: (field) => EditorView.decorations.from(field, (draft) => {
    if (!draft) return Decoration.none;
    const marks = [];
    if (draft.to > draft.from) marks.push(Decoration.mark({ class: "cm-draft-deletion" }).range(draft.from, draft.to));
    if (draft.insert) marks.push(Decoration.widget({ widget: new Inserted(draft.insert), side: -1 }).range(draft.to));
    return Decoration.set(marks, true);
  }),
});

// One typed change folded into the draft (null: it does not touch the draft; propose that first).
export function merged(draft, from, to, text) {
  if (!draft) return { from, to, insert: text };
  if (from === to && from >= draft.from && from <= draft.to) return { ...draft, insert: draft.insert + text };
  if (!text && to === draft.to && draft.insert) return { ...draft, insert: draft.insert.slice(0, -1) };  // backspace
  if (!text && to >= draft.from && from <= draft.to) return { ...draft, from: Math.min(from, draft.from),
                                                              to: Math.max(to, draft.to) };
  return null;
}

export class SuggestMode {
  // propose(el, { original, at, replacement }) sends one suggestion for the section `el`.
  constructor(propose) {
    this.on = false;
    this.propose = propose;
    this.views = new Map();  // view -> its section element
  }

  set(on) {
    this.on = on;
    if (!on) for (const view of this.views.keys()) this.flush(view);
  }

  extension(el) {
    let timer = null;
    return [
      draftField,
      EditorState.transactionFilter.of((tr) => {
        if (!this.on || !tr.docChanged || !(tr.isUserEvent("input") || tr.isUserEvent("delete"))) return tr;
        let draft = tr.startState.field(draftField);
        let earlier = null;
        tr.changes.iterChanges((from, to, _fromB, _toB, inserted) => {
          const next = merged(draft, from, to, inserted.toString());
          if (next === null) { earlier = draft; draft = { from, to, insert: inserted.toString() }; } else draft = next;
        });
        if (earlier) queueMicrotask(() => this.send(el, tr.startState, earlier));
        const at = draft.insert || draft.to > draft.from ? draft.from : tr.startState.selection.main.head;
        return { effects: setDraft.of(draft.insert || draft.to > draft.from ? draft : null), selection: { anchor: at } };
      }),
      EditorView.updateListener.of((update) => {
        this.views.set(update.view, el);
        if (!update.transactions.some((tr) => tr.effects.some((effect) => effect.is(setDraft)))) return;
        clearTimeout(timer);
        timer = setTimeout(() => this.flush(update.view), PAUSE_MS);
      }),
      EditorView.domEventHandlers({ blur: (_event, view) => { this.flush(view); } }),
    ];
  }

  flush(view) {
    const draft = view.state.field(draftField, false);
    if (!draft) return;
    view.dispatch({ effects: setDraft.of(null) });
    this.send(this.views.get(view), view.state, draft);
  }

  send(el, state, draft) {
    const fields = suggestion((from, to) => state.sliceDoc(from, to), draft);
    if (fields) this.propose(el, fields);
  }
}

// The suggestion a draft proposes, as the server takes it ({ original, at, replacement }), read
// from the text through `slice(from, to)`; null when there is nothing to propose. A pure
// insertion is anchored on the word before it (or after it, at the start): a suggestion replaces
// words.
export function suggestion(slice, draft) {
  let { from, insert } = draft;
  let original = slice(from, draft.to);
  if (!original) {
    const before = slice(Math.max(0, from - 60), from).match(/\S+\s*$/);
    const after = slice(from, from + 60).match(/^\s*\S+/);
    if (before) { from -= before[0].length; original = before[0]; insert = original + insert; }
    else if (after) { original = after[0]; insert += original; }
    else return null;  // an empty section: type it directly, there is nothing to suggest against
  }
  return original === insert ? null : { original, at: from, replacement: insert };
}
