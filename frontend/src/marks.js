// Suggestions and comment threads shown in the text as tracked changes: a suggestion's original
// struck through (a claim to check marked instead) with its replacement inserted after it and
// the card's own Accept/Reject as small buttons; a thread's passage highlighted. Where each one
// is comes from its anchors (Yjs relative positions made by the server), which follow everyone's
// edits; a card whose passage no longer reads as its original is marked outdated.

import * as Y from "yjs";
import { StateEffect, StateField } from "@codemirror/state";
import { Decoration, EditorView, WidgetType } from "@codemirror/view";

const setMarks = StateEffect.define();

// The editor extension that holds a section's marks (mapped through edits until marked again).
export const marks = StateField.define({
  create: () => Decoration.none,
  update(value, tr) {
    value = value.map(tr.changes);
    for (const effect of tr.effects) if (effect.is(setMarks)) value = effect.value;
    return value;
  },
  provide: (field) => EditorView.decorations.from(field),
});

class Insertion extends WidgetType {
  constructor(card) { super(); this.card = card; this.id = card.dataset.suggestion; }
  eq(other) { return other.id === this.id && other.card === this.card; }
  toDOM() {
    const span = document.createElement("span");
    span.className = "cm-suggestion";
    span.dataset.suggestion = this.id;
    const replacement = this.card.querySelector(".suggestion-replacement")?.textContent || "";
    if (replacement) {
      const ins = document.createElement("ins");
      ins.textContent = replacement;
      span.append(ins);
    }
    // The card's own forms, in its order, with their short marks ("check this" cards: keep first).
    for (const form of this.card.querySelectorAll("form.accept, form.reject")) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = `cm-suggestion-${form.classList.contains("accept") ? "accept" : "reject"}`;
      button.textContent = form.dataset.mark || "?";
      button.dataset.tone = form.dataset.tone || "";
      button.title = button.ariaLabel = form.dataset.title || "";
      button.addEventListener("click", () => form.requestSubmit());
      span.append(button);
    }
    return span;
  }
  ignoreEvent() { return true; }
}

const fromBase64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

// Where a card's passage is now in `ytext`, or null when it was edited (or is elsewhere).
function locate(card, ytext) {
  const { anchorStart, anchorEnd } = card.dataset;
  if (!anchorStart || !anchorEnd) return null;
  const [from, to] = [anchorStart, anchorEnd].map((encoded) => {
    const position = Y.createAbsolutePositionFromRelativePosition(Y.decodeRelativePosition(fromBase64(encoded)),
                                                                  ytext.doc);
    return position && position.type === ytext ? position.index : null;
  });
  if (from === null || to === null || from > to) return null;
  const original = card.querySelector(".suggestion-original, .comment-quote")?.textContent || "";
  return ytext.toString().slice(from, to) === original ? { from, to } : null;
}

function suggestionMarks(root, key, ytext) {
  const ranges = [];
  for (const card of root.querySelectorAll(`.suggestion[data-section-key="${key}"]`)) {
    const where = locate(card, ytext);
    card.classList.toggle("outdated", !where);
    const note = card.querySelector(".suggestion-where");
    if (note) note.textContent = where ? "(marked in the text)" : "Outdated: the text it would change was edited.";
    const accept = card.querySelector("form.accept");
    if (accept) accept.hidden = !where;
    if (!where) continue;
    if (where.to > where.from) {
      // A claim to check is marked, not struck through: removing it is only one of the answers.
      const marked = card.dataset.kind === "claim" ? "cm-check-claim" : "cm-suggested-deletion";
      ranges.push(Decoration.mark({ class: marked, attributes: { title: card.querySelector("p")?.textContent || "" } })
        .range(where.from, where.to));
    }
    ranges.push(Decoration.widget({ widget: new Insertion(card), side: 1 }).range(where.to));
  }
  return ranges;
}

function threadMarks(root, key, ytext) {
  const ranges = [];
  for (const card of root.querySelectorAll(`.comment-thread[data-section-key="${key}"]`)) {
    const where = locate(card, ytext);
    card.classList.toggle("outdated", !where);
    const note = card.querySelector(".comment-where");
    if (note) note.textContent = where ? "(highlighted in the text)" : "The passage was edited since.";
    if (where && where.to > where.from) {
      const title = card.querySelector("li.comment")?.textContent.replace(/\s+/g, " ").trim() || "";
      ranges.push(Decoration.mark({ class: "cm-commented", attributes: { title } }).range(where.from, where.to));
    }
  }
  return ranges;
}

// Mark the section `key`'s suggestions and threads (the cards under `root`) in its editor.
export function markSection(root, key, { view, ytext }) {
  const ranges = [...suggestionMarks(root, key, ytext), ...threadMarks(root, key, ytext)];
  view.dispatch({ effects: setMarks.of(Decoration.set(ranges, true)) });
}
