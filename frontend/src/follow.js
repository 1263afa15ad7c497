// The events socket (/ws/documents/<id>/events/, DocumentEventsConsumer): what the shared text
// does not carry (the run, the outline, suggestions, the lead). Each event names what changed,
// and the page fetches those regions again (regions.js). Events are numbered: a gap, or a
// reconnect that missed some, re-reads everything.
// The event types are webapp/events.py's (events.json is written from it: `python -m webapp.events`).

import EVENTS from "./events.json" with { type: "json" };
import { ALL } from "./regions.js";

// Which regions an event changes. Streamed text needs none (the shared text carries it).
const PARTS = {
  [EVENTS.RUN_STATUS_CHANGED]: ["head", "runs", "body"], [EVENTS.RUN_PROGRESS]: ["runs"],
  [EVENTS.OUTLINE_CHANGED]: ["head", "runs", "body"], [EVENTS.SECTION_TEXT]: ["head", "body"],
  [EVENTS.SUGGESTIONS_CHANGED]: ["runs", "body"], [EVENTS.SUGGESTION_DECIDED]: ["runs", "body"],
  [EVENTS.COMMENTS_CHANGED]: ["body"], [EVENTS.DOCUMENT_FINISHED]: ["head"],
};

export const CLOSED_FOR_GOOD = new Set([4403, 4404]);  // rights ended; not a member

// What a numbered event does to a page that shows everything up to `seq`: the number it shows
// after, and the regions to fetch again (none, some, or ALL).
export function plan(event, seq) {
  if (event.type === EVENTS.HELLO) {  // anything sent since the page was rendered, or while we were away
    return { seq, parts: event.seq > seq ? ALL : [] };
  }
  if (typeof event.seq === "number") {
    if (event.seq <= seq) return { seq, parts: [] };  // already in what the page shows
    if (event.seq > seq + 1) return { seq: event.seq, parts: ALL };  // missed some: re-read everything
    seq = event.seq;
  }
  return { seq, parts: PARTS[event.type] || ALL };  // a type this page does not know: everything
}

// Follow the document's events for as long as the page is open, reconnecting with back-off;
// `role(role)` when this person's role changes, `closed()` when their rights ended.
export function followEvents(documentId, regions, { role, closed }) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  let retry = 500;
  const connect = () => {
    const socket = new WebSocket(`${scheme}://${location.host}/ws/documents/${documentId}/events/`);
    socket.onopen = () => { retry = 500; };
    socket.onmessage = ({ data }) => {
      const event = JSON.parse(data);
      if (event.type === EVENTS.RIGHTS_CHANGED) { role(event.role); return; }
      if (event.type === EVENTS.NOTICE) { regions.notify(event.text, event.level); return; }
      const next = plan(event, regions.seq);
      regions.seq = next.seq;
      if (next.parts.length) regions.refresh(next.parts);
    };
    socket.onclose = ({ code }) => {
      if (CLOSED_FOR_GOOD.has(code)) { closed(); return; }
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 8000);
    };
  };
  connect();
}
