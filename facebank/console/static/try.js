// "Try it": run DetectFaces, CompareFaces, SearchFacesByImage, SearchUsersByImage and IndexFaces
// on a photo picked or dropped here, and draw what came back on it.
import { all, base64, call } from "./api.js";
import { figure, guarded, h, num, table } from "./dom.js";

function attributes(detail) {
  const parts = [];
  if (detail.AgeRange) parts.push(`age ${detail.AgeRange.Low}-${detail.AgeRange.High}`);
  if (detail.Gender) parts.push(`${detail.Gender.Value} ${num(detail.Gender.Confidence, 0)}%`);
  const emotion = (detail.Emotions || []).reduce((best, e) => (!best || e.Confidence > best.Confidence ? e : best), null);
  if (emotion) parts.push(emotion.Type);
  for (const name of ["Smile", "Eyeglasses", "Sunglasses", "Beard", "Mustache", "EyesOpen", "MouthOpen"]) {
    if (detail[name]?.Value) parts.push(name);
  }
  if (detail.Pose) parts.push(`yaw ${num(detail.Pose.Yaw, 0)}°`);
  return parts.join(", ");
}

// A file input that also takes a dropped photo; `onpick(file)` gets the file.
function picker(label, onpick) {
  const input = h("input", { type: "file", accept: "image/jpeg,image/png", name: label });
  input.addEventListener("change", () => input.files[0] && onpick(input.files[0]));
  const zone = h("label", { className: "drop" }, `${label}: drop a photo here or `, input);
  zone.addEventListener("dragover", (event) => event.preventDefault());
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) onpick(file);
  });
  return zone;
}

