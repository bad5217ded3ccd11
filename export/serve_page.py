"""The service's web page (``GET /``): plain HTML and a little JavaScript, no build step.

Enrol a person from uploaded photos, list and delete the people of the gallery, search with a
photo and see the top matches with their scores and the decision. It calls the same JSON API
as any client (``fetch`` with multipart ``FormData``); the token field fills the
``Authorization`` header of the write calls.
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Face recognition</title>
<style>
 body { font-family: sans-serif; margin: 2em auto; max-width: 46em; color: #222; }
 section { border: 1px solid #ccc; border-radius: 6px; padding: 0.8em 1.2em; margin: 1em 0; }
 h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 0; }
 table { border-collapse: collapse; } td, th { padding: 0.2em 0.8em; text-align: left; }
 .error { color: #b00; } .decision { font-weight: bold; font-size: 1.2em; }
</style>
</head>
<body>
<h1>Face recognition</h1>
<p id="status">connecting&hellip;</p>
<label>Token (write calls, if the service has one):
 <input id="token" type="password" autocomplete="off"></label>

<section>
<h2>Enrol a person</h2>
<form id="enrol-form">
 <label>Name <input id="enrol-name" required></label>
 <label>Photos <input id="enrol-files" type="file" accept="image/*" multiple required></label>
 <button id="enrol-button" type="submit">Enrol</button>
</form>
<p id="enrol-result"></p>
</section>

<section>
<h2>People</h2>
<table><thead><tr><th>Name</th><th>Images</th><th></th></tr></thead>
<tbody id="people"></tbody></table>
</section>

<section>
<h2>Search</h2>
<form id="search-form">
 <label>Photo <input id="search-file" type="file" accept="image/*" required></label>
 <label>Top <input id="search-k" type="number" min="1" max="100" value="5"></label>
 <button id="search-button" type="submit">Search</button>
</form>
<p>Decision: <span id="decision" class="decision"></span></p>
<table><thead><tr><th>#</th><th>Name</th><th>Score</th></tr></thead>
<tbody id="matches"></tbody></table>
</section>

<script>
"use strict";
function authHeaders() {
  const token = document.getElementById("token").value;
  return token ? {"Authorization": "Bearer " + token} : {};
}
async function call(method, url, body, write) {
  const response = await fetch(url, {method: method, body: body,
                                     headers: write ? authHeaders() : {}});
  let payload = {};
  try { payload = await response.json(); } catch (e) { payload = {}; }
  if (!response.ok) { throw new Error(payload.error || ("HTTP " + response.status)); }
  return payload;
}
function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}
async function refresh() {
  const list = await call("GET", "/v1/gallery");
  const body = document.getElementById("people");
  body.textContent = "";
  for (const person of list.identities) {
    const row = document.createElement("tr");
    row.className = "person";
    cell(row, person.identity);
    cell(row, String(person.images));
    const button = document.createElement("button");
    button.textContent = "Delete";
    button.className = "delete";
    button.onclick = async () => {
      try {
        await call("DELETE", "/v1/gallery/" + encodeURIComponent(person.identity), null, true);
        await refresh();
      } catch (e) { showStatus(e.message, true); }
    };
    cell(row, "").appendChild(button);
    body.appendChild(row);
  }
}
function showStatus(text, error) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = error ? "error" : "";
}
document.getElementById("enrol-form").onsubmit = async (event) => {
  event.preventDefault();
  const name = document.getElementById("enrol-name").value.trim();
  const form = new FormData();
  for (const file of document.getElementById("enrol-files").files) {
    form.append("images", file, file.name);
  }
  const out = document.getElementById("enrol-result");
  try {
    const result = await call("POST", "/v1/gallery/" + encodeURIComponent(name), form, true);
    out.textContent = "Enrolled " + result.enrolled + " image(s) of " + result.identity +
                      " (" + result.images + " in all)";
    out.className = "enrolled";
    document.getElementById("enrol-form").reset();
    await refresh();
  } catch (e) { out.textContent = e.message; out.className = "error"; }
};
document.getElementById("search-form").onsubmit = async (event) => {
  event.preventDefault();
  const form = new FormData();
  const file = document.getElementById("search-file").files[0];
  form.append("image", file, file.name);
  const k = document.getElementById("search-k").value || "5";
  const decision = document.getElementById("decision");
  const body = document.getElementById("matches");
  body.textContent = "";
  decision.textContent = "";
  try {
    const result = await call("POST", "/v1/identify?top_k=" + encodeURIComponent(k), form);
    result.matches.forEach((match, i) => {
      const row = document.createElement("tr");
      cell(row, String(i + 1));
      cell(row, match.identity);
      cell(row, match.score.toFixed(4));
      body.appendChild(row);
    });
    decision.textContent = result.decision;
    decision.className = "decision done";
  } catch (e) { decision.textContent = e.message; decision.className = "decision error"; }
};
(async () => {
  try {
    const health = await call("GET", "/healthz");
    showStatus("Model ready: " + health.gallery_faces + " face image(s) in the gallery, " +
               "threshold " + (health.identify_threshold === null ? "none" :
                               health.identify_threshold.toFixed(4)));
    await refresh();
  } catch (e) { showStatus(e.message, true); }
})();
</script>
</body>
</html>
"""
