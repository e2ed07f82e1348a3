// Collections (create, delete, counts, model version), and one collection's faces and users.
import { all, call } from "./api.js";
import { guarded, h, num, table } from "./dom.js";

const PAGE_SIZE = 20;

export async function collectionsPage(main) {
  const ids = await all("ListCollections", {}, "CollectionIds");
  const described = await Promise.all(ids.map((id) => call("DescribeCollection", { CollectionId: id })));
  const name = h("input", { name: "CollectionId", placeholder: "my-collection", required: true, pattern: "[a-zA-Z0-9_.\\-]+" });
  const create = async (event) => {
    event.preventDefault();
    await guarded(() => call("CreateCollection", { CollectionId: name.value.trim() }));
    await collectionsPage(main);
  };
  const remove = (id) => async () => {
    if (!confirm(`Delete collection ${id} with all its faces and users?`)) return;
    await guarded(() => call("DeleteCollection", { CollectionId: id }));
    await collectionsPage(main);
  };
  const rows = ids.map((id, i) => [
    h("a", { href: `#collection/${encodeURIComponent(id)}` }, id),
    String(described[i].FaceCount ?? "-"),
    String(described[i].UserCount ?? "-"),
    described[i].FaceModelVersion || "-",
    described[i].CreationTimestamp ? new Date(described[i].CreationTimestamp * 1000).toLocaleString() : "-",
    h("button", { onclick: remove(id), className: "danger" }, "Delete"),
  ]);
  main.replaceChildren(
    h("h1", {}, "Collections"),
    h("form", { onsubmit: create }, h("label", {}, "New collection ", name), h("button", { type: "submit" }, "Create")),
    ids.length
      ? table(["Collection", "Faces", "Users", "Face model version", "Created", ""], rows)
      : h("p", {}, "No collections yet."),
  );
}

export async function collectionPage(main, id) {
  const info = await call("DescribeCollection", { CollectionId: id });
  const faces = h("section", { id: "faces" });
  const users = h("section", { id: "users" });
  main.replaceChildren(
    h("h1", {}, `Collection ${id}`),
    h("p", {}, `${info.FaceCount} faces, ${info.UserCount ?? 0} users, face model version ${info.FaceModelVersion}. `, h("a", { href: "#collections" }, "All collections")),
    faces,
    users,
  );
  const selected = new Set();
  await Promise.all([facesSection(faces, id, selected, []), usersSection(users, id, selected)]);
}

// ListFaces one page at a time; `tokens` is the stack of NextTokens that led to this page.
async function facesSection(section, id, selected, tokens) {
  const token = tokens[tokens.length - 1];
  const page = await call("ListFaces", { CollectionId: id, MaxResults: PAGE_SIZE, ...(token ? { NextToken: token } : {}) });
  const reload = () => facesSection(section, id, selected, tokens);
  const remove = (faceId) => async () => {
    await guarded(() => call("DeleteFaces", { CollectionId: id, FaceIds: [faceId] }));
    selected.delete(faceId);
    await reload();
  };
  const rows = page.Faces.map((face) => [
    h("input", {
      type: "checkbox",
      title: "select for a user",
      checked: selected.has(face.FaceId),
      onchange: (event) => (event.target.checked ? selected.add(face.FaceId) : selected.delete(face.FaceId)),
    }),
    h("code", {}, face.FaceId),
    face.ExternalImageId || "-",
    face.UserId || "-",
    num(face.Confidence, 2),
    h("button", { onclick: remove(face.FaceId), className: "danger" }, "Delete"),
  ]);
  section.replaceChildren(
    h("h2", {}, "Faces"),
    rows.length ? table(["", "FaceId", "ExternalImageId", "UserId", "Confidence", ""], rows) : h("p", {}, "No faces on this page."),
    h(
      "p",
      {},
      h("button", { disabled: !tokens.length, onclick: () => facesSection(section, id, selected, tokens.slice(0, -1)) }, "Previous"),
      " ",
      h("button", { disabled: !page.NextToken, onclick: () => facesSection(section, id, selected, [...tokens, page.NextToken]) }, "Next"),
      ` page ${tokens.length + 1}, ${PAGE_SIZE} faces per page`,
    ),
  );
}

async function usersSection(section, id, selected) {
  const list = await all("ListUsers", { CollectionId: id }, "Users");
  const reload = async () => collectionPage(section.closest("main"), id);
  const userId = h("input", { name: "UserId", required: true, placeholder: "user-1" });
  const create = async (event) => {
    event.preventDefault();
    await guarded(() => call("CreateUser", { CollectionId: id, UserId: userId.value.trim() }));
    await reload();
  };
  const associate = (user) => async () => {
    if (!selected.size) return alert("Select faces in the table above first.");
    const result = await guarded(() => call("AssociateFaces", { CollectionId: id, UserId: user, FaceIds: [...selected] }));
    const refused = (result.UnsuccessfulFaceAssociations || []).map((f) => `${f.FaceId}: ${f.Reasons.join(", ")}`);
    if (refused.length) alert(`Not associated:\n${refused.join("\n")}`);
    await reload();
  };
  const remove = (user) => async () => {
    await guarded(() => call("DeleteUser", { CollectionId: id, UserId: user }));
    await reload();
  };
  const rows = list.map((user) => [
    user.UserId,
    user.UserStatus,
    h("button", { onclick: associate(user.UserId) }, "Associate selected faces"),
    h("button", { onclick: remove(user.UserId), className: "danger" }, "Delete"),
  ]);
  section.replaceChildren(
    h("h2", {}, "Users"),
    h("form", { onsubmit: create }, h("label", {}, "New user ", userId), h("button", { type: "submit" }, "Create user")),
    rows.length ? table(["UserId", "Status", "", ""], rows) : h("p", {}, "No users."),
  );
}
