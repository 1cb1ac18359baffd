// Starts the Swagger UI on the service's own OpenAPI document.
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/spec",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout",
    // Off: otherwise, on any host but localhost, the page loads a badge from the validator's
    // site; the page loads nothing from outside the service.
    validatorUrl: null,
  });
};
