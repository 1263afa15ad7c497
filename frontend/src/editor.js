// The live document page. Two sockets:
// - /ws/documents/<id>/crdt (DocumentCrdtConsumer): the shared text, one Yjs text per leaf
//   section, each edited in a CodeMirror editor (sections.js), with suggestions and comment
//   threads marked in it (marks.js) and who is here shown (presence.js).
// - /ws/documents/<id>/events/ (DocumentEventsConsumer): what the text does not carry; each event
//   says which of the server-rendered regions to fetch again and swap in, keeping the editors
//   (follow.js, regions.js).
// The run's buttons and the suggestions' Accept and Reject post in the background and swap in
// the answer, so the page is never reloaded.

import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import { CLOSED_FOR_GOOD, followEvents } from "./follow.js";
import { renderPresence } from "./presence.js";
import { Regions } from "./regions.js";
import { SectionEditors } from "./sections.js";
import { SuggestMode } from "./suggesting.js";

const root = document.getElementById("live-document");
if (root) start(root);

function start(root) {
  const me = JSON.parse(document.getElementById("live-user").textContent);
  const ydoc = new Y.Doc();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const provider = new WebsocketProvider(`${scheme}://${location.host}/ws/documents/${root.dataset.documentId}`,
                                         "crdt", ydoc, { maxBackoffTime: 4000 });
  const awareness = provider.awareness;
  awareness.setLocalStateField("user", { name: me.name, color: me.color, colorLight: `${me.color}33` });
  const sections = new SectionEditors(root, { ydoc, awareness, suggesting: suggestMode(root),
                                              canEdit: root.dataset.canEdit === "true" });
  const presence = document.getElementById("presence");
  const showPresence = () => { if (presence) renderPresence(presence, awareness, sections.writers); };
  sections.writers.observe(() => { sections.refreshLocks(); showPresence(); });
  awareness.on("change", showPresence);
  showPresence();

  provider.on("sync", (isSynced) => {
    if (!isSynced) return;
    if (!sections.synced) {  // the editors now hold the whole text: fold the page-load copy
      root.querySelectorAll("details.formatted").forEach((details) => { details.open = false; });
    }
    sections.synced = true;
    root.classList.add("live");
    sections.refreshLocks();
    sections.renew();
  });
  const lockOut = showConnection(provider, sections);

  const foldAgentsPanel = agentsPanelFolder();
  const regions = new Regions(root, {
    swapped: () => { foldAgentsPanel(); sections.bind(); sections.refreshLocks(); sections.renew(); },
  });
  sections.bind();
  followEvents(root.dataset.documentId, regions, {
    role: (role) => {  // promoted or demoted while the page is open
      sections.canEdit = role === "owner" || role === "editor";
      root.dataset.canEdit = String(sections.canEdit);
      sections.refreshLocks();
      regions.refresh();
    },
    closed: lockOut,
  });
  setInterval(() => regions.tick(), 1000);

  // For tests and the console: the shared document of this page.
  window.scriptorium = { ydoc, provider, editors: sections.editors, regions };
}

// Suggest mode (suggesting.js): a person's typing is proposed as a suggestion, posted like a
// form of the page (in the background, the answer swapped in).
function suggestMode(root) {
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
  return suggesting;
}

// The connection's state in #live-status; returns what locks the page when the server closes
// the socket because this person's rights ended (removed from the project, logged out).
function showConnection(provider, sections) {
  const status = document.getElementById("live-status");
  let shut = false;
  provider.on("status", ({ status: state }) => {
    if (!status || shut) return;
    status.textContent = state === "connected" ? "Live" : "Reconnecting… (your edits are kept and merged)";
    status.dataset.state = state;
  });
  const lockOut = () => {
    if (shut) return;
    shut = true;
    provider.disconnect();
    sections.canEdit = false;
    sections.refreshLocks();
    if (status) {
      status.textContent = "You no longer have access to this document (removed from the project, or logged out).";
      status.dataset.state = "closed";
    }
  };
  provider.on("connection-close", (event) => { if (event && CLOSED_FOR_GOOD.has(event.code)) lockOut(); });
  return lockOut;
}

// On a phone the Agents panel first shows as its one summary line (also when a first run's panel
// arrives later); after that, swaps keep whatever the person chose (details[data-keep]).
function agentsPanelFolder() {
  const phone = window.matchMedia?.("(max-width: 640px)").matches;
  let seen = false;
  const fold = () => {
    const panel = document.querySelector("details.agents-details");
    if (!panel || seen) return;
    seen = true;
    if (phone) panel.open = false;
  };
  fold();
  return fold;
}
