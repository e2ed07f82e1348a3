// Small DOM helpers: build elements, show results, draw boxes over a photo.

// An event listener whose failure (a thrown error or a rejected promise) is shown in the header
// instead of escaping as an unhandled rejection.
function listener(handler) {
  return (event) => {
    try {
      Promise.resolve(handler(event)).catch((error) => status(error.message, "error"));
    } catch (error) {
      status(error.message, "error");
    }
  };
}

// h("button", {onclick}, "text", child...) -> element. Attributes starting with "on" are listeners.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), listener(value));
    else if (key === "className") el.className = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function table(headers, rows) {
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, headers.map((name) => h("th", {}, name)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell))))),
  );
}

export function pct(value) {
  return `${(100 * value).toFixed(3)}%`;
}

export function num(value, digits = 1) {
  return value === undefined || value === null ? "-" : Number(value).toFixed(digits);
}

// A photo with boxes drawn over it. BoundingBox values are ratios of the image's width and
// height, so they place directly as percentages of the (scaled) image.
// shapes: [{box, label, kind: "face"|"match"|"miss"|"searched", points: [{X, Y}]}]
export function figure(url, shapes) {
  const layer = h("div", { className: "photo" }, h("img", { src: url, alt: "photo" }));
  for (const shape of shapes) {
    const box = shape.box;
    if (box) {
      const el = h("div", { className: `box ${shape.kind || "face"}` }, shape.label ? h("span", {}, shape.label) : null);
      Object.assign(el.style, { left: pct(box.Left), top: pct(box.Top), width: pct(box.Width), height: pct(box.Height) });
      layer.append(el);
    }
    for (const point of shape.points || []) {
      const dot = h("div", { className: "dot", title: point.Type || "" });
      Object.assign(dot.style, { left: pct(point.X), top: pct(point.Y) });
      layer.append(dot);
    }
  }
  return layer;
}

// A busy/error/ok line in the header while a call runs.
export function status(text, kind = "") {
  const el = document.getElementById("status");
  el.textContent = text;
  el.className = kind;
}

// Run an async action, reporting its error in the header (and in the page when given an element).
export async function guarded(action, where = null) {
  status("working…", "busy");
  try {
    const result = await action();
    status("");
    return result;
  } catch (error) {
    status(error.message, "error");
    if (where) where.replaceChildren(h("p", { className: "error" }, error.message));
    throw error;
  }
}
