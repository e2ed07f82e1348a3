// The console's pages, routed by the URL's #fragment. Each page is a function that fills <main>.
import { AUTH_ERRORS, ApiError, keys, saveKeys } from "./api.js";
import { h } from "./dom.js";
import { collectionPage, collectionsPage } from "./collections.js";
import { tryPage } from "./try.js";
import { videosPage } from "./videos.js";

const main = document.getElementById("page");

function keysPage() {
  const current = keys() || {};
  const id = h("input", { name: "accessKeyId", value: current.accessKeyId || "", autocomplete: "username" });
  const secret = h("input", { name: "secretAccessKey", type: "password", autocomplete: "current-password" });
  const region = h("input", { name: "region", value: current.region || "us-east-1" });
  const save = (event) => {
    event.preventDefault();
    saveKeys({ accessKeyId: id.value.trim(), secretAccessKey: secret.value, region: region.value.trim() || "us-east-1" });
    location.hash = "#collections";
  };
  const forget = () => {
    saveKeys(null);
    route();
  };
  main.replaceChildren(
    h("h1", {}, "Keys"),
    h(
      "p",
      {},
      "A server listening beyond loopback accepts only requests signed with its key pair ",
      "(FACEBANK_ACCESS_KEY_ID / FACEBANK_SECRET_ACCESS_KEY). The console signs each request here, ",
      "in the browser (SigV4); the secret key is kept in this tab's session storage and never sent.",
    ),
    h(
      "form",
      { onsubmit: save },
      h("label", {}, "Access key id ", id),
      h("label", {}, "Secret access key ", secret),
      h("label", {}, "Region ", region),
      h("button", { type: "submit" }, "Use these keys"),
      h("button", { type: "button", onclick: forget }, "Forget keys"),
    ),
    h("p", {}, current.accessKeyId ? `Signing as ${current.accessKeyId}.` : "Not signing: requests go unsigned (loopback)."),
  );
}

const PAGES = { collections: collectionsPage, collection: collectionPage, try: tryPage, videos: videosPage, keys: keysPage };

async function route() {
  const [name, ...rest] = (location.hash.slice(1) || "collections").split("/");
  const page = PAGES[name] || collectionsPage;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("current", link.getAttribute("href") === `#${name}`);
  }
  const pair = keys();
  document.getElementById("keys-state").textContent = pair ? `Signed as ${pair.accessKeyId}.` : "";
  try {
    await page(main, ...rest.map(decodeURIComponent));
  } catch (error) {
    if (error instanceof ApiError && AUTH_ERRORS.has(error.type) && name !== "keys") {
      location.hash = "#keys"; // this server wants signed requests: ask for the key pair
      return;
    }
    main.append(h("p", { className: "error" }, error.message));
  }
}

async function health() {
  // GET /health names the server's model pack (the same endpoint load balancers poll).
  try {
    const response = await fetch("/health");
    const body = await response.json();
    document.querySelector("header strong").textContent = body.pack ? `facebank · pack ${body.pack}` : "facebank";
  } catch {
    /* not fatal: the header keeps its plain title */
  }
}

window.addEventListener("hashchange", route);
health();
route();
