// The page's server-rendered regions (elements with `data-live` and an id: #live-head, #runs,
// #live-body). `refresh(parts)` fetches them again from the document's /live/ URL (at most one
// request in flight; requests asked for meanwhile are merged into the next) and swaps them in,
// keeping what a person is in the middle of: open <details data-keep>, text typed into a form,
// the focus, and the nodes marked `data-keep-node` (the editors) where they are. Forms marked `data-live-form` post in the
// background; the answer (the document page after the redirect) is swapped in the same way, with
// its messages, so the page never reloads.

export const ALL = ["head", "runs", "body"];

export class Regions {
  constructor(root, { swapped }) {
    this.root = root;
    this.swapped = swapped;
    this.url = root.dataset.liveUrl;
    this.seq = Math.max(0, ...[...root.querySelectorAll("[data-live]")].map((el) => Number(el.dataset.seq || 0)));
    this.wanted = new Set();
    this.busy = false;
    this.timer = null;
    root.addEventListener("submit", (event) => this.submit(event));
  }

  refresh(parts = ALL) {
    parts.forEach((part) => this.wanted.add(part));
    if (!this.wanted.size || this.timer) return;
    this.timer = setTimeout(() => { this.timer = null; this.load(); }, 120);  // events come in bursts
  }

  async load() {
    if (this.busy) { this.refresh([]); return; }
    const parts = [...this.wanted];
    this.wanted.clear();
    this.busy = true;
    try {
      const query = parts.length === ALL.length ? "" : `?${parts.map((part) => `part=${part}`).join("&")}`;
      const response = await fetch(this.url + query, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (response.ok) this.swap(await response.text());
      else if (response.status === 404 || response.status === 403) location.reload();  // removed from the project
    } catch (error) {
      parts.forEach((part) => this.wanted.add(part));  // offline: try again
      setTimeout(() => this.refresh([]), 2000);
    } finally {
      this.busy = false;
      if (this.wanted.size && !this.timer) this.refresh([]);
    }
  }

  swap(html, { messages = false } = {}) {
    const fresh = new DOMParser().parseFromString(html, "text/html");
    const active = document.activeElement;
    const status = document.getElementById("run-status")?.textContent;
    for (const region of fresh.querySelectorAll("[data-live][id]")) {
      const current = document.getElementById(region.id);
      if (!current) continue;
      this.seq = Math.max(this.seq, Number(region.dataset.seq || 0));
      const adopted = document.importNode(region, true);
      carryOver(current, adopted);
      if (!patch(current, adopted)) {
        keepNodes(current, adopted);
        const focused = current.contains(active) && !active.closest("[data-keep-node]") ? locator(active) : null;
        current.replaceWith(adopted);
        if (focused) adopted.querySelector(focused)?.focus();
      }
    }
    if (active?.isConnected && document.activeElement !== active) active.focus({ preventScroll: true });
    const notes = fresh.getElementById("messages");
    if (messages && notes) {
      document.getElementById("messages")?.replaceChildren(...[...notes.childNodes].map((n) => document.importNode(n, true)));
    } else if (status !== document.getElementById("run-status")?.textContent) {
      // "Outline approved; the writers have started." is no longer true once the run moved on.
      document.querySelectorAll("#messages .flash-success, #messages .flash-info").forEach((note) => note.remove());
    }
    this.swapped();
    this.tick();
  }

  async submit(event) {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-live-form")) return;
    event.preventDefault();
    // With the button that was pressed (a form's buttons may say which action: "ask_agent"),
    // read before the buttons are disabled: a disabled button is not sent.
    const body = new FormData(form, event.submitter || null);
    const buttons = form.querySelectorAll("button");
    buttons.forEach((button) => { button.disabled = true; button.setAttribute("aria-busy", "true"); });
    try {
      const response = await fetch(form.action, { method: "POST", body, credentials: "same-origin",
                                                  headers: { Accept: "text/html" } });
      const landed = new URL(response.url);
      if (response.ok && landed.pathname === location.pathname) {
        const html = await response.text();
        // Done: what was typed into this form is sent, so it does not come back in the new page
        // (a swap keeps what people typed in forms). Refused: it stays, to correct and send again.
        if (!html.includes("flash-error")) form.reset();
        this.swap(html, { messages: true });
        document.getElementById("messages")?.scrollIntoView?.({ block: "nearest" });
      } else {
        location.assign(response.url);  // somewhere else (a login page, an error): go there
      }
    } catch (error) {
      form.submit();  // the background post failed to reach the server: post it the plain way
    } finally {
      buttons.forEach((button) => { button.disabled = false; button.removeAttribute("aria-busy"); });
    }
  }

  // A message from the server about this person's own edit (refused, undone), shown like a flash.
  notify(text, level = "info") {
    const note = document.createElement("p");
    note.className = `flash flash-${level}`;
    note.setAttribute("role", level === "error" ? "alert" : "status");
    note.textContent = text;
    document.getElementById("messages")?.replaceChildren(note);
  }

  // The run's elapsed seconds count up between events.
  tick() {
    const panel = document.getElementById("runs");
    const shown = panel?.querySelector(".elapsed");
    if (!panel || !shown || !panel.hasAttribute("data-active")) return;
    shown.textContent = String(Math.max(0, Math.round(Date.now() / 1000 - Number(panel.dataset.started))));
  }
}

// Swap a region's children one by one when it holds the same children (by id) as before, never
// moving a kept node (an editor: moving it would take the focus from a person typing there).
// False when the children changed (a new outline): then the region is replaced whole.
export function patch(current, fresh) {
  const ids = (region) => [...region.children].map((child) => child.id || "?");
  const [before, after] = [ids(current), ids(fresh)];
  if (before.includes("?") || before.join() !== after.join()) return false;
  [...fresh.children].forEach((child, index) => {
    const old = current.children[index];
    const kept = old.querySelector(":scope > [data-keep-node]");
    const twin = kept && child.querySelector(`:scope > [data-keep-node="${CSS.escape(kept.dataset.keepNode)}"]`);
    if (!twin) { old.replaceWith(child); return; }
    old.className = child.className;
    for (const node of [...old.childNodes]) if (node !== kept) node.remove();
    let passed = false;
    for (const node of [...child.childNodes]) {
      if (node === twin) { passed = true; continue; }
      if (passed) old.append(node); else kept.before(node);
    }
  });
  return true;
}

// A full swap still keeps the kept nodes (editors), moved into the new region.
export function keepNodes(current, fresh) {
  for (const node of fresh.querySelectorAll("[data-keep-node]")) {
    const old = current.querySelector(`[data-keep-node="${CSS.escape(node.dataset.keepNode)}"]`);
    if (old) node.replaceWith(old);
  }
}

// What a person was doing in the old region, done again in the new one.
export function carryOver(current, fresh) {
  for (const details of current.querySelectorAll("details[data-keep]")) {
    const twin = fresh.querySelector(`details[data-keep="${details.dataset.keep}"]`);
    if (twin) twin.open = details.open;
  }
  for (const field of current.querySelectorAll("form input[name]:not([type=hidden]), form textarea[name]")) {
    if (!field.value) continue;
    const twin = fresh.querySelector(locator(field));
    if (twin) twin.value = field.value;
  }
}

export function locator(element) {
  const form = element.closest("form");
  if (element.id) return `#${CSS.escape(element.id)}`;
  const name = element.getAttribute("name");
  if (form && name) return `form[action="${CSS.escape(form.getAttribute("action"))}"] [name="${CSS.escape(name)}"]`;
  if (form) return `form[action="${CSS.escape(form.getAttribute("action"))}"] button`;
  return "#never-matches";
}
