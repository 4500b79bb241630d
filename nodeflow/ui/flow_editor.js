// The nodeflow canvas: a Vue Flow graph whose nodes are drawn from the catalogue's port metadata.
// The server owns the graph document; this component edits its local copy at once (so dragging
// and wiring feel instant) and tells the server each edit as plain JSON. The server answers with
// `ack`, and pushes a whole graph (`setGraph`) only when the document changed elsewhere
// (undo, another tab, the HTTP API). Node states arrive as small deltas through `setStatus`.
import { reactive, ref, markRaw, computed, inject, provide, unref } from "vue";
import { VueFlow, Handle, Position, MiniMap, Controls, Background, installStyles } from "nodeflow-vueflow";

const DRAG_TYPE = "application/x-nodeflow-type";
// Card text is 18px in flow units; the fit never zooms out below this, so text stays >= 12px on screen.
const READABLE_ZOOM = 0.67;

function fits(accepts, expected) {
  return expected === "Any" || (accepts || []).includes(expected);
}

// How each state looks (label, colours, hint) comes from the server as the `states` prop, the one
// table the card, the minimap and the Runs panel all draw from.

const NfNode = {
  props: ["id", "data", "selected"],
  components: { Handle },
  setup(props) {
    const ctx = inject("nodeflow");
    const spec = computed(() => ctx.catalogue[props.data.type] || { inputs: [], outputs: [], title: props.data.type });
    const st = computed(() => ctx.status[props.id] || { state: "idle" });
    const look = computed(() => ctx.states[st.value.state] || ctx.states.idle || {});
    const badge = computed(() => {
      const s = st.value;
      if (s.state === "running" && !s.epochs) return `running ${Math.round((s.progress || 0) * 100)}%`;
      return look.value.label || s.state;
    });
    // what the badge alone cannot say: "running · epoch 12/40 · 3 min left", "stopped at epoch 11/40 · ..."
    const detail = computed(() => {
      const s = st.value;
      return (s.state === "running" && s.epochs) || s.state === "stopped" ? s.words : "";
    });
    const accepts = (port) => " " + (port.accepts_as || [port.type]).join(" ") + " ";
    const showError = () => ctx.emit("failure", { id: props.id });
    const run = (ev) => {
      ev.stopPropagation();
      ctx.emit("run", { target: props.id });
    };
    const hint = computed(() => look.value.hint || "");
    const badgeStyle = computed(() => ({ background: look.value.background, color: look.value.color }));
    return { spec, st, badge, badgeStyle, detail, hint, accepts, run, showError, Position };
  },
  template: `
  <div class="nf-node" :class="['nf-state-' + st.state, selected ? 'nf-selected' : '']" :data-id="id">
    <div class="nf-head">
      <div class="nf-title">{{ data.title || spec.title }}</div>
      <button class="nf-run nodrag" title="Run to here (this node and the stale nodes it needs)" @click="run">&#9654;</button>
    </div>
    <div class="nf-sub"><span class="nf-badge" :class="'nf-badge-' + st.state" :data-state="st.state" :title="hint"
      :style="badgeStyle">{{ badge }}</span>
      {{ data.id }}<span v-if="data.title"> · {{ spec.title }}</span></div>
    <div v-if="st.state === 'running'" class="nf-progress"><div :style="{ width: Math.round((st.progress || 0) * 100) + '%' }"></div></div>
    <div class="nf-ports">
      <div class="nf-col">
        <div v-for="p in spec.inputs" :key="'in-' + p.name" class="nf-port nf-in" :title="p.type + (p.description ? ': ' + p.description : '')">
          <Handle type="target" :id="p.name" :position="Position.Left" class="nf-handle"
                  :style="{ background: p.color }" :data-port-type="p.type" />
          <span>{{ p.name }}<i v-if="p.optional">?</i></span>
        </div>
      </div>
      <div class="nf-col nf-right">
        <div v-for="p in spec.outputs" :key="'out-' + p.name" class="nf-port nf-out" :title="p.type + (p.description ? ': ' + p.description : '')">
          <span>{{ p.name }}</span>
          <Handle type="source" :id="p.name" :position="Position.Right" class="nf-handle"
                  :style="{ background: p.color }" :data-port-type="p.type" :data-accepts="accepts(p)" />
        </div>
      </div>
    </div>
    <div v-if="data.summary" class="nf-summary">{{ data.summary }}</div>
    <div v-if="st.error" class="nf-note nf-note-error" title="The whole message is in the Output tab" @click="showError">
      <div class="nf-error">{{ st.error }}</div></div>
    <div v-else-if="st.problems && st.problems.length" class="nf-note nf-note-problem" :title="st.problems.join('\\n')">
      <div class="nf-problem">{{ st.problems[0] }}</div></div>
    <div v-else-if="detail" class="nf-note nf-note-state" :data-state="st.state"><div class="nf-state-words">{{ detail }}</div></div>
    <div v-else-if="st.message && st.state === 'running'" class="nf-note"><div class="nf-message">{{ st.message }}</div></div>
    <div v-else-if="st.estimate && (st.state === 'stale' || st.state === 'idle')" class="nf-note nf-note-estimate"
         :title="st.estimate_note || 'Estimated cost of running this node'"><div class="nf-estimate">{{ st.estimate }}</div></div>
  </div>`,
};

