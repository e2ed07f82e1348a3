// The Rekognition API as every client calls it: POST / with X-Amz-Target, AWS JSON 1.1.
// With keys (a server beyond loopback), requests are signed with SigV4 in the browser by
// aws4fetch; the secret key never leaves the browser, only the signature is sent.
import { AwsClient } from "./vendor/aws4fetch.mjs";

const STORE = "facebank.keys"; // sessionStorage: forgotten when the tab closes

export class ApiError extends Error {
  constructor(type, message, status) {
    super(`${type}: ${message}`);
    this.type = type;
    this.status = status;
  }
}

export function keys() {
  const saved = sessionStorage.getItem(STORE);
  return saved ? JSON.parse(saved) : null;
}

export function saveKeys(value) {
  if (value) sessionStorage.setItem(STORE, JSON.stringify(value));
  else sessionStorage.removeItem(STORE);
}

// Errors that mean "this server wants signed requests (with other keys)".
export const AUTH_ERRORS = new Set([
  "MissingAuthenticationTokenException",
  "UnrecognizedClientException",
  "InvalidSignatureException",
]);

export async function call(operation, params = {}) {
  const init = {
    method: "POST",
    headers: {
      "Content-Type": "application/x-amz-json-1.1",
      "X-Amz-Target": `RekognitionService.${operation}`,
    },
    body: JSON.stringify(params),
  };
  const url = new URL("/", location.href).href;
  const pair = keys();
  let response;
  if (pair) {
    if (!crypto.subtle) {
      throw new ApiError("ConsoleError", "signing needs WebCrypto, which browsers give only to https:// or localhost pages", 0);
    }
    // aws4fetch never signs Content-Type, and a server that checks signatures as AWS does refuses an
    // unsigned one, so a signed call sends its JSON as bytes without that header (as the server allows).
    delete init.headers["Content-Type"];
    init.body = new TextEncoder().encode(init.body);
    const client = new AwsClient({
      accessKeyId: pair.accessKeyId,
      secretAccessKey: pair.secretAccessKey,
      service: "rekognition",
      region: pair.region || "us-east-1",
    });
    response = await client.fetch(url, init);
  } else {
    response = await fetch(url, init);
  }
  const text = await response.text();
  let data = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = { Message: text };
  }
  if (!response.ok) {
    const type = (data.__type || `HTTP${response.status}`).split("#").pop();
    throw new ApiError(type, data.Message || data.message || response.statusText, response.status);
  }
  return data;
}

// Every page of a paginated call, concatenated (member: the list in each response).
export async function all(operation, params, member) {
  const items = [];
  let token;
  do {
    const page = await call(operation, token ? { ...params, NextToken: token } : params);
    items.push(...(page[member] || []));
    token = page.NextToken;
  } while (token);
  return items;
}

// A File or Blob as the base64 string an Image's Bytes carries.
export function base64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}
