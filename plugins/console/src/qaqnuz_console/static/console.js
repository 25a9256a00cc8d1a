// The console's only script (served from the wheel; the CSP forbids inline script). Everything works
// without it; it adds copy buttons, a confirmation before revoking or rotating, and hides scopes outside
// the chosen role's ceiling in the key form.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      if (!source) return;
      const text = "value" in source && source.value !== undefined ? source.value : source.textContent;
      try {
        await navigator.clipboard.writeText(text);
        button.textContent = "Copied";
      } catch (error) {
        // No clipboard permission (an insecure origin): select the text so Ctrl+C copies it.
        if (source.select) source.select();
        else window.getSelection().selectAllChildren(source);
        button.textContent = "Selected: press Ctrl+C";
      }
      setTimeout(() => { button.textContent = "Copy"; }, 4000);
    });
  }

  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  const role = document.getElementById("key-role");
  const scopes = document.getElementById("key-scopes");
  if (role && scopes) {
    const update = () => {
      const option = role.options[role.selectedIndex];
      const ceiling = new Set((option ? option.dataset.ceiling : "").split(" ").filter(Boolean));
      for (const box of scopes.querySelectorAll("input[name=scopes]")) {
        const allowed = ceiling.has(box.value);
        box.disabled = !allowed;
        if (!allowed) box.checked = false;
        box.closest("label").hidden = !allowed;
      }
    };
    role.addEventListener("change", update);
    update();
  }
});