const EDITOR_CSS = `
.nf-canvas { width: 100%; height: 100%; background: #f7f8fa; }
.nf-node { background: #fff; border: 1px solid #c9ced6; border-radius: 10px; width: 200px;
  font: 16px/1.3 system-ui, sans-serif; color: #1f2933; box-shadow: 0 1px 3px rgba(0,0,0,.08); }
.nf-node.nf-selected { border-color: #3f51b5; box-shadow: 0 0 0 3px rgba(63,81,181,.35); }
.nf-head { display: flex; align-items: flex-start; gap: 6px; padding: 8px 8px 0 10px; }
.nf-title { font-weight: 600; font-size: 18px; line-height: 1.25; flex: 1; min-width: 0; overflow-wrap: break-word; }
.nf-sub { padding: 2px 10px 5px; color: #7b8794; font-size: 15px; border-bottom: 1px solid #eef0f3; overflow-wrap: anywhere; }
.nf-badge { font-size: 15px; padding: 0 7px; margin-right: 4px; border-radius: 10px; background: #e4e7eb; color: #52606d;
  white-space: nowrap; display: inline-block; }
.nf-state-running { border-color: #3f51b5; }
.nf-state-stopped { border-color: #e0a040; }
.nf-state-failed { border-color: #e53935; }
.nf-run { border: none; background: #eef0f3; color: #3f51b5; border-radius: 4px; cursor: pointer; font-size: 13px;
  width: 24px; height: 22px; padding: 0; flex: none; }
.nf-run:hover { background: #3f51b5; color: #fff; }
.nf-progress { height: 4px; background: #e0e8f9; }
.nf-progress > div { height: 100%; background: #3f51b5; transition: width .2s; }
.nf-ports { display: flex; justify-content: space-between; padding: 4px 0; gap: 8px; }
.nf-col { display: flex; flex-direction: column; gap: 2px; }
.nf-right { align-items: flex-end; }
.nf-port { position: relative; padding: 1px 10px; font-size: 15px; color: #3e4c59; white-space: nowrap; }
.nf-port i { color: #9aa5b1; }
.nf-handle.vue-flow__handle { width: 13px; height: 13px; border: 2px solid #fff; box-shadow: 0 0 0 1px #9aa5b1; }
.nf-summary { padding: 4px 10px 8px; color: #3e4c59; font-size: 18px; line-height: 1.3; border-top: 1px solid #eef0f3;
  overflow-wrap: anywhere; }
.nf-note { padding: 4px 10px 8px; border-radius: 0 0 10px 10px; }
.nf-error, .nf-problem, .nf-message { font-size: 15px; overflow: hidden; display: -webkit-box;
  -webkit-line-clamp: 3; -webkit-box-orient: vertical; overflow-wrap: anywhere; }
.nf-note-error { background: #fff5f5; cursor: pointer; }
.nf-error { color: #b71c1c; }
.nf-note-problem { background: #fffaf0; }
.nf-problem { color: #a84300; }
.nf-message { color: #52606d; }
.nf-note-estimate { background: #f3f5ff; }
.nf-estimate { font-size: 15px; color: #35469c; }
.vue-flow__connection-path { stroke: #3f51b5; stroke-width: 2; stroke-dasharray: 5 4; }
.nf-canvas.nf-refused .vue-flow__connection-path { stroke: #e53935; }
.nf-cue { position: absolute; left: 50%; top: 10px; transform: translateX(-50%); z-index: 10; background: #b71c1c;
  color: #fff; padding: 4px 10px; border-radius: 4px; font: 12px system-ui, sans-serif; pointer-events: none; }
.vue-flow__edge-path { stroke-width: 2.5; }
.vue-flow__edge.selected .vue-flow__edge-path { stroke-width: 4; }
.vue-flow__node-nf { padding: 0; border: none; background: transparent; }
.nf-canvas .vue-flow__minimap { width: 140px; height: 90px; }
.nf-canvas .vue-flow__minimap svg { width: 140px; height: 90px; }
`;

