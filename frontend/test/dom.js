// A browser document for the unit tests (jsdom), its globals set as the page's are.
import { JSDOM } from "jsdom";

export function page(body, url = "http://scriptorium.test/documents/7/") {
  const dom = new JSDOM(`<!doctype html><body>${body}</body>`, { url });
  const { window } = dom;
  Object.assign(globalThis, {
    window, document: window.document, DOMParser: window.DOMParser, HTMLFormElement: window.HTMLFormElement,
    CSS: { escape: (text) => String(text).replace(/[^a-zA-Z0-9_-]/g, (c) => `\\${c}`) },  // jsdom has none
  });
  return window;
}
