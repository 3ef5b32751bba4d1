// Ezra's own page: sign in, submit a link or a file, follow the jobs, download documents;
// admins also see every job and the error log. Only the public REST routes are used, with
// the access token kept in this tab's sessionStorage. Text from the server is always set
// with textContent (never as HTML).
"use strict";

const POLL_MS = 2000;
const FINAL = new Set(["completed", "error", "cancelled"]);
const DOCUMENTS = [["txt", "TXT"], ["md", "Markdown"], ["word", "Word"], ["srt", "SRT"],
                   ["vtt", "VTT"]];
const $ = (id) => document.getElementById(id);
// Where the API is: this page's folder ("/" unless a proxy serves Ezra under a prefix).
const BASE = location.pathname.replace(/[^/]*$/, "");
const url = (path) => BASE + path.replace(/^\//, "");

let pollTimer = null;

function session() {
  const token = sessionStorage.getItem("ezra.token");
  return token ? {token, isAdmin: sessionStorage.getItem("ezra.admin") === "true",
                  username: sessionStorage.getItem("ezra.user") || ""} : null;
}

function signOut(message) {
  sessionStorage.removeItem("ezra.token");
  sessionStorage.removeItem("ezra.admin");
  sessionStorage.removeItem("ezra.user");
  show();
  $("login-error").textContent = message || "";
}

// fetch with the token; a 401 means the session is over (as the other frontend does).
async function api(path, options = {}) {
  const current = session();
  const headers = new Headers(options.headers || {});
  if (current) headers.set("Authorization", "Bearer " + current.token);
  const response = await fetch(url(path), {...options, headers});
  if (response.status === 401 && current) {
    signOut("Your session has ended; please sign in again.");
    throw new Error("signed out");
  }
  return response;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error || body.msg || `HTTP ${response.status}`;
  } catch (_) {
    return `HTTP ${response.status}`;
  }
}

function cell(row, text, className) {
  const td = document.createElement("td");
  if (text instanceof Node) td.append(text); else td.textContent = text ?? "";
  if (className) td.className = className;
  row.append(td);
  return td;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function progressOf(job) {
  const p = job.progress;
  if (!p || FINAL.has(job.status)) return document.createTextNode("");
  const wrap = document.createElement("span");
  if (p.total) {
    const bar = document.createElement("progress");
    bar.max = p.total;
    bar.value = Math.min(p.done || 0, p.total);
    wrap.append(bar, ` ${Math.floor(100 * (p.done || 0) / p.total)}%`);
  } else if (p.done) {
    wrap.textContent = `${p.done} ${p.unit || ""}`;
  }
  return wrap;
}

function fileName(response, fallback) {
  const header = response.headers.get("Content-Disposition") || "";
  const star = /filename\*=UTF-8''([^;]+)/i.exec(header);
  if (star) return decodeURIComponent(star[1]);
  const plain = /filename="?([^";]+)"?/i.exec(header);
  return plain ? plain[1] : fallback;
}

async function download(prefix, type, job, button) {
  button.disabled = true;
  try {
    const response = await api(`${prefix}/download/${type}/${job.id}`);
    if (!response.ok) {
      alert(await errorText(response));
      return;
    }
    const blob = await response.blob();
    const objectUrl = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = objectUrl;
    link.download = fileName(response, `${job.audio_file_name || job.id}.${type}`);
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(objectUrl), 10000);
  } finally {
    button.disabled = false;
  }
}

function documentButtons(job, prefix) {
  const span = document.createElement("span");
  if (job.status !== "completed") return span;
  for (const [type, label] of DOCUMENTS) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link";
    button.dataset.type = type;
    button.textContent = label;
    button.addEventListener("click", () => download(prefix, type, job, button));
    span.append(button);
  }
  return span;
}

function statusCell(row, job) {
  const td = cell(row, job.status, `status status-${job.status}`);
  if (job.error_message) {
    const note = document.createElement("div");
    note.className = "small error";
    note.textContent = job.error_message;
    td.append(note);
  }
  if (job.status === "error" || job.status === "cancelled") {
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "link";
    retry.textContent = "retry";
    retry.addEventListener("click", async () => {
      const response = await api(`/transcriptions/${job.id}/retry`, {method: "POST"});
      if (!response.ok) alert(await errorText(response));
      refresh();
    });
    td.append(retry);
  }
  if (!FINAL.has(job.status) && job.status) {
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "link";
    cancel.textContent = "cancel";
    cancel.addEventListener("click", async () => {
      await api(`/transcriptions/${job.id}/cancel`, {method: "POST"});
      refresh();
    });
    td.append(cancel);
  }
}

