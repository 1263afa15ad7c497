// The live document: every leaf section is a CodeMirror editor bound to its Yjs text in the
// document's shared state, synced over /ws/documents/<id>/crdt (DocumentCrdtConsumer).
// People see each other's cursors and names; a section an agent is writing shows who writes it
// and is read-only until the agent finishes; viewers' editors are read-only (and the server
// drops their edits anyway).

import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import { Compartment, EditorState } from "@codemirror/state";
import { EditorView, keymap } from "@codemirror/view";
import { defaultKeymap } from "@codemirror/commands";
import { yCollab, yUndoManagerKeymap } from "y-codemirror.next";

const root = document.getElementById("live-document");
if (root) start(root);

function start(root) {
  const documentId = root.dataset.documentId;
  const canEdit = root.dataset.canEdit === "true";
  const me = JSON.parse(document.getElementById("live-user").textContent);
  const ydoc = new Y.Doc();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const provider = new WebsocketProvider(`${scheme}://${location.host}/ws/documents/${documentId}`, "crdt", ydoc,
                                         { maxBackoffTime: 4000 });
  const awareness = provider.awareness;
  awareness.setLocalStateField("user", { name: me.name, color: me.color, colorLight: `${me.color}33` });
  const writers = ydoc.getMap("writers");
  const editors = new Map();

  const editable = (key) => {
    const free = canEdit && !writers.has(key);
    return [EditorView.editable.of(free), EditorState.readOnly.of(!free)];
  };

  for (const el of root.querySelectorAll("[data-section-key]")) {
    const key = el.dataset.sectionKey;
    const ytext = ydoc.getText(`section:${key}`);
    const lock = new Compartment();
    const host = el.querySelector(".live-editor");
    const view = new EditorView({
      parent: host,
      state: EditorState.create({
        doc: ytext.toString(),
        extensions: [
          keymap.of([...yUndoManagerKeymap, ...defaultKeymap]),
          EditorView.lineWrapping,
          EditorView.contentAttributes.of({ "aria-label": `Text of ${el.dataset.heading}` }),
          lock.of(editable(key)),
          yCollab(ytext, awareness),
        ],
      }),
    });
    ytext.observe(() => updateCount(el, ytext));
    editors.set(key, { el, view, lock, ytext });
  }

  function updateCount(el, ytext) {
    const section = el.closest(".doc-section");
    const words = ytext.toString().split(/\s+/).filter(Boolean).length;
    const count = section?.querySelector(".live-words");
    if (count) count.textContent = String(words);
    const bar = section?.querySelector("progress.words");
    if (bar) bar.value = Math.min(words, Number(bar.max));
  }

  function refreshLocks() {
    for (const [key, editor] of editors) {
      editor.view.dispatch({ effects: editor.lock.reconfigure(editable(key)) });
      const badge = editor.el.querySelector(".writer-badge");
      const writer = writers.get(key);
      badge.hidden = !writer;
      if (writer) {
        badge.querySelector(".writer-name").textContent = `${writer.name || "An agent"} is writing…`;
        badge.style.borderColor = writer.color || "#8e24aa";
      }
      editor.el.classList.toggle("being-written", Boolean(writer));
    }
  }
  writers.observe(() => { refreshLocks(); renderPresence(); });

  provider.on("sync", (synced) => {
    if (!synced) return;
    if (!root.classList.contains("live")) {  // the editors now hold the whole text: fold the page-load copy
      root.querySelectorAll("details.formatted").forEach((details) => { details.open = false; });
    }
    root.classList.add("live");
    refreshLocks();
    for (const { el, ytext } of editors.values()) updateCount(el, ytext);
  });

  const status = document.getElementById("live-status");
  provider.on("status", ({ status: state }) => {
    if (!status) return;
    status.textContent = state === "connected" ? "Live" : "Reconnecting… (your edits are kept and merged)";
    status.dataset.state = state;
  });

  const presence = document.getElementById("presence");
  const renderPresence = () => {
    if (!presence) return;
    const byName = new Map();  // one chip per person, however many tabs (or a reload's old state)
    awareness.getStates().forEach((state, clientId) => {
      if (!state.user) return;
      const me = clientId === ydoc.clientID;
      if (me || !byName.has(state.user.name)) byName.set(state.user.name, { ...state.user, me });
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

  followEvents(documentId);

  // For tests and the console: the shared document of this page.
  window.scriptorium = { ydoc, provider, editors };
}

// What the shared text does not carry (the run's status, the outline, suggestions, the lead)
// comes as events; the page says so and offers a reload rather than going stale silently.
function followEvents(documentId) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const notice = document.getElementById("live-notice");
  const badge = document.querySelector("#runs .page-head .badge");
  const labels = { planning: "Planning", awaiting_approval: "Waiting for outline approval", writing: "Writing",
                   reviewing: "Reviewing and finishing", done: "Done", failed: "Failed", cancelled: "Cancelled" };
  const say = (text) => {
    if (!notice) return;
    notice.querySelector("span").textContent = text;
    notice.hidden = false;
  };
  let socket;
  let retry = 500;
  const connect = () => {
    socket = new WebSocket(`${scheme}://${location.host}/ws/documents/${documentId}/events/`);
    socket.onopen = () => { retry = 500; };
    socket.onmessage = ({ data }) => {
      const event = JSON.parse(data);
      if (event.type === "run.status") {
        if (badge) {
          badge.textContent = labels[event.status] || event.status;
          badge.className = `badge badge-${event.status}`;
        }
        if (["awaiting_approval", "done", "failed", "cancelled"].includes(event.status)) {
          say(`The run is ${(labels[event.status] || event.status).toLowerCase()}.`);
        }
      } else if (event.type === "outline.changed") {
        say("The outline changed.");
      } else if (event.type === "suggestions.changed" && event.open) {
        say(`The reviewer has ${event.open} suggestion${event.open === 1 ? "" : "s"}.`);
      }
    };
    socket.onclose = () => { setTimeout(connect, retry); retry = Math.min(retry * 2, 8000); };
  };
  connect();
}
