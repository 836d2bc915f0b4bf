// The chat page: POST /v1/answer/stream, read the server-sent events with fetch + ReadableStream
// (EventSource cannot POST), render sources on `context`, append `delta`s, stop with an AbortController.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("ask-form");
const queryBox = $("query");
const authorBox = $("author");
const askButton = $("ask");
const stopButton = $("stop");
const answerBox = $("answer");
const sourcesList = $("sources");
const errorBox = $("error");
const statusText = $("status");
const metaText = $("meta");

let controller = null;

function setState(state, label) {
  answerBox.dataset.state = state;
  statusText.textContent = label || "";
  const busy = state === "waiting" || state === "streaming";
  askButton.disabled = busy;
  stopButton.disabled = !busy;
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function errorMessage(body, fallback) {
  const error = body && body.error;
  if (!error) return fallback;
  const violations = (error.field_violations || []).map((v) => `${v.field}: ${v.description}`);
  const detail = violations.length ? ` (${violations.join("; ")})` : "";
  return `${error.message || fallback}${detail} [${error.status || error.code}]`;
}

function renderSources(context) {
  sourcesList.replaceChildren();
  for (const doc of context.documents || []) {
    const item = document.createElement("li");
    item.dataset.testid = "source";
    const title = document.createElement(doc.link ? "a" : "span");
    title.className = "title";
    title.textContent = doc.title || doc.document_id;
    if (doc.link) {
      title.href = doc.link;
      title.target = "_blank";
      title.rel = "noopener noreferrer";
    }
    const details = document.createElement("div");
    details.className = "details";
    const score = typeof doc.score === "number" ? doc.score.toFixed(3) : "";
    details.textContent = `${doc.author_full_name || doc.author_id} · ${doc.kind} · score ${score}`;
    item.append(title, details);
    sourcesList.append(item);
  }
}

// Yields {event, data} for each server-sent event in a fetch response body.
async function* readEvents(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    while (!signal.aborted) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
      }
    }
  } finally {
    reader.releaseLock();
  }
}

async function ask(event) {
  event.preventDefault();
  const query = queryBox.value.trim();
  if (!query) return;
  const author = authorBox.value.trim();
  const body = { query, options: author ? { author } : {} };

  controller = new AbortController();
  answerBox.textContent = "";
  sourcesList.replaceChildren();
  metaText.textContent = "";
  errorBox.hidden = true;
  setState("waiting", "retrieving…");

  try {
    const response = await fetch("/v1/answer/stream", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      const payload = await response.json().catch(() => null);
      throw new Error(errorMessage(payload, `HTTP ${response.status}`));
    }
    for await (const { event: name, data } of readEvents(response.body, controller.signal)) {
      if (name === "context") {
        renderSources(data);
        setState("streaming", "writing…");
      } else if (name === "delta") {
        answerBox.textContent += data.text;
      } else if (name === "done") {
        const usage = data.usage || {};
        metaText.textContent =
          `${usage.completion_tokens || 0} tokens · first token ${(data.time_to_first_token_s || 0).toFixed(2)} s` +
          ` · total ${(data.total_time_s || 0).toFixed(2)} s · ${data.model_id || ""}`;
        setState("done", "");
      } else if (name === "error") {
        throw new Error(errorMessage(data, "the answer stream failed"));
      }
    }
    if (answerBox.dataset.state !== "done") setState("stopped", "stopped");
  } catch (error) {
    if (error.name === "AbortError") {
      setState("stopped", "stopped");
    } else {
      showError(error.message || String(error));
      setState("error", "");
    }
  } finally {
    controller = null;
  }
}

form.addEventListener("submit", ask);
stopButton.addEventListener("click", () => {
  if (controller) controller.abort();
});
queryBox.addEventListener("keydown", (event) => {
  // Enter asks; Shift+Enter makes a new line.
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    form.requestSubmit();
  }
});
