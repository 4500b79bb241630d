// The third-party part of the editor: Vue Flow and its add-ons, re-exported as one ES module.
// NiceGUI serves this bundle and maps `import "vue"` to its own Vue, so vue stays external.
// The editor component itself (../flow_editor.js) is plain JS served by NiceGUI, so changing it
// needs no rebuild.
import coreCss from "@vue-flow/core/dist/style.css";
import themeCss from "@vue-flow/core/dist/theme-default.css";
import minimapCss from "@vue-flow/minimap/dist/style.css";
import controlsCss from "@vue-flow/controls/dist/style.css";

export { VueFlow, Handle, Position, useVueFlow, MarkerType, ConnectionMode } from "@vue-flow/core";
export { MiniMap } from "@vue-flow/minimap";
export { Controls, ControlButton } from "@vue-flow/controls";
export { Background } from "@vue-flow/background";

/** Put Vue Flow's stylesheets into the page once (the bundle carries them as text). */
export function installStyles() {
  if (document.getElementById("nodeflow-vueflow-css")) return;
  const style = document.createElement("style");
  style.id = "nodeflow-vueflow-css";
  style.textContent = [coreCss, themeCss, minimapCss, controlsCss].join("\n");
  document.head.appendChild(style);
}