function installCss() {
  installStyles();
  if (document.getElementById("nodeflow-editor-css")) return;
  const style = document.createElement("style");
  style.id = "nodeflow-editor-css";
  style.textContent = EDITOR_CSS;
  document.head.appendChild(style);
}

export default {
  components: { VueFlow, MiniMap, Controls, Background, NfNode },
  props: {
    catalogue: { type: Object, default: () => ({}) },
    graph: { type: Object, default: () => ({ version: -1, nodes: [], edges: [] }) },
    status: { type: Object, default: () => ({}) },
    states: { type: Object, default: () => ({}) },
  },
  setup(props, { emit }) {
    installCss();
    const store = ref(null);
    const status = reactive({ ...props.status });
    const cue = ref("");
    const ctx = { catalogue: props.catalogue, status, states: props.states, emit };
    provide("nodeflow", ctx);
    const flowId = "nodeflow-" + Math.random().toString(36).slice(2);
    // constant props live here: literals in the template would be new objects on every render,
    // and Vue Flow would re-apply them to the whole graph
    return { store, statusMap: status, cue, ctx, flowId, nodeTypes: { nf: markRaw(NfNode) },
             deleteKeys: ["Delete", "Backspace"], edgeOptions: { type: "default" } };
  },
  data() {
    return { version: -1, rid: 0, pending: {}, removing: null, selectedIds: [] };
  },
  template: `
  <div class="nf-canvas" :id="flowId + '-root'" :class="{ 'nf-refused': cue }" style="position: relative"
       @dragover="onDragOver" @drop="onDrop">
    <div v-if="cue" class="nf-cue">{{ cue }}</div>
    <VueFlow :id="flowId" :node-types="nodeTypes" :is-valid-connection="isValidConnection"
             :delete-key-code="deleteKeys" :min-zoom="0.1" :max-zoom="2.5" :snap-to-grid="false"
             :default-edge-options="edgeOptions" :only-render-visible-elements="false"
             @init="onInit" @connect="onConnect" @node-drag-stop="onDragStop" @nodes-change="onNodesChange"
             @edges-change="onEdgesChange" @connect-start="onConnectStart" @connect-end="onConnectEnd"
             @pane-click="onPaneClick">
      <Background pattern-color="#d5d9e0" :gap="20" />
      <MiniMap pannable zoomable :node-color="minimapColor" />
      <Controls />
    </VueFlow>
  </div>`,
  mounted() {
    this._onKey = (e) => this.onKey(e);
    window.addEventListener("keydown", this._onKey);
  },
  unmounted() {
    window.removeEventListener("keydown", this._onKey);
  },
  methods: {
    // -- server -> canvas ------------------------------------------------------------------------
    onInit(store) {
      this.store = markRaw(store);
      this.setGraph(this.graph, true);
    },
    setGraph(graph, fit = false) {
      const store = this.store;
      if (!store) return;
      this.version = graph.version;
      const wanted = new Map(graph.nodes.map((n) => [n.id, n]));
      const gone = unref(store.nodes).filter((n) => !wanted.has(n.id)).map((n) => n.id);
      // what this method removes is the server's document already: not a deletion to send back
      // (an old graph's node ids sent as deletions after loading another graph were refused)
      this.serverRemoved = new Set(gone);
      clearTimeout(this._serverRemovedTimer);
      this._serverRemovedTimer = setTimeout(() => (this.serverRemoved = new Set()), 0);
      if (gone.length) store.removeNodes(gone, false);
      const fresh = [];
      for (const n of graph.nodes) {
        const have = store.findNode(n.id);
        if (!have) {
          fresh.push({ id: n.id, type: "nf", position: { ...n.position }, data: n.data });
          continue;
        }
        if (!have.dragging && (have.position.x !== n.position.x || have.position.y !== n.position.y)) {
          have.position = { ...n.position };
        }
        if (JSON.stringify(have.data) !== JSON.stringify(n.data)) have.data = n.data;
      }
      if (fresh.length) store.addNodes(fresh);
      const edges = graph.edges.map((e) => this.edgeOf(e));
      const wantedEdges = new Map(edges.map((e) => [e.id, e]));
      const oldEdges = unref(store.edges).filter((e) => !wantedEdges.has(e.id) || !this.sameEdge(e, wantedEdges.get(e.id)));
      for (const e of oldEdges) this.serverRemoved.add(e.id);
      if (oldEdges.length) store.removeEdges(oldEdges.map((e) => e.id));
      const newEdges = edges.filter((e) => !store.findEdge(e.id));
      if (newEdges.length) store.addEdges(newEdges);
      if (fit) setTimeout(() => this.fit(), 50);
    },
    sameEdge(a, b) {
      return a.source === b.source && a.sourceHandle === b.sourceHandle && a.target === b.target && a.targetHandle === b.targetHandle;
    },
    edgeOf(e) {
      const spec = this.catalogue[this.typeOf(e.source)] || { outputs: [] };
      const port = spec.outputs.find((p) => p.name === e.source_port);
      return {
        id: `${e.target}.${e.target_port}`, source: e.source, sourceHandle: e.source_port,
        target: e.target, targetHandle: e.target_port,
        style: { stroke: port ? port.color : "#90a4ae" },
      };
    },
    typeOf(nodeId) {
      const node = this.store && this.store.findNode(nodeId);
      return node ? node.data.type : null;
    },
    setStatus(delta) {
      for (const [id, s] of Object.entries(delta)) {
        if (s === null) delete this.statusMap[id];
        else this.statusMap[id] = s;
      }
    },
    ack(reply) {
      const sent = this.pending[reply.rid];
      delete this.pending[reply.rid];
      if (sent) {
        this.$emit("latency", { rid: reply.rid, kind: sent.kind, ms: performance.now() - sent.t });
        if (window.__nodeflowLatency) {
          window.__nodeflowLatency.push({ kind: sent.kind, ms: performance.now() - sent.t, server_ms: reply.server_ms });
        }
      }
      if (reply.ok) this.version = reply.version;
    },
    select(ids) {
      const store = this.store;
      if (!store) return;
      const wanted = new Set(ids);
      const drop = unref(store.getSelectedNodes).filter((n) => !wanted.has(n.id));
      if (drop.length) store.removeSelectedNodes(drop);
      const add = ids.map((id) => store.findNode(id)).filter(Boolean);
      if (add.length) store.addSelectedNodes(add);
      this.selectedIds = [...ids];
    },
    fit() {
      // Fit the whole graph, but never below a readable zoom: a long pipeline then starts at its
      // left end (its sources) and the minimap shows the rest.
      const store = this.store;
      if (!store) return;
      const nodes = unref(store.nodes);
      if (!nodes.length) return;
      const el = this.$el.getBoundingClientRect();
      let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
      for (const n of nodes) {
        const w = (n.dimensions && n.dimensions.width) || 220, hgt = (n.dimensions && n.dimensions.height) || 90;
        x0 = Math.min(x0, n.position.x); y0 = Math.min(y0, n.position.y);
        x1 = Math.max(x1, n.position.x + w); y1 = Math.max(y1, n.position.y + hgt);
      }
      const pad = 40;
      const zoom = Math.min(1.1, Math.max(READABLE_ZOOM, Math.min((el.width - 2 * pad) / (x1 - x0), (el.height - 2 * pad) / (y1 - y0))));
      const x = (x1 - x0) * zoom <= el.width - 2 * pad ? (el.width - (x1 - x0) * zoom) / 2 - x0 * zoom : pad - x0 * zoom;
      const y = (y1 - y0) * zoom <= el.height - 2 * pad ? (el.height - (y1 - y0) * zoom) / 2 - y0 * zoom : pad - y0 * zoom;
      store.setViewport({ x, y, zoom });
    },
    // -- canvas -> server ------------------------------------------------------------------------
    send(kind, ops) {
      const rid = ++this.rid;
      this.pending[rid] = { t: performance.now(), kind };
      this.$emit("edit", { rid, kind, base: this.version, ops });
    },
    isValidConnection(c) {
      if (c.source === c.target) return false;
      const src = this.catalogue[this.typeOf(c.source)];
      const dst = this.catalogue[this.typeOf(c.target)];
      if (!src || !dst) return false;
      const out = src.outputs.find((p) => p.name === c.sourceHandle);
      const inp = dst.inputs.find((p) => p.name === c.targetHandle);
      return !!(out && inp && fits(out.accepts_as, inp.type));
    },
    onConnectStart(params) {
      // The cue is one generated stylesheet rule, so 200 nodes are not re-rendered per drag.
      const node = this.store.findNode(params.nodeId);
      const spec = node && this.catalogue[node.data.type];
      if (!spec) return;
      const root = `#${this.$el.id} .vue-flow__node`;
      const self = `${root}[data-id="${CSS.escape(params.nodeId)}"]`;
      const ok = "box-shadow: 0 0 0 3px #43a047 !important; width: 14px; height: 14px;";
      let rules;
      if (params.handleType === "source") {
        const p = spec.outputs.find((q) => q.name === params.handleId);
        if (!p) return;
        this._connecting = { side: "out", node: params.nodeId, type: p.type, accepts: p.accepts_as };
        const good = [...p.accepts_as, "Any"].map((t) => `${root} .nf-in .nf-handle[data-port-type="${CSS.escape(t)}"]`);
        rules = `${root} .nf-in .nf-handle { opacity: .25; } ${good.join(",")} { opacity: 1; ${ok} }
                 ${self} .nf-in .nf-handle { opacity: .25; box-shadow: none !important; }`;
      } else {
        const p = spec.inputs.find((q) => q.name === params.handleId);
        if (!p) return;
        this._connecting = { side: "in", node: params.nodeId, type: p.type };
        const good = p.type === "Any" ? `${root} .nf-out .nf-handle`
          : `${root} .nf-out .nf-handle[data-accepts~="${CSS.escape(p.type)}"]`;
        rules = `${root} .nf-out .nf-handle { opacity: .25; } ${good} { opacity: 1; ${ok} }
                 ${self} .nf-out .nf-handle { opacity: .25; box-shadow: none !important; }`;
      }
      this.cueStyle().textContent = rules;
    },
    cueStyle() {
      if (!this._cueStyle) {
        this._cueStyle = document.createElement("style");
        document.head.appendChild(this._cueStyle);
      }
      return this._cueStyle;
    },
    onConnectEnd(event) {
      const c = this._connecting;
      this._connecting = null;
      this.cueStyle().textContent = "";
      const el = event && event.target && event.target.closest ? event.target.closest(".vue-flow__handle") : null;
      if (!c || !el) return;
      const nodeEl = el.closest(".vue-flow__node");
      const other = nodeEl && nodeEl.dataset.id;
      const otherSpec = other && this.catalogue[this.typeOf(other)];
      const otherPort = otherSpec && (c.side === "out" ? otherSpec.inputs : otherSpec.outputs)
        .find((q) => q.name === el.dataset.handleid);
      const fine = otherPort && other !== c.node &&
        (c.side === "out" ? fits(c.accepts, otherPort.type) : fits(otherPort.accepts_as, c.type));
      if (otherPort && !fine && el.classList.contains(c.side === "out" ? "target" : "source")) {
        this.cue = other === c.node ? "refused: a node cannot feed itself"
          : `refused: ${c.side === "out" ? otherPort.type : c.type} input does not take ${c.side === "out" ? c.type : otherPort.type}`;
        setTimeout(() => (this.cue = ""), 2500);
      }
    },
    onConnect(c) {
      if (!this.isValidConnection(c)) return;
      // tell the server first: it checks the edge while this tab draws it
      this.send("connect", [{ op: "connect", source: c.source, source_port: c.sourceHandle, target: c.target, target_port: c.targetHandle }]);
      const stale = unref(this.store.edges).filter((e) => e.target === c.target && e.targetHandle === c.targetHandle);
      if (stale.length) this.store.removeEdges(stale.map((e) => e.id));
      this.store.addEdges([this.edgeOf({ source: c.source, source_port: c.sourceHandle, target: c.target, target_port: c.targetHandle })]);
    },
    onDragStop(ev) {
      const nodes = ev.nodes && ev.nodes.length ? ev.nodes : [ev.node];
      this.send("move", nodes.map((n) => ({ op: "move", id: n.id, x: Math.round(n.position.x), y: Math.round(n.position.y) })));
    },
    onNodesChange(changes) {
      let selection = false;
      for (const ch of changes) {
        if (ch.type === "remove") this.queueRemove("nodes", ch.id);
        if (ch.type === "select") selection = true;
      }
      if (selection) {
        clearTimeout(this._selTimer);
        this._selTimer = setTimeout(() => {
          const ids = unref(this.store.getSelectedNodes).map((n) => n.id);
          if (JSON.stringify(ids) !== JSON.stringify(this.selectedIds)) {
            this.selectedIds = ids;
            this.$emit("select", { ids });
          }
        }, 30);
      }
    },
    onEdgesChange(changes) {
      for (const ch of changes) {
        if (ch.type === "remove") this.queueRemove("edges", ch.id);
      }
    },
    queueRemove(kind, id) {
      if (this.serverRemoved && this.serverRemoved.has(id)) return;
      // Deleting a node also removes its edges: gather everything of one key press into one edit.
      if (!this.removing) {
        this.removing = { nodes: new Set(), edges: new Set() };
        setTimeout(() => this.flushRemove(), 0);
      }
      this.removing[kind].add(id);
    },
    flushRemove() {
      const { nodes, edges } = this.removing;
      this.removing = null;
      const ops = [...nodes].map((id) => ({ op: "remove_node", id }));
      for (const edgeId of edges) {
        const cut = edgeId.lastIndexOf(".");
        const target = edgeId.slice(0, cut);
        if (!nodes.has(target)) ops.push({ op: "disconnect", target, target_port: edgeId.slice(cut + 1) });
      }
      if (ops.length) this.send("delete", ops);
    },
    onPaneClick() {
      if (this.selectedIds.length) {
        this.selectedIds = [];
        this.$emit("select", { ids: [] });
      }
    },
    onDragOver(e) {
      if (e.dataTransfer && [...e.dataTransfer.types].includes(DRAG_TYPE)) {
        e.preventDefault();
        e.dataTransfer.dropEffect = "copy";
      }
    },
    onDrop(e) {
      const type = e.dataTransfer && e.dataTransfer.getData(DRAG_TYPE);
      if (!type || !this.store) return;
      e.preventDefault();
      const p = this.store.screenToFlowCoordinate({ x: e.clientX, y: e.clientY });
      this.send("add", [{ op: "add_node", type, position: { x: Math.round(p.x), y: Math.round(p.y) } }]);
    },
    onKey(e) {
      const t = e.target;
      if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
      const mod = e.ctrlKey || e.metaKey;
      if (!mod) return;
      const key = e.key.toLowerCase();
      if (key === "z" && !e.shiftKey) this.$emit("command", { name: "undo" });
      else if ((key === "z" && e.shiftKey) || key === "y") this.$emit("command", { name: "redo" });
      else if (key === "s") this.$emit("command", { name: "save" });
      else return;
      e.preventDefault();
    },
    minimapColor(node) {
      const s = this.statusMap[node.id];
      const look = this.states[s ? s.state : "idle"] || this.states.idle;
      return look ? look.fill : "#7b8794";
    },
  },
};