export async function tryPage(main) {
  const ids = await all("ListCollections", {}, "CollectionIds");
  const photos = { a: null, b: null }; // {file, url}
  const out = h("section", { id: "result" });
  const collection = h("select", { name: "collection" }, ids.map((id) => h("option", { value: id }, id)));
  const threshold = h("input", { type: "number", name: "threshold", min: 0, max: 100, step: "any", placeholder: "API default" });
  // The similarity threshold of CompareFaces / the searches, left out of the call when empty.
  const at = (member) => (threshold.value === "" ? {} : { [member]: Number(threshold.value) });
  const preview = { a: h("div", { className: "preview" }), b: h("div", { className: "preview" }) };
  const pick = (slot) => (file) => {
    if (photos[slot]) URL.revokeObjectURL(photos[slot].url);
    photos[slot] = { file, url: URL.createObjectURL(file) };
    preview[slot].replaceChildren(figure(photos[slot].url, []));
  };
  const image = async (slot) => {
    if (!photos[slot]) throw new Error(`pick photo ${slot.toUpperCase()} first`);
    return { Bytes: await base64(photos[slot].file) };
  };
  const needCollection = () => {
    if (!collection.value) throw new Error("create a collection first (Collections page)");
    return collection.value;
  };
  const run = (action) => () => guarded(() => action(), out).catch(() => {});

  const actions = {
    DetectFaces: async () => {
      const result = await call("DetectFaces", { Image: await image("a"), Attributes: ["ALL"] });
      const shapes = result.FaceDetails.map((face, i) => ({
        box: face.BoundingBox,
        label: `#${i + 1} ${num(face.Confidence)}%`,
        points: face.Landmarks,
      }));
      out.replaceChildren(
        h("h2", {}, `DetectFaces: ${result.FaceDetails.length} face(s)`),
        figure(photos.a.url, shapes),
        table(["#", "Confidence", "Attributes"], result.FaceDetails.map((f, i) => [String(i + 1), num(f.Confidence, 2), attributes(f)])),
      );
    },
    CompareFaces: async () => {
      const result = await call("CompareFaces", { SourceImage: await image("a"), TargetImage: await image("b"), ...at("SimilarityThreshold") });
      const source = [{ box: result.SourceImageFace?.BoundingBox, label: "source", kind: "searched" }];
      const target = [
        ...result.FaceMatches.map((m) => ({ box: m.Face.BoundingBox, label: `${num(m.Similarity)}%`, kind: "match" })),
        ...result.UnmatchedFaces.map((f) => ({ box: f.BoundingBox, label: "no match", kind: "miss" })),
      ];
      out.replaceChildren(
        h("h2", {}, `CompareFaces: ${result.FaceMatches.length} match(es), ${result.UnmatchedFaces.length} unmatched`),
        h("div", { className: "pair" }, h("div", {}, figure(photos.a.url, source)), h("div", {}, figure(photos.b.url, target))),
      );
    },
    SearchFacesByImage: async () => {
      const result = await call("SearchFacesByImage", { CollectionId: needCollection(), Image: await image("a"), ...at("FaceMatchThreshold") });
      out.replaceChildren(
        h("h2", {}, `SearchFacesByImage: ${result.FaceMatches.length} match(es)`),
        figure(photos.a.url, [{ box: result.SearchedFaceBoundingBox, label: "searched", kind: "searched" }]),
        table(
          ["Similarity", "FaceId", "ExternalImageId", "UserId"],
          result.FaceMatches.map((m) => [num(m.Similarity, 2), h("code", {}, m.Face.FaceId), m.Face.ExternalImageId || "-", m.Face.UserId || "-"]),
        ),
      );
    },
    SearchUsersByImage: async () => {
      const result = await call("SearchUsersByImage", { CollectionId: needCollection(), Image: await image("a"), ...at("UserMatchThreshold") });
      const searched = result.SearchedFace?.FaceDetail?.BoundingBox;
      const unsearched = (result.UnsearchedFaces || []).map((u) => ({ box: u.FaceDetails?.BoundingBox, label: u.Reasons.join(", "), kind: "miss" }));
      out.replaceChildren(
        h("h2", {}, `SearchUsersByImage: ${result.UserMatches.length} match(es)`),
        figure(photos.a.url, [{ box: searched, label: "searched", kind: "searched" }, ...unsearched]),
        table(
          ["Similarity", "UserId", "Status"],
          result.UserMatches.map((m) => [num(m.Similarity, 2), m.User.UserId, m.User.UserStatus]),
        ),
      );
    },
    IndexFaces: async () => {
      const external = photos.a?.file.name.replace(/[^a-zA-Z0-9_.\-:]/g, "_").slice(0, 255);
      const result = await call("IndexFaces", {
        CollectionId: needCollection(),
        Image: await image("a"),
        ExternalImageId: external,
        DetectionAttributes: ["DEFAULT"],
      });
      const indexed = result.FaceRecords.map((r) => ({ box: r.Face.BoundingBox, label: "indexed", kind: "match" }));
      const refused = result.UnindexedFaces.map((u) => ({ box: u.FaceDetail.BoundingBox, label: u.Reasons.join(", "), kind: "miss" }));
      out.replaceChildren(
        h("h2", {}, `IndexFaces: ${indexed.length} indexed, ${refused.length} not indexed`),
        figure(photos.a.url, [...indexed, ...refused]),
        table(
          ["Result", "FaceId", "ExternalImageId", "Reasons"],
          [
            ...result.FaceRecords.map((r) => ["indexed", h("code", {}, r.Face.FaceId), r.Face.ExternalImageId || "-", "-"]),
            ...result.UnindexedFaces.map((u) => ["not indexed", "-", "-", u.Reasons.join(", ")]),
          ],
        ),
      );
    },
  };

  main.replaceChildren(
    h("h1", {}, "Try it"),
    h("div", { className: "pair" }, h("div", {}, picker("Photo A", pick("a")), preview.a), h("div", {}, picker("Photo B", pick("b")), preview.b)),
    h("p", {}, h("label", {}, "Collection ", collection), h("label", {}, "Match threshold ", threshold)),
    h(
      "p",
      { className: "actions" },
      h("button", { onclick: run(actions.DetectFaces) }, "DetectFaces (A)"),
      h("button", { onclick: run(actions.CompareFaces) }, "CompareFaces (A with B)"),
      h("button", { onclick: run(actions.SearchFacesByImage) }, "SearchFacesByImage (A)"),
      h("button", { onclick: run(actions.SearchUsersByImage) }, "SearchUsersByImage (A)"),
      h("button", { onclick: run(actions.IndexFaces) }, "IndexFaces (A)"),
    ),
    out,
  );
}
