// The events socket's numbering: which regions each event has the page fetch, and what it shows.
import assert from "node:assert/strict";
import { test } from "node:test";
import EVENTS from "../src/events.json" with { type: "json" };
import { plan } from "../src/follow.js";
import { ALL } from "../src/regions.js";

test("the next event fetches its own regions and is then what the page shows", () => {
  assert.deepEqual(plan({ type: EVENTS.RUN_PROGRESS, seq: 5 }, 4), { seq: 5, parts: ["runs"] });
  assert.deepEqual(plan({ type: EVENTS.COMMENTS_CHANGED, seq: 6 }, 5), { seq: 6, parts: ["body"] });
});

test("an event the page already shows changes nothing", () => {
  assert.deepEqual(plan({ type: EVENTS.OUTLINE_CHANGED, seq: 4 }, 4), { seq: 4, parts: [] });
  assert.deepEqual(plan({ type: EVENTS.OUTLINE_CHANGED, seq: 2 }, 4), { seq: 4, parts: [] });
});

test("a gap in the numbers re-reads everything", () => {
  assert.deepEqual(plan({ type: EVENTS.RUN_PROGRESS, seq: 9 }, 4), { seq: 9, parts: ALL });
});

test("hello re-reads everything only when something was sent since the page was rendered", () => {
  assert.deepEqual(plan({ type: EVENTS.HELLO, seq: 7 }, 4), { seq: 4, parts: ALL });  // the swap brings the number
  assert.deepEqual(plan({ type: EVENTS.HELLO, seq: 4 }, 4), { seq: 4, parts: [] });
});

test("a type the page does not know re-reads everything", () => {
  assert.deepEqual(plan({ type: "something.new", seq: 5 }, 4), { seq: 5, parts: ALL });
});

test("every type the server sends with a number has regions", () => {
  const unnumbered = new Set([EVENTS.HELLO, EVENTS.RIGHTS_CHANGED, EVENTS.NOTICE]);
  for (const type of Object.values(EVENTS).filter((type) => !unnumbered.has(type))) {
    assert.ok(plan({ type, seq: 1 }, 0).parts.length, type);
  }
});
