// Webhooks: this key's endpoints, each with its recent deliveries; make one (its signing secret is
// shown once), send a test event, delete one.

import { api, request } from "../api.js";
import { announce, errorBox, errorText, h, table, time } from "../ui.js";

export async function renderWebhooks(main, _params, signal) {
  const types = (await api.get("v1/webhook_event_types", signal)).data;
  const list = h("div");
  const secretBox = h("div", { role: "status" });
  const url = h("input", { id: "webhook-url", name: "url", type: "url", required: true, placeholder: "your receiver's http(s) URL", "aria-describedby": "webhook-url-hint" });
  const boxes = types.map((type) => h("label", { class: "checkbox-inline" }, h("input", { type: "checkbox", name: "event_types", value: type, checked: type.startsWith("fine_tuning.") }), ` ${type}`));
  const problem = h("div");
  const form = h("form", { class: "card", novalidate: true },
    h("label", { for: "webhook-url" }, "Receiver URL"), url,
    h("p", { class: "hint", id: "webhook-url-hint" }, "Signed POSTs go here when your jobs end (see docs/webhooks.md)."),
    h("fieldset", {}, h("legend", {}, "Events"), boxes),
    problem, h("div", { class: "actions" }, h("button", { type: "submit" }, "Add endpoint")));
  main.append(h("h1", { tabindex: -1 }, "Webhooks"), form, secretBox, list);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    const eventTypes = [...form.querySelectorAll("input[name=event_types]:checked")].map((box) => box.value);
    try {
      const made = await api.post("v1/webhook_endpoints", { url: url.value, event_types: eventTypes });
      secretBox.replaceChildren(h("div", { class: "card" },
        h("p", {}, `Endpoint ${made.id} added. Its signing secret, shown only now:`),
        h("p", {}, h("code", { class: "secret" }, made.signing_secret))));
      announce(`Webhook endpoint ${made.id} added; copy its signing secret now`);
      form.reset();
      await load();
    } catch (error) {
      problem.replaceChildren(errorBox(error));
    }
  });

  async function load() {
    const endpoints = (await api.get("v1/webhook_endpoints?limit=100", signal)).data;
    const sections = await Promise.all(endpoints.map(async (endpoint) => {
      const deliveries = (await api.get(`v1/webhook_endpoints/${endpoint.id}/deliveries?limit=10`, signal)).data;
      const state = h("span", { class: "download-state", role: "status" });
      return h("section", { class: "card endpoint", "aria-labelledby": `${endpoint.id}-name` },
        h("h2", { id: `${endpoint.id}-name` }, endpoint.name),
        h("p", {}, h("code", {}, endpoint.url), h("span", { class: "hint" }, ` ${endpoint.id} · ${endpoint.event_types.join(", ")}`)),
        h("div", { class: "row-actions" },
          h("button", { type: "button", class: "secondary", onclick: () => test(endpoint, state) }, "Send test event"),
          h("button", { type: "button", class: "danger", "aria-label": `Delete ${endpoint.name} (${endpoint.id})`, onclick: () => remove(endpoint) }, "Delete"),
          state),
        table(`Recent deliveries to ${endpoint.name}`, ["Event", "Object", "Status", "Tries", "Last answer", "Next try"], deliveries.map((delivery) => h("tr", {},
          h("td", {}, delivery.event_type, h("div", { class: "hint" }, h("code", {}, delivery.id))),
          h("td", {}, delivery.data.id.startsWith("ftjob-") ? h("a", { href: `#/jobs/${delivery.data.id}` }, delivery.data.id) : delivery.data.id),
          h("td", {}, h("span", { class: `badge delivery-${delivery.status}` }, delivery.status)),
          h("td", {}, String(delivery.attempts)),
          h("td", {}, delivery.last_error ?? (delivery.last_status_code ? String(delivery.last_status_code) : "—")),
          h("td", {}, time(delivery.next_attempt_at)))),
        "No deliveries yet."));
    }));
    list.replaceChildren(...(sections.length ? sections : [h("p", { class: "empty" }, "No endpoints yet.")]));
  }

  async function test(endpoint, state) {
    state.textContent = "Sending…";
    try {
      const result = await (await request(`v1/webhook_endpoints/${endpoint.id}/test`, { method: "POST", body: { event_type: endpoint.event_types[0] } })).json();
      state.textContent = `${result.event_type}: the receiver answered ${result.status_code}`;
    } catch (error) {
      state.textContent = errorText(error);
    }
  }

  async function remove(endpoint) {
    if (!window.confirm(`Delete the endpoint ${endpoint.name} (${endpoint.id})? Deliveries not yet made are dropped.`)) return;
    try {
      await api.delete(`v1/webhook_endpoints/${endpoint.id}`);
      announce(`Deleted ${endpoint.id}`);
      await load();
    } catch (error) {
      list.prepend(errorBox(error));
    }
  }

  await load();
}
