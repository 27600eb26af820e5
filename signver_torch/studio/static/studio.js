// SignVer Studio page: plain JavaScript over the /api endpoints, nothing fetched from elsewhere.
"use strict";

const $ = (selector) => document.querySelector(selector);
const el = (tag, attributes = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
};

function headers() {
  const token = $("#token").value || sessionStorage.getItem("signver-token") || "";
  if ($("#token").value) sessionStorage.setItem("signver-token", $("#token").value);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : {};
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function status(id, text, error = false) {
  const node = $(id);
  node.textContent = text;
  node.classList.toggle("error", error);
}

function addFiles(form, name, input) {
  for (const file of input.files) form.append(name, file);
}

// ---- tabs
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    document.querySelectorAll(".tab, .panel").forEach((node) => node.classList.remove("active"));
    tab.classList.add("active");
    $(`#${tab.dataset.tab}`).classList.add("active");
    if (tab.dataset.tab === "people") loadPeople();
    if (tab.dataset.tab === "library") loadDocuments();
  });
}

// ---- verify a document
$("#verify-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData();
  form.append("page", $("#verify-page").files[0]);
  if (document.querySelector("input[name=claim]:checked").value === "person") form.append("person", $("#verify-person").value);
  else addFiles(form, "references", $("#verify-references"));
  status("#verify-status", "verifying…");
  $("#verify-result").replaceChildren();
  try {
    const report = await api("/api/verify-document?images=true", { method: "POST", body: form });
    status("#verify-status", "");
    showReport(report);
  } catch (error) {
    status("#verify-status", error.message, true);
  }
});

function showReport(report) {
  const result = $("#verify-result");
  const verdict = el("div", { class: `verdict ${report.match ? "match" : "nomatch"}`, id: "verdict" }, report.verdict);
  const pages = el("div");
  report.previews.forEach((preview, index) => {
    const view = el("div", { class: "pageview" });
    const image = el("img", { src: preview.png, alt: `page ${index + 1}` });
    view.append(image);
    const [width, height] = preview.size;
    report.signatures.forEach((signature, number) => {
      if (signature.page !== index + 1) return;
      const [x0, y0, x1, y1] = signature.box_xyxy;
      const box = el("div", { class: `box ${signature.match ? "match" : "nomatch"}` }, el("span", {}, `#${number + 1}`));
      Object.assign(box.style, { left: `${100 * x0 / width}%`, top: `${100 * y0 / height}%`,
                                 width: `${100 * (x1 - x0) / width}%`, height: `${100 * (y1 - y0) / height}%` });
      view.append(box);
    });
    pages.append(view);
  });
  const list = el("div", { class: "signatures" }, verdict,
                  el("div", { class: "muted" }, `claimed: ${report.claimed}`));
  report.signatures.forEach((signature, number) => {
    list.append(el("div", { class: "signature" },
      el("div", {}, el("img", { src: signature.crop_png, alt: "crop" }), el("img", { src: signature.cleaned_png, alt: "cleaned" })),
      el("div", {}, `#${number + 1} (page ${signature.page}): ${signature.match ? "MATCH" : "NO MATCH"} — ${signature.rule} score `
        + `${signature.score.toFixed(3)} vs threshold ${signature.threshold.toFixed(3)}, distance ${signature.distance.toFixed(3)}`)));
  });
  result.replaceChildren(pages, list);
}

// ---- people
async function loadPeople() {
  try {
    const { people } = await api("/api/people");
    const rows = people.map((entry) => {
      const forget = el("button", {}, "remove");
      forget.addEventListener("click", async () => {
        try { await api(`/api/people/${encodeURIComponent(entry.person)}`, { method: "DELETE" }); loadPeople(); }
        catch (error) { status("#people-status", error.message, true); }
      });
      return el("tr", {}, el("td", {}, entry.person), el("td", {}, String(entry.n_references)), el("td", {}, forget));
    });
    $("#people-table tbody").replaceChildren(...rows);
    for (const select of [$("#verify-person"), $("#search-person")]) {
      select.replaceChildren(...people.map((entry) => el("option", { value: entry.person }, entry.person)));
    }
  } catch (error) {
    status("#people-status", error.message, true);
  }
}

$("#enroll-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData();
  form.append("person", $("#enroll-person").value);
  addFiles(form, "signatures", $("#enroll-signatures"));
  try {
    const answer = await api("/api/enroll", { method: "POST", body: form });
    status("#people-status", `enrolled ${answer.added} signature(s) of ${answer.person} (${answer.n_references} in all)`);
    loadPeople();
  } catch (error) {
    status("#people-status", error.message, true);
  }
});

// ---- library
function documentCard(entry, extra = "") {
  const card = el("div", { class: "card" });
  api(`/api/library/documents/${entry.document_id ?? entry.id}`).then((detail) => {
    const page = detail.pages.find((candidate) => candidate.number === (entry.page ?? 1)) || detail.pages[0];
    card.prepend(el("img", { src: `/api/library/pages/${page.id}/thumbnail`, alt: detail.name }));
  }).catch(() => {});
  const tags = el("div");
  for (const tag of entry.tags || []) tags.append(el("span", { class: "tag" }, tag));
  card.append(el("strong", {}, entry.name), tags, el("div", { class: "muted" }, extra));
  return card;
}

async function loadDocuments() {
  const query = [...document.querySelectorAll(".filters input:checked")].map((box) => `tag=${encodeURIComponent(box.value)}`).join("&");
  try {
    const { documents } = await api(`/api/library/documents${query ? `?${query}` : ""}`);
    $("#documents").replaceChildren(...documents.map((entry) =>
      documentCard(entry, `${entry.n_pages} page(s), ${entry.n_signatures} signature(s)`)));
    status("#library-status", `${documents.length} document(s)`);
  } catch (error) {
    status("#library-status", error.message, true);
  }
}
document.querySelectorAll(".filters input").forEach((box) => box.addEventListener("change", loadDocuments));

$("#index-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData();
  addFiles(form, "documents", $("#index-files"));
  const bar = $("#index-progress");
  try {
    let job = await api("/api/library/documents", { method: "POST", body: form });
    bar.hidden = false;
    while (job.state !== "done") {
      bar.value = job.progress;
      status("#library-status", `indexing: ${job.done} of ${job.total}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
      job = await api(`/api/library/jobs/${job.id}`);
    }
    bar.value = 1;
    const failed = job.results.filter((result) => result.error);
    status("#library-status", `indexed ${job.total - failed.length} of ${job.total}` +
      (failed.length ? `; ${failed.map((result) => result.error).join("; ")}` : ""), failed.length > 0);
    loadDocuments();
  } catch (error) {
    status("#library-status", error.message, true);
  }
});

// ---- search
$("#search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData();
  if (document.querySelector("input[name=by]:checked").value === "person") form.append("person", $("#search-person").value);
  else form.append("signature", $("#search-signature").files[0]);
  try {
    const { documents } = await api("/api/library/search", { method: "POST", body: form });
    $("#search-results").replaceChildren(...documents.map((hit) => documentCard(hit,
      `page ${hit.page}: distance ${hit.distance.toFixed(3)} — ${hit.match ? "match" : "no match"} (${hit.rule})`)));
    status("#search-status", `${documents.length} document(s), closest first`);
  } catch (error) {
    status("#search-status", error.message, true);
  }
});

// ---- start
api("/api/health").then((health) => {
  $("#health").textContent = `models loaded · extractor ${health.models.extractor.sha256.slice(0, 8)} · rule ${health.rule}`;
  if (health.gallery) loadPeople();
}).catch((error) => { $("#health").textContent = error.message; });
