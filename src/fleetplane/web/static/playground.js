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
      if (asksForEventStream(request)) request.userFetch = openEventStream;
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

  // ---- event streams ----------------------------------------------------------------------
  //
  // Swagger UI reads a whole response body before it shows anything, so an operation that
  // answers `text/event-stream` would spin for as long as the stream stays open. Its call is
  // made here instead (Swagger UI's `userFetch`): Swagger UI gets the status and headers at
  // once, and the events show in the Live events panel as they arrive, until Stop. A plain
  // EventSource cannot send the key header, so the stream is read with fetch.

  const EVENT_STREAM_TYPE = "text/event-stream";
  const MAX_SHOWN_EVENTS = 200; // the oldest go first: a busy fleet must not fill the page
  const eventStream = { controller: null, count: 0 };

  function headerValue(headers, name) {
    const found = Object.keys(headers || {}).find((key) => key.toLowerCase() === name);
    return found ? String(headers[found]) : "";
  }

  function asksForEventStream(request) {
    return headerValue(request.headers, "accept")
      .split(",")
      .some((type) => type.trim().toLowerCase().startsWith(EVENT_STREAM_TYPE));
  }

  async function openEventStream(url, request) {
    stopEventStream("Replaced by a newer stream");
    const controller = new AbortController();
    eventStream.controller = controller;
    eventStream.count = 0;
    const method = (request.method || "GET").toUpperCase();
    const path = new URL(url, window.location.href).pathname;
    element("event-stream-operation").textContent = `${method} ${path}`;
    element("event-stream-list").replaceChildren();
    renderEventCount();
    setStreamStatus("connecting", "Connecting…");
    element("event-stream").hidden = false;
    let response;
    try {
      response = await fetch(url, {
        method,
        headers: request.headers,
        credentials: request.credentials,
        signal: controller.signal,
      });
    } catch (error) {
      if (eventStream.controller === controller) {
        eventStream.controller = null;
        setStreamStatus("closed", `Cannot connect: ${error.message}`);
      }
      throw error;
    }
    if (!response.ok || !response.body) {
      // A refusal is a short problem+json answer: Swagger UI shows it as usual.
      eventStream.controller = null;
      setStreamStatus("closed", `Refused with ${response.status}: see the operation's response`);
      return response;
    }
    setStreamStatus("open", "Open: events show as they arrive");
    readEvents(response.body, controller);
    const note =
      "The stream is open. Its events show in the Live events panel as they arrive, " +
      `newest first (the last ${MAX_SHOWN_EVENTS}), until Stop.`;
    return new Response(note, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  }

  async function readEvents(body, controller) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    const parse = eventFrameParser();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const event of parse(value)) showEvent(event);
      }
      if (eventStream.controller === controller) setStreamStatus("closed", "Closed by the server");
    } catch (error) {
      if (controller.signal.aborted) return; // stopped here: the status already says so
      if (eventStream.controller === controller) {
        setStreamStatus("closed", `Connection lost: ${error.message}`);
      }
    } finally {
      if (eventStream.controller === controller) eventStream.controller = null;
    }
  }

  // The server-sent events format (WHATWG HTML, "Interpreting an event stream"): lines of
  // `field: value`, an event ends at a blank line, lines starting with ":" are comments.
  function eventFrameParser() {
    let pending = "";
    let type = "";
    let data = [];
    return (text) => {
      pending += text;
      // A chunk may end between the "\r" and "\n" of one line end: keep a final "\r" back.
      const usable = pending.endsWith("\r") ? pending.length - 1 : pending.length;
      const lines = pending.slice(0, usable).split(/\r\n|\r|\n/);
      pending = lines.pop() + pending.slice(usable);
      const events = [];
      for (const line of lines) {
        if (line === "") {
          if (data.length > 0) events.push({ type: type || "message", data: data.join("\n") });
          type = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") type = value;
        else if (field === "data") data.push(value);
      }
      return events;
    };
  }

  function showEvent(event) {
    const item = document.createElement("li");
    item.className = "event";
    const time = document.createElement("time");
    time.textContent = new Date().toLocaleTimeString();
    const type = document.createElement("span");
    type.className = "event-type";
    type.textContent = event.type;
    const data = document.createElement("pre");
    data.textContent = readableData(event.data);
    item.append(time, type, data);
    const list = element("event-stream-list");
    list.prepend(item);
    while (list.children.length > MAX_SHOWN_EVENTS) list.lastElementChild.remove();
    eventStream.count += 1;
    renderEventCount();
  }

  function readableData(text) {
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      return text; // not JSON: shown as sent
    }
  }

  function renderEventCount() {
    const count = eventStream.count;
    element("event-stream-count").textContent = `${count} event${count === 1 ? "" : "s"}`;
  }

  function setStreamStatus(name, text) {
    const status = element("event-stream-status");
    status.dataset.state = name;
    status.textContent = text;
    element("event-stream-stop").disabled = name === "closed";
  }

  function stopEventStream(reason) {
    const controller = eventStream.controller;
    if (!controller) return;
    eventStream.controller = null;
    controller.abort();
    setStreamStatus("closed", reason);
  }

  function bindEventStreamPanel() {
    element("event-stream-stop").addEventListener("click", () => stopEventStream("Stopped"));
    element("event-stream-close").addEventListener("click", () => {
      stopEventStream("Stopped");
      element("event-stream").hidden = true;
    });
  }

  // ---- image answers ----------------------------------------------------------------------
  //
  // Swagger UI shows an SVG answer as XML text (its content type contains "xml") and a PNG
  // through a blob: URL it never releases. An answer of any image type (a report's chart)
  // is shown here as the image itself, with a link to save it under the server's file name.

  function mediaTypeOf(contentType) {
    return String(contentType || "").split(";")[0].trim().toLowerCase();
  }

  function isImageAnswer(props) {
    return mediaTypeOf(props.contentType).startsWith("image/") && Boolean(props.content);
  }

  function answerFileName(headers, mediaType) {
    const disposition = headerValue(headers, "content-disposition");
    const quoted = /filename="([^"]+)"/i.exec(disposition);
    const plain = /filename=([^;]+)/i.exec(disposition);
    const name = quoted ? quoted[1] : plain ? plain[1].trim() : "";
    return name || `answer.${mediaType.split("/")[1].split("+")[0]}`;
  }

  function imageAnswers(system) {
    const React = system.React;
    const h = React.createElement;

    function ImageAnswer({ content, contentType, headers }) {
      const mediaType = mediaTypeOf(contentType);
      // The bytes Swagger UI fetched (a Blob, or text for SVG) under the answer's own type,
      // which an <img> needs to draw an SVG. Released when the answer is replaced.
      const url = React.useMemo(
        () => URL.createObjectURL(new Blob([content], { type: mediaType })),
        [content, mediaType],
      );
      React.useEffect(() => () => URL.revokeObjectURL(url), [url]);
      const fileName = answerFileName(headers, mediaType);
      return h(
        "div",
        { className: "image-answer" },
        h("img", { src: url, alt: `The answer: ${fileName}`, className: "image-answer-image" }),
        h("a", { href: url, download: fileName, className: "image-answer-save" }, `Save ${fileName}`),
      );
    }

    return {
      wrapComponents: {
        responseBody: (Original) => (props) =>
          isImageAnswer(props) ? h(ImageAnswer, props) : h(Original, props),
      },
    };
  }

  // ---- Swagger UI -------------------------------------------------------------------------

  function createSwaggerUI(domId, url, sendCustomer) {
    return window.SwaggerUIBundle({
      dom_id: `#${domId}`,
      url,
      presets: [window.SwaggerUIBundle.presets.apis],
      plugins: [imageAnswers],
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
    bindEventStreamPanel();
    for (const tab of apiTabs()) {
      tab.addEventListener("click", () => showTab(tab.dataset.tab));
    }
    showTab(state.tab);
    loadCustomers();
  }

  start();
})();
