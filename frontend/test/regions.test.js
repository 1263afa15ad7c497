// The server-rendered regions swapped in: what a person is in the middle of survives a swap (the
// editors, the focus, what they typed, what they opened), and refreshes asked for together are
// fetched together.
import assert from "node:assert/strict";
import { test } from "node:test";
import { page } from "./dom.js";
import { Regions } from "../src/regions.js";

const sections = (seq, { extra = "", status = "Writing" } = {}) => `
  <div id="live-body" data-live data-seq="${seq}">
    <section id="section-1" class="doc-section">
      <h2>Gulls</h2><span class="section-status">${status}</span>
      <div data-keep-node="editor-1"></div>
      <form action="/documents/7/sections/1/comment/"><textarea name="body"></textarea></form>
      <details data-keep="sources-1"><summary>Sources</summary></details>
    </section>
    ${extra}
  </div>`;

function live(html) {
  const window = page(`<div id="live-document" data-live-url="/documents/7/live/">${html}</div>`);
  const regions = new Regions(window.document.getElementById("live-document"), { swapped: () => {} });
  return { window, regions };
}

test("a swap of the same sections keeps the editor node, its focus, and what was typed and opened", () => {
  const { window, regions } = live(sections(3));
  const editor = window.document.querySelector("[data-keep-node=editor-1]");
  const place = editor.parentElement;
  editor.innerHTML = "<div contenteditable='true' id='typing-here'>Gulls nest</div>";
  window.document.getElementById("typing-here").focus();
  window.document.querySelector("textarea[name=body]").value = "A half-written comment";
  window.document.querySelector("details[data-keep]").open = true;

  regions.swap(sections(4, { status: "Written" }));

  assert.equal(window.document.querySelector("[data-keep-node=editor-1]"), editor);  // the same node, not a copy
  assert.equal(editor.parentElement, place);  // never moved: a browser takes the focus from a moved node
  assert.equal(window.document.activeElement.id, "typing-here");
  assert.equal(window.document.querySelector(".section-status").textContent, "Written");
  assert.equal(window.document.querySelector("textarea[name=body]").value, "A half-written comment");
  assert.equal(window.document.querySelector("details[data-keep]").open, true);
  assert.equal(regions.seq, 4);
});

test("a swap with a new outline replaces the region and moves the editor into it", () => {
  const { window, regions } = live(sections(3));
  const editor = window.document.querySelector("[data-keep-node=editor-1]");
  regions.swap(sections(5, { extra: `<section id="section-2" class="doc-section"><h2>Terns</h2></section>` }));
  assert.equal(window.document.querySelectorAll(".doc-section").length, 2);
  assert.equal(window.document.querySelector("[data-keep-node=editor-1]"), editor);
});

test("refreshes asked for together, or while one is loading, are fetched together", async () => {
  const { regions } = live(sections(3));
  const asked = [];
  let answer;
  globalThis.fetch = (url) => {
    asked.push(url);
    return new Promise((resolve) => { answer = () => resolve({ ok: true, status: 200, text: async () => sections(4) }); });
  };
  regions.refresh(["runs"]);
  regions.refresh(["body"]);
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.deepEqual(asked, ["/documents/7/live/?part=runs&part=body"]);
  regions.refresh(["head"]);  // while the first is loading
  regions.refresh(["runs"]);
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(asked.length, 1);
  answer();
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.deepEqual(asked, ["/documents/7/live/?part=runs&part=body", "/documents/7/live/?part=head&part=runs"]);
  answer();
});
