// Starts Swagger UI on /docs. A file of its own, not an inline script, so that the page's
// Content-Security-Policy (script-src 'self') holds; the description's URL comes from the page.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    // Never send the description to an outside validator: no request leaves for another origin.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
