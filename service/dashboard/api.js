// The dashboard's only way to the server: lmtune's public /v1 API, with the key from localStorage.

const KEY_ITEM = "lmtune.apiKey";

export const apiKey = {
  get: () => localStorage.getItem(KEY_ITEM),
  set: (value) => localStorage.setItem(KEY_ITEM, value.trim()),
  forget: () => localStorage.removeItem(KEY_ITEM),
};

export class ApiError extends Error {
  constructor(status, { message, code = null, param = null }) {
    super(message);
    this.status = status;
    this.code = code;
    this.param = param;
  }
}

// Relative to the page, so the dashboard also works when the API is served under a path prefix.
export function apiUrl(path) {
  return new URL(path.replace(/^\//, ""), document.baseURI);
}

export async function request(path, { method = "GET", body, headers = {}, signal } = {}) {
  const init = { method, signal, headers: { Authorization: `Bearer ${apiKey.get()}`, ...headers } };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(apiUrl(path), init);
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function errorOf(response) {
  let error = { message: `${response.status} ${response.statusText}` };
  try {
    error = (await response.json()).error ?? error;
  } catch {
    // not JSON: keep the status line
  }
  if (response.status === 401) window.dispatchEvent(new CustomEvent("lmtune:unauthorized", { detail: error.message }));
  return new ApiError(response.status, error);
}

export const api = {
  get: async (path, signal) => (await request(path, { signal })).json(),
  post: async (path, body) => (await request(path, { method: "POST", body })).json(),
  delete: async (path) => (await request(path, { method: "DELETE" })).json(),
};

// EventSource cannot send an Authorization header (nor a POST body), so the server-sent events are
// read with fetch(). lmtune's streams only write `id:` and `data:` fields, ending with `data: [DONE]`.
export async function* serverSentEvents(path, signal, { method = "GET", body } = {}) {
  const response = await request(path, { method, body, signal, headers: { Accept: "text/event-stream" } });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trimStart()).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

// Downloads need the Authorization header and the key must never go into a URL that a server could
// log, so a plain link cannot do: the body is fetched (with progress), then saved through a blob URL.
// The browser holds the whole file in memory meanwhile; for a large model, download it file by file.
export async function download(path, fallbackName, onProgress = () => {}) {
  const response = await request(path);
  const total = Number(response.headers.get("content-length")) || null;
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    onProgress(received, total);
  }
  const name = filenameOf(response.headers.get("content-disposition")) ?? fallbackName;
  saveBlob(new Blob(chunks, { type: response.headers.get("content-type") ?? "" }), name);
  return { name, bytes: received };
}

function filenameOf(disposition) {
  if (!disposition) return null;
  const encoded = /filename\*=utf-8''([^;]+)/i.exec(disposition);
  if (encoded) return decodeURIComponent(encoded[1]);
  return /filename="([^"]+)"/i.exec(disposition)?.[1] ?? null;
}

function saveBlob(blob, name) {
  const link = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

export async function blobUrl(path, signal) {
  return URL.createObjectURL(await (await request(path, { signal })).blob());
}