function renderJobs(jobs) {
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren();
  for (const job of jobs) {
    const row = document.createElement("tr");
    row.dataset.id = job.id;
    row.dataset.status = job.status;
    cell(row, job.audio_file_name || "(untitled)", "title");
    statusCell(row, job);
    cell(row, progressOf(job));
    cell(row, when(job.created_at));
    cell(row, documentButtons(job, ""), "documents");
    body.append(row);
  }
  $("jobs-empty").hidden = jobs.length > 0;
}

function renderAdmin(jobs, logs) {
  const body = document.querySelector("#admin-jobs tbody");
  body.replaceChildren();
  for (const job of jobs) {
    const row = document.createElement("tr");
    row.dataset.id = job.id;
    cell(row, job.username);
    cell(row, job.audio_file_name || "(untitled)");
    cell(row, job.status, `status-${job.status}`);
    cell(row, when(job.created_at));
    cell(row, job.error_message || "", "small error");
    cell(row, documentButtons(job, "/admin"));
    body.append(row);
  }
  const logBody = document.querySelector("#admin-logs tbody");
  logBody.replaceChildren();
  for (const log of logs) {
    const row = document.createElement("tr");
    cell(row, when(log.created_at));
    cell(row, log.user_id);
    cell(row, log.transcription_id || "");
    cell(row, log.step || "");
    cell(row, log.error_message);
    logBody.append(row);
  }
}

let adminTick = 0;

async function refresh() {
  clearTimeout(pollTimer);
  const current = session();
  if (!current) return;
  try {
    const response = await api("/transcriptions?limit=100");
    if (response.ok) renderJobs(await response.json());
    // The admin tables change less often: every fifth poll.
    if (current.isAdmin && adminTick++ % 5 === 0) {
      const [jobs, logs] = await Promise.all([api("/admin/transcriptions?limit=100"),
                                              api("/admin/logs?limit=100")]);
      if (jobs.ok && logs.ok) renderAdmin(await jobs.json(), await logs.json());
    }
  } catch (error) {
    if (!session()) return;  // signed out meanwhile
  }
  pollTimer = setTimeout(refresh, POLL_MS);
}

function show() {
  const current = session();
  $("login-view").hidden = !!current;
  $("app-view").hidden = !current;
  $("logout").hidden = !current;
  $("admin-view").hidden = !(current && current.isAdmin);
  $("who").textContent = current ? current.username + (current.isAdmin ? " (admin)" : "") : "";
  if (current) {
    adminTick = 0;
    refresh();
  } else {
    clearTimeout(pollTimer);
  }
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  const username = $("username").value.trim();
  const response = await fetch(url("/login"), {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({username, password: $("password").value})});
  if (!response.ok) {
    $("login-error").textContent = await errorText(response);
    return;
  }
  const body = await response.json();
  sessionStorage.setItem("ezra.token", body.access_token);
  sessionStorage.setItem("ezra.admin", String(!!body.is_admin));
  sessionStorage.setItem("ezra.user", username);
  $("password").value = "";
  show();
});

$("submit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = $("submit-message");
  const link = $("link").value.trim();
  const file = $("file").files[0];
  if (!!link === !!file) {
    message.className = "error";
    message.textContent = "Give either a link or a file (not both).";
    return;
  }
  const form = new FormData();
  if (link) form.append("drive_link", link); else form.append("file", file);
  for (const [id, name] of [["start", "start_time"], ["end", "end_time"]]) {
    const value = $(id).value.trim();
    if (value) form.append(name, value);
  }
  $("submit").disabled = true;
  message.className = "";
  message.textContent = link ? "Checking the link..." : "Uploading...";
  try {
    const response = await api("/process", {method: "POST", body: form});
    if (!response.ok) {
      message.className = "error";
      message.textContent = await errorText(response);
      return;
    }
    message.textContent = "Submitted.";
    $("submit-form").reset();
    adminTick = 0;  // the admin tables show the new job at once too
    refresh();
  } catch (error) {
    if (session()) {
      message.className = "error";
      message.textContent = "Could not reach the server; try again.";
    }
  } finally {
    $("submit").disabled = false;
  }
});

$("logout").addEventListener("click", () => signOut(""));

show();
