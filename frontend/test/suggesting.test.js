// Suggest mode's pure parts: typing folded into one draft, and the suggestion a draft proposes.
import assert from "node:assert/strict";
import { test } from "node:test";
import { merged, suggestion } from "../src/suggesting.js";

const slicer = (text) => (from, to) => text.slice(from, to);

// The typed text is not in the document (the editor shows it as a widget, the cursor before it),
// so each letter comes at the draft's place.
test("typing on folds into the draft, a backspace takes its last letter, a far edit starts another", () => {
  let draft = merged(null, 10, 10, "r");
  draft = merged(draft, 10, 10, "e");
  assert.deepEqual(draft, { from: 10, to: 10, insert: "re" });
  assert.deepEqual(merged(draft, 9, 10, ""), { from: 10, to: 10, insert: "r" });
  assert.equal(merged(draft, 40, 40, "x"), null);
});

test("deleting next to the draft widens what it replaces", () => {
  assert.deepEqual(merged({ from: 10, to: 14, insert: "" }, 14, 18, ""), { from: 10, to: 18, insert: "" });
});

test("a replacement proposes the words it replaces", () => {
  const text = "Gulls are loud birds.";
  assert.deepEqual(suggestion(slicer(text), { from: 10, to: 14, insert: "noisy" }),
                   { original: "loud", at: 10, replacement: "noisy" });
});

test("a pure insertion is anchored on the word before it, or after it at the start", () => {
  const text = "Gulls are loud birds.";
  assert.deepEqual(suggestion(slicer(text), { from: 14, to: 14, insert: " really" }),
                   { original: "loud", at: 10, replacement: "loud really" });
  assert.deepEqual(suggestion(slicer(text), { from: 0, to: 0, insert: "Most " }),
                   { original: "Gulls", at: 0, replacement: "Most Gulls" });
});

test("nothing is proposed in an empty section, or when the text would not change", () => {
  assert.equal(suggestion(slicer(""), { from: 0, to: 0, insert: "Gulls" }), null);
  assert.equal(suggestion(slicer("Gulls fly."), { from: 0, to: 5, insert: "Gulls" }), null);
});
