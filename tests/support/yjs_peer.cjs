// A browser's side of the shared document, with the editor's own Yjs (frontend/node_modules):
// reads a state and anchors from stdin, says where each anchor is and what text lies between,
// then types `typed` at the start of the section and sends back its update.
const Y = require("yjs");

const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const doc = new Y.Doc();
Y.applyUpdate(doc, Buffer.from(input.update, "base64"));
const text = doc.getText(input.name);

const where = (anchor) => {
  const ends = [anchor.start, anchor.end].map((encoded) => {
    const position = Y.createAbsolutePositionFromRelativePosition(
      Y.decodeRelativePosition(Buffer.from(encoded, "base64")), doc);
    return position && position.type === text ? position.index : null;
  });
  return ends.includes(null) ? null : text.toString().slice(ends[0], ends[1]);
};

const before = input.anchors.map(where);
const state = Y.encodeStateVector(doc);
text.insert(0, input.typed);
const after = input.anchors.map(where);
process.stdout.write(JSON.stringify({
  before, after, update: Buffer.from(Y.encodeStateAsUpdate(doc, state)).toString("base64"),
}));
