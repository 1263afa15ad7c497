// Who is on the page: one chip per person however many tabs they have open (or a reload's old
// awareness state), "(you)" on this tab's, and the agents writing sections now.

const AGENT_COLOR = "#8e24aa";

export function renderPresence(presence, awareness, writers) {
  const byName = new Map();
  awareness.getStates().forEach((state, clientId) => {
    if (!state.user) return;
    const mine = clientId === awareness.clientID;
    if (mine || !byName.has(state.user.name)) byName.set(state.user.name, { ...state.user, me: mine });
  });
  const people = [...byName.values()];
  const agents = new Map();
  writers.forEach((writer) => agents.set(writer.name || "Agent", writer.color || AGENT_COLOR));
  agents.forEach((color, name) => people.push({ name: `${name} (agent)`, color, me: false }));
  presence.replaceChildren(...people.map((person) => {
    const chip = document.createElement("span");
    chip.className = "presence-chip";
    chip.style.borderColor = person.color;
    chip.textContent = person.me ? `${person.name} (you)` : person.name;
    return chip;
  }));
}
