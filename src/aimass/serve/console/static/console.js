// What the console's pages do beyond htmx, from the console's own file: their Content-Security-Policy
// runs no inline script or event handler. Marked in the templates with data attributes:
//   data-output="#id"      an input whose value is shown in that <output> as it moves (a range);
//   data-action=".../{ref}/..."  a <select> that points its form at the chosen value.
document.addEventListener("input", (event) => {
  const target = event.target;
  const shown = target.dataset && target.dataset.output;
  if (shown && target.form) {
    const output = target.form.querySelector(shown);
    if (output) output.value = target.value;
  }
});
document.addEventListener("change", (event) => {
  const target = event.target;
  const action = target.dataset && target.dataset.action;
  if (action && target.form) target.form.action = action.replace("{ref}", encodeURIComponent(target.value));
});
