// The live document page. Two sockets:
// - /ws/documents/<id>/crdt (DocumentCrdtConsumer): the shared text. Every leaf section is a
//   CodeMirror editor bound to its Yjs text; people see each other's cursors and names; a section
//   an agent is writing shows who writes it and is read-only (the server refuses edits there too).
// - /ws/documents/<id>/events/ (DocumentEventsConsumer): what the text does not carry (the run,
//   the outline, suggestions, the lead). Each event names what changed, and the page fetches
//   those regions again, rendered by the server's own templates (/documents/<id>/live/), and swaps
//   them in, keeping the editors. Events are numbered: a gap, or a reconnect, re-reads everything.
// The run's buttons and the suggestions' Accept and Reject post in the background and swap in
// the answer, so the page is never reloaded.

import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import { Compartment, EditorState, StateEffect, StateField } from "@codemirror/state";
import { Decoration, EditorView, WidgetType, keymap, placeholder } from "@codemirror/view";
import { defaultKeymap } from "@codemirror/commands";
import { yCollab, yUndoManagerKeymap } from "y-codemirror.next";
import { Regions } from "./regions.js";
import { SuggestMode } from "./suggesting.js";
import EVENTS from "./events.json";

const root = document.getElementById("live-document");
if (root) start(root);

function start(root) {
  const documentId = root.dataset.documentId;
  let canEdit = root.dataset.canEdit === "true";
  const me = JSON.parse(document.getElementById("live-user").textContent);
  const ydoc = new Y.Doc();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const provider = new WebsocketProvider(`${scheme}://${location.host}/ws/documents/${documentId}`, "crdt", ydoc,
                                         { maxBackoffTime: 4000 });
  const awareness = provider.awareness;
  awareness.setLocalStateField("user", { name: me.name, color: me.color, colorLight: `${me.color}33` });
  const writers = ydoc.getMap("writers");
  const editors = new Map();  // section key -> { el, view, lock, ytext }
  let synced = false;

  const editable = (key) => {
    const free = canEdit && !writers.has(key);
    return [EditorView.editable.of(free), EditorState.readOnly.of(!free)];
  };

  // Suggest mode (suggesting.js): a person's typing is proposed as a suggestion, posted like a
  // form of the page (in the background, the answer swapped in).
  const suggesting = new SuggestMode((el, fields) => {
    const form = document.createElement("form");
    form.method = "post";
    form.action = el.dataset.suggestUrl;
    form.hidden = true;
    form.setAttribute("data-live-form", "");
    const token = document.querySelector("input[name=csrfmiddlewaretoken]")?.value || "";
    for (const [name, value] of Object.entries({ csrfmiddlewaretoken: token, ...fields })) {
      const input = document.createElement("input");
      input.name = name;
      input.value = String(value);
      form.append(input);
    }
    root.append(form);
    form.requestSubmit();
    setTimeout(() => form.remove(), 0);
  });
  document.getElementById("suggest-mode")?.addEventListener("change", (event) => {
    suggesting.set(event.target.checked);
    root.classList.toggle("suggesting", event.target.checked);
  });

  // --- editors: one per leaf section on the page, made when the section appears --------------
  function bindEditors() {
    const present = new Set();
    for (const el of root.querySelectorAll(".live-section[data-section-key]")) {
      const key = el.dataset.sectionKey;
      present.add(key);
      if (editors.has(key)) continue;
      const ytext = ydoc.getText(`section:${key}`);
      const lock = new Compartment();
      const hint = new Compartment();
      const host = el.querySelector(".live-editor");
      const view = new EditorView({
        parent: host,
        state: EditorState.create({
          doc: ytext.toString(),
          extensions: [
            keymap.of([...yUndoManagerKeymap, ...defaultKeymap]),
            EditorView.lineWrapping,
            EditorView.contentAttributes.of({ "aria-label": `Text of ${el.dataset.heading}` }),
            hint.of(placeholder(emptyHint(key, host))),
            lock.of(editable(key)),
            EditorView.updateListener.of((update) => { if (update.selectionSet) selected(el, update.state); }),
            suggesting.extension(el),
            marks,
            yCollab(ytext, awareness),
          ],
        }),
      });
      ytext.observe(() => { updateCount(el, ytext); later(() => markSuggestions(key)); });
      editors.set(key, { el, view, lock, hint, host, ytext });
      if (synced) el.closest(".doc-section")?.querySelector("details.formatted")?.removeAttribute("open");
    }
    for (const [key, editor] of editors) {
      if (!present.has(key)) { editor.view.destroy(); editors.delete(key); }  // deleted from the outline
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

  const words = (text) => text.split(/\s+/).filter(Boolean).length;

  function updateCount(el, ytext) {
    if (!synced) return;
    const section = el.closest(".doc-section");
    const count = words(ytext.toString());
    const shown = section?.querySelector(".live-words");
    if (shown) shown.textContent = String(count);
    const bar = section?.querySelector("progress.words");
    if (bar) bar.value = Math.min(count, Number(bar.max));
    const total = document.getElementById("doc-words");
    if (total) {
      let sum = Number(total.dataset.fixedWords || 0);
      for (const editor of editors.values()) sum += words(editor.ytext.toString());
      total.textContent = String(sum);
    }
  }

  // What an empty section says: not "Type here" while an agent holds it.
  function emptyHint(key, host) {
    const writer = writers.get(key);
    if (writer) return `${writer.name || "An agent"} is writing this section; its text appears here as it comes.`;
    return host.dataset.placeholder || "";
  }

  function refreshLocks() {
    for (const [key, editor] of editors) {
      editor.view.dispatch({ effects: [editor.lock.reconfigure(editable(key)),
                                       editor.hint.reconfigure(placeholder(emptyHint(key, editor.host)))] });
      const badge = editor.el.querySelector(".writer-badge");
      const writer = writers.get(key);
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
  writers.observe(() => { refreshLocks(); renderPresence(); });

  // --- suggestions as tracked changes: the original struck through, the replacement inserted --
  const setMarks = StateEffect.define();
  const marks = StateField.define({
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

  // Where a suggestion's text is now: its anchors (Yjs relative positions made by the server)
  // follow everyone's edits; if the text between them is no longer the original, it is outdated.
  function locate(card, ytext) {
    const { anchorStart, anchorEnd } = card.dataset;
    if (!anchorStart || !anchorEnd) return null;
    const [from, to] = [anchorStart, anchorEnd].map((encoded) => {
      const position = Y.createAbsolutePositionFromRelativePosition(Y.decodeRelativePosition(fromBase64(encoded)), ydoc);
      return position && position.type === ytext ? position.index : null;
    });
    if (from === null || to === null || from > to) return null;
    const original = card.querySelector(".suggestion-original, .comment-quote")?.textContent || "";
    return ytext.toString().slice(from, to) === original ? { from, to } : null;
  }

  function markSuggestions(key) {
    const editor = editors.get(key);
    if (!editor || !synced) return;
    const ranges = [];
    for (const card of root.querySelectorAll(`.suggestion[data-section-key="${key}"]`)) {
      const where = locate(card, editor.ytext);
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
    // Threads of comments: their passage is highlighted, with the first comment as its title.
    for (const card of root.querySelectorAll(`.comment-thread[data-section-key="${key}"]`)) {
      const where = locate(card, editor.ytext);
      card.classList.toggle("outdated", !where);
      const note = card.querySelector(".comment-where");
      if (note) note.textContent = where ? "(highlighted in the text)" : "The passage was edited since.";
      if (where && where.to > where.from) {
        const title = card.querySelector("li.comment")?.textContent.replace(/\s+/g, " ").trim() || "";
        ranges.push(Decoration.mark({ class: "cm-commented", attributes: { title } }).range(where.from, where.to));
      }
    }
    editor.view.dispatch({ effects: setMarks.of(Decoration.set(ranges, true)) });
  }

  const later = (fn) => setTimeout(fn, 0);  // never inside CodeMirror's own update

  provider.on("sync", (isSynced) => {
    if (!isSynced) return;
    if (!synced) {  // the editors now hold the whole text: fold the page-load copy
      root.querySelectorAll("details.formatted").forEach((details) => { details.open = false; });
    }
    synced = true;
    root.classList.add("live");
    refreshLocks();
    for (const [key, { el, ytext }] of editors) { updateCount(el, ytext); markSuggestions(key); }
  });

  const status = document.getElementById("live-status");
  let shut = false;
  provider.on("status", ({ status: state }) => {
    if (!status || shut) return;
    status.textContent = state === "connected" ? "Live" : "Reconnecting… (your edits are kept and merged)";
    status.dataset.state = state;
  });
  // The server closes a socket whose rights ended (removed from the project, logged out): stop.
  const lockOut = () => {
    if (shut) return;
    shut = true;
    provider.disconnect();
    canEdit = false;
    refreshLocks();
    if (status) {
      status.textContent = "You no longer have access to this document (removed from the project, or logged out).";
      status.dataset.state = "closed";
    }
  };
  provider.on("connection-close", (event) => { if (event && CLOSED_FOR_GOOD.has(event.code)) lockOut(); });

  const presence = document.getElementById("presence");
  const renderPresence = () => {
    if (!presence) return;
    const byName = new Map();  // one chip per person, however many tabs (or a reload's old state)
    awareness.getStates().forEach((state, clientId) => {
      if (!state.user) return;
      const mine = clientId === ydoc.clientID;
      if (mine || !byName.has(state.user.name)) byName.set(state.user.name, { ...state.user, me: mine });
    });
    const people = [...byName.values()];
    const agents = new Map();  // agents are on the page too, while they write
    writers.forEach((writer) => agents.set(writer.name || "Agent", writer.color || "#8e24aa"));
    agents.forEach((color, name) => people.push({ name: `${name} (agent)`, color, me: false }));
    presence.replaceChildren(...people.map((person) => {
      const chip = document.createElement("span");
      chip.className = "presence-chip";
      chip.style.borderColor = person.color;
      chip.textContent = person.me ? `${person.name} (you)` : person.name;
      return chip;
    }));
  };
  awareness.on("change", renderPresence);
  renderPresence();

  // --- the regions the server renders: swapped in when events say they changed ---------------
  // On a phone the Agents panel first shows as its one summary line (also when a first run's
  // panel arrives later); after that, swaps keep whatever the person chose (details[data-keep]).
  const phone = window.matchMedia?.("(max-width: 640px)").matches;
  let panelSeen = false;
  const foldAgentsPanel = () => {
    const panel = document.querySelector("details.agents-details");
    if (!panel || panelSeen) return;
    panelSeen = true;
    if (phone) panel.open = false;
  };
  foldAgentsPanel();

  const regions = new Regions(root, {
    swapped: () => {
      foldAgentsPanel();
      bindEditors();
      refreshLocks();
      for (const [key, { el, ytext }] of editors) { updateCount(el, ytext); markSuggestions(key); }
    },
  });
  bindEditors();
  followEvents(documentId, regions, {
    role: (role) => {  // promoted or demoted while the page is open
      canEdit = role === "owner" || role === "editor";
      root.dataset.canEdit = String(canEdit);
      refreshLocks();
      regions.refresh();
    },
    closed: lockOut,
  });
  setInterval(() => regions.tick(), 1000);

  // For tests and the console: the shared document of this page.
  window.scriptorium = { ydoc, provider, editors, regions };
}

// Which regions an event changes. Streamed text needs none (the shared text carries it).
// The event types are webapp/events.py's (events.json is written from it: `python -m webapp.events`).
const PARTS = {
  [EVENTS.RUN_STATUS_CHANGED]: ["head", "runs", "body"], [EVENTS.RUN_PROGRESS]: ["runs"],
  [EVENTS.OUTLINE_CHANGED]: ["head", "runs", "body"], [EVENTS.SECTION_TEXT]: ["head", "body"],
  [EVENTS.SUGGESTIONS_CHANGED]: ["runs", "body"], [EVENTS.SUGGESTION_DECIDED]: ["runs", "body"],
  [EVENTS.COMMENTS_CHANGED]: ["body"], [EVENTS.DOCUMENT_FINISHED]: ["head"],
};

const CLOSED_FOR_GOOD = new Set([4403, 4404]);  // rights ended; not a member

function followEvents(documentId, regions, { role, closed }) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  let retry = 500;
  const connect = () => {
    const socket = new WebSocket(`${scheme}://${location.host}/ws/documents/${documentId}/events/`);
    socket.onopen = () => { retry = 500; };
    socket.onmessage = ({ data }) => {
      const event = JSON.parse(data);
      if (event.type === EVENTS.RIGHTS_CHANGED) { role(event.role); return; }
      if (event.type === EVENTS.NOTICE) { regions.notify(event.text, event.level); return; }
      if (event.type === EVENTS.HELLO) {  // anything sent since the page was rendered, or while we were away
        if (event.seq > regions.seq) regions.refresh();
        return;
      }
      if (typeof event.seq === "number") {
        if (event.seq <= regions.seq) return;  // already in what the page shows
        const gap = event.seq > regions.seq + 1;
        regions.seq = event.seq;
        if (gap) { regions.refresh(); return; }  // missed some: re-read everything
      }
      const parts = PARTS[event.type];
      regions.refresh(parts === undefined ? undefined : parts);
    };
    socket.onclose = ({ code }) => {
      if (CLOSED_FOR_GOOD.has(code)) { closed(); return; }
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 8000);
    };
  };
  connect();
}
