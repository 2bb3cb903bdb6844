// One entry point: each page's module is loaded by the page's name (body[data-page]).

const pages = {
  workflows: () => import("./pages/workflows.js"),
  workflow: () => import("./pages/workflow.js"),
  run: () => import("./pages/run.js"),
  templates: () => import("./pages/templates.js"),
  providers: () => import("./pages/providers.js"),
  apps: () => import("./pages/apps.js"),
};

const page = document.body.dataset.page;
if (pages[page]) {
  pages[page]()
    .then((module) => module.init(document.body.dataset))
    .catch((error) => {
      const el = document.querySelector('[data-role="error"]');
      if (el) {
        el.textContent = `This page could not load: ${error.message}`;
        el.hidden = false;
      }
    });
}
