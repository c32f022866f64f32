// The API playground: one pasted key, two Swagger UIs (Studio and FleetSpace) and a customer
// picker. Swagger UI sends every call through `withPlatformHeaders`, so "Try it out" carries
// the key (and, in FleetSpace, the customer id) without the user typing them per operation.
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("playground-config").textContent);
  const HEADERS = config.headers;
  const CUSTOMERS_PAGE_SIZE = 100;
  const KEY_SETTLE_MS = 300; // wait for the paste or typing to finish before listing customers

  // sessionStorage: a reload keeps the key, closing the tab forgets it.
  const STORED = {
    key: "fleetplane.playground.key",
    tab: "fleetplane.playground.tab",
    module: "fleetplane.playground.module",
    customer: "fleetplane.playground.customer",
  };

  const state = {
    key: recall(STORED.key) || "",
    tab: recall(STORED.tab) === "fleetspace" ? "fleetspace" : "studio",
    module: recall(STORED.module) || "",
    customer: parseStoredCustomer(recall(STORED.customer)),
    customersRequest: null, // AbortController of the listing in flight
  };
  const swagger = { studio: null, fleetspace: null };
  const element = (id) => document.getElementById(id);

  // ---- storage ----------------------------------------------------------------------------

  function recall(name) {
    try {
      return window.sessionStorage.getItem(name);
    } catch {
      return null; // storage can be disabled; the page still works for this visit
    }
  }

  function remember(name, value) {
    try {
      if (value) window.sessionStorage.setItem(name, value);
      else window.sessionStorage.removeItem(name);
    } catch {
      // as above: nothing to keep it in
    }
  }

  function parseStoredCustomer(text) {
    try {
      const customer = JSON.parse(text || "null");
      return customer && typeof customer.id === "string" ? customer : null;
    } catch {
      return null;
    }
  }

  // ---- requests ---------------------------------------------------------------------------

  function isOwnOrigin(url) {
    try {
      return new URL(url, window.location.href).origin === window.location.origin;
    } catch {
      return false;
    }
  }

  // Swagger UI's requestInterceptor. The key goes only to this server, never to a URL a
  // document might point elsewhere; the documents themselves are public and get nothing.
  function withPlatformHeaders(sendCustomer) {
    return (request) => {
      if (request.loadSpec || !isOwnOrigin(request.url)) return request;
      request.headers = request.headers || {};
      if (state.key) request.headers[HEADERS.api_key] = state.key;
      if (sendCustomer && state.customer) request.headers[HEADERS.customer] = state.customer.id;
      return request;
    };
  }

  class ProblemError extends Error {}

  async function problemDetail(response) {
    try {
      const body = await response.json();
      if (body && body.detail) return `${body.detail} (${response.status})`;
    } catch {
      // not JSON: fall back to the status line
    }
    return `The server answered ${response.status} ${response.statusText}.`.trim();
  }

  // Every customer the key can see, following next_cursor to the last page.
  async function listAllCustomers(key, signal) {
    const customers = [];
    const seenCursors = new Set();
    let cursor = null;
    do {
      const url = new URL(config.customers_url, window.location.href);
      url.searchParams.set("limit", String(CUSTOMERS_PAGE_SIZE));
      if (cursor) url.searchParams.set("cursor", cursor);
      const response = await fetch(url, {
        headers: { [HEADERS.api_key]: key, Accept: "application/json" },
        signal,
      });
      if (!response.ok) throw new ProblemError(await problemDetail(response));
      const page = await response.json();
      customers.push(...page.items);
      seenCursors.add(cursor);
      cursor = page.next_cursor;
    } while (cursor && !seenCursors.has(cursor));
    return customers;
  }

  // ---- Swagger UI -------------------------------------------------------------------------

  function createSwaggerUI(domId, url, sendCustomer) {
    return window.SwaggerUIBundle({
      dom_id: `#${domId}`,
      url,
      presets: [window.SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      requestInterceptor: withPlatformHeaders(sendCustomer),
      validatorUrl: null, // the default badge would call validator.swagger.io
      deepLinking: false,
      displayRequestDuration: true,
      docExpansion: "list",
      defaultModelsExpandDepth: 0,
      showExtensions: true,
      tryItOutEnabled: false,
    });
  }

  function showStudioUI() {
    if (swagger.studio) return;
    swagger.studio = createSwaggerUI("studio-ui", config.studio.openapi_url, false);
  }

  function showModuleUI(module) {
    if (!swagger.fleetspace) {
      swagger.fleetspace = createSwaggerUI("fleetspace-ui", module.openapi_url, true);
      return;
    }
    swagger.fleetspace.specActions.updateUrl(module.openapi_url);
    swagger.fleetspace.specActions.download(module.openapi_url);
  }

  // ---- tabs -------------------------------------------------------------------------------

  // Only the page's own tabs: an expanded operation in Swagger UI has role=tab elements too.
  const apiTabs = () => document.querySelectorAll("#api-tabs [role=tab]");

  function showTab(name) {
    state.tab = name;
    remember(STORED.tab, name);
    for (const tab of apiTabs()) {
      const selected = tab.dataset.tab === name;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
      element(tab.getAttribute("aria-controls")).hidden = !selected;
    }
    if (name === "studio") showStudioUI();
    else showKnownModule();
  }

  // ---- modules ----------------------------------------------------------------------------

  function renderModuleList() {
    const list = element("module-list");
    for (const module of config.modules) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "module";
      button.dataset.module = module.name;
      const title = document.createElement("span");
      title.className = "module-title";
      title.textContent = module.title;
      const description = document.createElement("span");
      description.className = "module-description";
      description.textContent = module.description;
      button.append(title, description);
      button.addEventListener("click", () => selectModule(module.name));
      const item = document.createElement("li");
      item.append(button);
      list.append(item);
    }
  }

  // The module chosen before a reload, or the first one (the list can change on upgrade).
  function showKnownModule() {
    const known = config.modules.some((module) => module.name === state.module);
    if (known) selectModule(state.module);
    else if (config.modules.length > 0) selectModule(config.modules[0].name);
  }

  function selectModule(name) {
    const module = config.modules.find((candidate) => candidate.name === name);
    if (!module) return;
    const alreadyShown = swagger.fleetspace && state.module === name;
    state.module = name;
    remember(STORED.module, name);
    for (const button of document.querySelectorAll("#module-list .module")) {
      if (button.dataset.module === name) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
    if (!alreadyShown) showModuleUI(module);
  }

  // ---- key --------------------------------------------------------------------------------

  function setKey(key) {
    state.key = key.trim();
    remember(STORED.key, state.key);
    renderKeyStatus();
  }

  function renderKeyStatus() {
    const status = element("key-status");
    status.textContent = state.key ? "Sent with every call" : "Every call needs a key";
    status.dataset.state = state.key ? "set" : "missing";
  }

  function bindKeyForm() {
    const input = element("api-key");
    input.value = state.key;
    let settle = null;
    input.addEventListener("input", () => {
      setKey(input.value);
      clearTimeout(settle);
      settle = setTimeout(loadCustomers, KEY_SETTLE_MS);
    });
    element("key-form").addEventListener("submit", (event) => event.preventDefault());
    element("key-forget").addEventListener("click", () => {
      input.value = "";
      setKey("");
      loadCustomers();
      input.focus();
    });
    const visibility = element("key-visibility");
    visibility.addEventListener("click", () => {
      const showing = input.type === "text";
      input.type = showing ? "password" : "text";
      visibility.textContent = showing ? "Show" : "Hide";
      visibility.setAttribute("aria-pressed", String(!showing));
    });
    renderKeyStatus();
  }

  // ---- customers --------------------------------------------------------------------------

  function setCustomer(customer) {
    state.customer = customer && customer.id ? customer : null;
    remember(STORED.customer, state.customer ? JSON.stringify(state.customer) : "");
    renderCurrentCustomer();
  }

  function renderCurrentCustomer() {
    const current = element("customer-current");
    const customer = state.customer;
    current.dataset.state = customer ? "chosen" : "none";
    element("customer-current-name").textContent = customer
      ? customer.name || "customer typed by hand"
      : "no customer: module calls will be refused";
    element("customer-current-id").textContent = customer ? customer.id : "";
  }

  function option(value, text) {
    const item = document.createElement("option");
    item.value = value;
    item.textContent = text;
    return item;
  }

  function showCustomerOptions(placeholder, customers = []) {
    const select = element("customer-select");
    select.replaceChildren(option("", placeholder));
    for (const customer of customers) {
      const item = option(customer.id, customer.name);
      item.title = customer.id;
      select.append(item);
    }
    select.disabled = customers.length === 0;
  }

  function showManualEntry(errorText) {
    const error = element("customer-error");
    error.textContent = errorText ? `Cannot list customers: ${errorText}` : "";
    error.hidden = !errorText;
    element("customer-manual").hidden = !errorText;
    if (errorText) element("customer-id").value = state.customer ? state.customer.id : "";
  }

  async function loadCustomers() {
    if (state.customersRequest) state.customersRequest.abort();
    showManualEntry("");
    if (!state.key) {
      showCustomerOptions("Paste an API key first");
      return;
    }
    const request = new AbortController();
    state.customersRequest = request;
    showCustomerOptions("Loading customers…");
    try {
      const customers = await listAllCustomers(state.key, request.signal);
      showCustomers(customers);
    } catch (error) {
      if (request.signal.aborted) return; // a newer key replaced this listing
      showCustomerOptions("Customers unavailable");
      showManualEntry(error instanceof ProblemError ? error.message : String(error));
    } finally {
      if (state.customersRequest === request) state.customersRequest = null;
    }
  }

  function showCustomers(customers) {
    if (customers.length === 0) {
      showCustomerOptions("This key sees no customers");
      setCustomer(null);
      return;
    }
    showCustomerOptions(`Choose a customer (${customers.length})`, customers);
    // Keep the customer chosen before a reload when this key still sees it; otherwise the
    // user picks one, so no call goes to a customer they did not choose.
    const kept = state.customer && customers.find((c) => c.id === state.customer.id);
    element("customer-select").value = kept ? kept.id : "";
    setCustomer(kept ? { id: kept.id, name: kept.name } : null);
  }

  function bindCustomerPicker() {
    const select = element("customer-select");
    select.addEventListener("change", () => {
      const chosen = select.selectedOptions[0];
      setCustomer(select.value ? { id: select.value, name: chosen.textContent } : null);
    });
    element("customer-id").addEventListener("input", (event) => {
      const id = event.target.value.trim();
      setCustomer(id ? { id, name: "" } : null);
    });
  }

  // ---- start ------------------------------------------------------------------------------

  function start() {
    renderModuleList();
    bindKeyForm();
    bindCustomerPicker();
    renderCurrentCustomer();
    for (const tab of apiTabs()) {
      tab.addEventListener("click", () => showTab(tab.dataset.tab));
    }
    showTab(state.tab);
    loadCustomers();
  }

  start();
})();
