// The nodeflow canvas: a Vue Flow graph whose nodes are drawn from the catalogue's port metadata.
// The server owns the graph document; this component edits its local copy at once (so dragging
// and wiring feel instant) and tells the server each edit as plain JSON. The server answers with
// `ack`, and pushes a whole graph (`setGraph`) only when the document changed elsewhere
// (undo, another tab, the HTTP API). Node states arrive as small deltas through `setStatus`.
//
// Groups: an expanded group is a frame drawn behind its cards (in Vue Flow's zoom pane, so it is
// no node of its own); a collapsed one is one card, `group/ID`, whose handles are its members'
// ports (`node.port`), and whose members are hidden. Edges keep their document ids
// (`target.port`) and are drawn to the group card when an end is inside a collapsed group.
import { reactive, ref, markRaw, computed, inject, provide, unref } from "vue";
import { VueFlow, Handle, Position, MiniMap, Controls, Background, installStyles } from "nodeflow-vueflow";

const DRAG_TYPE = "application/x-nodeflow-type";
const GROUP_DRAG_TYPE = "application/x-nodeflow-group";
const GROUP_PREFIX = "group/";
// A frame's margin around its cards and the height of its title bar, in flow units.
const FRAME_PAD = 12;
const FRAME_HEAD = 34;
// What a card takes before it is drawn (a dropped node is placed so that this fits in the view).
const CARD_W = 210;
const CARD_H = 190;
// Card text is 18px in flow units; the fit never zooms out below this, so text stays >= 12px on screen.
const READABLE_ZOOM = 0.67;

function fits(accepts, expected) {
  return expected === "Any" || (accepts || []).includes(expected);
}

// How each state looks (label, colours, hint) comes from the server as the `states` prop, the one
// table the card, the group card, the minimap and the Runs panel all draw from.
// The state a group card shows: the most pressing one among its members.
const GROUP_ORDER = ["failed", "interrupted", "running", "stopped", "queued", "invalid", "stale", "idle", "skipped", "disabled",
                     "done", "cached"];

function groupState(status, members, states) {
  const label = (s) => (states[s] || {}).label || s;
  const found = members.map((m) => (status[m] || { state: "idle" }).state);
  const worst = GROUP_ORDER.find((s) => found.includes(s)) || "idle";
  const same = found.filter((s) => s === worst || label(s) === label(worst)).length;
  let text = label(worst);
  if (worst === "running") {
    const m = members.find((id) => (status[id] || {}).state === "running");
    text = `running ${Math.round(((status[m] || {}).progress || 0) * 100)}%`;
  } else if (same < found.length) {
    text = `${same} of ${found.length} ${text}`;
  }
  return { state: worst, label: text };
}

// A group's title: shown, or edited in place after a double click (Enter keeps, Escape drops).
const GroupTitle = {
  props: ["group"],
  setup(props) {
    const ctx = inject("nodeflow");
    const text = ref("");
    const editing = computed(() => ctx.ui.renaming === props.group.id);
    const start = () => { text.value = props.group.title; ctx.ui.renaming = props.group.id; };
    const done = (keep) => {
      if (ctx.ui.renaming !== props.group.id) return;
      ctx.ui.renaming = null;
      const title = text.value.trim();
      if (keep && title && title !== props.group.title) ctx.act("rename", props.group.id, title);
    };
    const focus = (el) => el && setTimeout(() => { el.focus(); el.select(); }, 0);
    return { text, editing, start, done, focus };
  },
  template: `
    <input v-if="editing" class="nf-group-rename nodrag" v-model="text" :ref="focus" maxlength="200"
           @keydown.enter.stop="done(true)" @keydown.esc.stop="done(false)" @blur="done(true)"
           @pointerdown.stop @dblclick.stop />
    <div v-else class="nf-title nf-group-title" title="Double-click to rename" @dblclick.stop="start">{{ group.title }}</div>`,
};

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
  <div class="nf-node" :class="['nf-state-' + st.state, selected ? 'nf-selected' : '', data.disabled ? 'nf-disabled' : '']" :data-id="id">
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

// A collapsed group: one card with the group's external ports.
const NfGroup = {
  props: ["id", "data", "selected"],
  components: { Handle, GroupTitle },
  setup(props) {
    const ctx = inject("nodeflow");
    const st = computed(() => groupState(ctx.status, props.data.members, ctx.states));
    const badgeStyle = computed(() => {
      const look = ctx.states[st.value.state] || ctx.states.idle || {};
      return { background: look.background, color: look.color };
    });
    const accepts = (port) => " " + (port.accepts_as || [port.type]).join(" ") + " ";
    const expand = (ev) => { ev.stopPropagation(); ctx.act("expand", props.data.id); };
    return { st, badgeStyle, accepts, expand, Position };
  },
  template: `
  <div class="nf-node nf-group-card" :class="['nf-state-' + st.state, selected ? 'nf-selected' : '']" :data-group="data.id">
    <div class="nf-head">
      <GroupTitle :group="data" />
      <button class="nf-run nf-expand nodrag" title="Expand the group: show its nodes" @click="expand">&#9662;</button>
    </div>
    <div class="nf-sub"><span class="nf-badge" :class="'nf-badge-' + st.state" :data-state="st.state"
      :style="badgeStyle">{{ st.label }}</span>
      group of {{ data.members.length }}</div>
    <div class="nf-group-ports">
      <div v-for="p in data.inputs" :key="'in-' + p.handle" class="nf-port nf-in" :data-handle="p.handle"
           :title="p.handle + ': ' + p.type">
        <Handle type="target" :id="p.handle" :position="Position.Left" class="nf-handle"
                :style="{ background: p.color }" :data-port-type="p.type" />
        <span>{{ p.label }}<i v-if="p.optional">?</i></span>
      </div>
      <div v-for="p in data.outputs" :key="'out-' + p.handle" class="nf-port nf-out" :data-handle="p.handle"
           :title="p.handle + ': ' + p.type">
        <span>{{ p.label }}</span>
        <Handle type="source" :id="p.handle" :position="Position.Right" class="nf-handle"
                :style="{ background: p.color }" :data-port-type="p.type" :data-accepts="accepts(p)" />
      </div>
    </div>
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
.nf-node.nf-disabled { opacity: .55; border-style: dashed; }
.nf-node.nf-disabled .nf-title { text-decoration: line-through; }
.nf-group-card { background: #f5f7ff; border: 2px solid #7986cb; }
.nf-group-ports { display: flex; flex-direction: column; gap: 2px; padding: 4px 0 6px; }
.nf-group-ports .nf-port { white-space: normal; overflow-wrap: anywhere; }
.nf-group-ports .nf-out { text-align: right; }
.nf-group-rename { font: 600 18px/1.25 system-ui, sans-serif; flex: 1; min-width: 0; border: 1px solid #3f51b5;
  border-radius: 4px; padding: 0 4px; pointer-events: all; }
.nf-frames { position: absolute; left: 0; top: 0; z-index: -1; pointer-events: none; }
.nf-frame { position: absolute; border: 2px solid #9fa8da; border-radius: 12px; background: rgba(232, 234, 246, .45); }
.nf-frame-head { display: flex; align-items: center; gap: 6px; height: ${FRAME_HEAD - 4}px; padding: 0 8px 0 12px;
  pointer-events: all; cursor: grab; color: #283593; user-select: none; }
.nf-frame-head .nf-group-title { font-size: 18px; font-weight: 600; flex: 1; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.nf-frame-head button { border: none; background: #e8eaf6; color: #3f51b5; border-radius: 4px; cursor: pointer;
  font-size: 13px; width: 24px; height: 22px; padding: 0; }
.nf-menu { position: absolute; z-index: 20; min-width: 190px; background: #fff; border: 1px solid #c9ced6;
  border-radius: 6px; box-shadow: 0 4px 14px rgba(0,0,0,.18); padding: 4px 0; font: 14px system-ui, sans-serif; }
.nf-menu-head { padding: 3px 12px 5px; color: #7b8794; font-size: 12px; border-bottom: 1px solid #eef0f3;
  margin-bottom: 3px; max-width: 260px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.nf-menu-item { display: flex; justify-content: space-between; gap: 16px; padding: 5px 12px; cursor: pointer;
  color: #1f2933; white-space: nowrap; }
.nf-menu-item:hover { background: #eef0fb; }
.nf-menu-item.nf-danger { color: #b71c1c; }
.nf-menu-item kbd { font: 12px system-ui, sans-serif; color: #9aa5b1; }
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
  components: { VueFlow, MiniMap, Controls, Background, NfNode, GroupTitle },
  props: {
    catalogue: { type: Object, default: () => ({}) },
    graph: { type: Object, default: () => ({ version: -1, nodes: [], edges: [], groups: [] }) },
    status: { type: Object, default: () => ({}) },
    states: { type: Object, default: () => ({}) },
    // a word from the server for the person, e.g. "Reopened mine.json with unsaved edits from ..."
    notice: { type: String, default: "" },
  },
  setup(props, { emit }) {
    installCss();
    const store = ref(null);
    const status = reactive({ ...props.status });
    const cue = ref("");
    const ui = reactive({ renaming: null });
    const ctx = { catalogue: props.catalogue, status, states: props.states, emit, ui, act: () => {} };
    provide("nodeflow", ctx);
    const flowId = "nodeflow-" + Math.random().toString(36).slice(2);
    // constant props live here: literals in the template would be new objects on every render,
    // and Vue Flow would re-apply them to the whole graph
    return { store, statusMap: status, cue, ctx, flowId,
             nodeTypes: { nf: markRaw(NfNode), nfgroup: markRaw(NfGroup) },
             deleteKeys: ["Delete", "Backspace"], edgeOptions: { type: "default" } };
  },
  data() {
    return { version: -1, rid: 0, pending: {}, removing: null, selectedIds: [], groups: [], menu: null, fits: 0 };
  },
  computed: {
    // member id -> its group's id, for the members of collapsed groups (drawn as the group's card)
    collapsedOf() {
      const found = new Map();
      for (const g of this.groups) if (g.collapsed) for (const m of g.members) found.set(m, g.id);
      return found;
    },
    // the frames of the expanded groups, around their cards as drawn now (they follow a drag)
    frames() {
      const store = this.store;
      if (!store) return [];
      const found = [];
      for (const g of this.groups) {
        if (g.collapsed) continue;
        let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
        for (const m of g.members) {
          const n = store.findNode(m);
          if (!n) continue;
          const w = (n.dimensions && n.dimensions.width) || CARD_W, h = (n.dimensions && n.dimensions.height) || CARD_H;
          x0 = Math.min(x0, n.position.x); y0 = Math.min(y0, n.position.y);
          x1 = Math.max(x1, n.position.x + w); y1 = Math.max(y1, n.position.y + h);
        }
        if (x0 === Infinity) continue;
        found.push({ id: g.id, group: g, x: x0 - FRAME_PAD, y: y0 - FRAME_PAD - FRAME_HEAD,
                     w: x1 - x0 + 2 * FRAME_PAD, h: y1 - y0 + 2 * FRAME_PAD + FRAME_HEAD });
      }
      return found;
    },
  },
  template: `
  <div class="nf-canvas" :id="flowId + '-root'" :class="{ 'nf-refused': cue }" :data-fits="fits" style="position: relative"
       @dragover="onDragOver" @drop="onDrop" @pointermove="onPointer" @pointerdown="onCanvasDown">
    <div v-if="cue" class="nf-cue">{{ cue }}</div>
    <VueFlow :id="flowId" :node-types="nodeTypes" :is-valid-connection="isValidConnection"
             :delete-key-code="deleteKeys" :min-zoom="0.1" :max-zoom="2.5" :snap-to-grid="false"
             :default-edge-options="edgeOptions" :only-render-visible-elements="false"
             @init="onInit" @connect="onConnect" @node-drag-stop="onDragStop" @nodes-change="onNodesChange"
             @edges-change="onEdgesChange" @connect-start="onConnectStart" @connect-end="onConnectEnd"
             @pane-click="onPaneClick" @node-context-menu="onNodeMenu" @selection-context-menu="onSelectionMenu"
             @pane-context-menu="onPaneMenu">
      <template #zoom-pane>
        <div class="nf-frames">
          <div v-for="f in frames" :key="f.id" class="nf-frame" :data-group="f.id"
               :style="{ left: f.x + 'px', top: f.y + 'px', width: f.w + 'px', height: f.h + 'px' }">
            <div class="nf-frame-head" @pointerdown="onFrameDown($event, f)"
                 @contextmenu.prevent.stop="openGroupMenu($event, f.id)">
              <GroupTitle :group="f.group" />
              <button class="nf-collapse nodrag" title="Collapse the group into one card"
                      @pointerdown.stop @click.stop="act('collapse', f.id)">&#9652;</button>
            </div>
          </div>
        </div>
      </template>
      <Background pattern-color="#d5d9e0" :gap="20" />
      <MiniMap pannable zoomable :node-color="minimapColor" />
      <Controls />
    </VueFlow>
    <div v-if="menu" class="nf-menu" :style="{ left: menu.x + 'px', top: menu.y + 'px' }" @pointerdown.stop
         @contextmenu.prevent>
      <div class="nf-menu-head">{{ menu.title }}</div>
      <div v-for="item in menu.items" :key="item.label" class="nf-menu-item" :class="{ 'nf-danger': item.danger }"
           :data-action="item.action" @click="choose(item)">
        <span>{{ item.label }}</span><kbd v-if="item.keys">{{ item.keys }}</kbd>
      </div>
    </div>
  </div>`,
  mounted() {
    this.ctx.act = (...args) => this.act(...args);
    this._onKey = (e) => this.onKey(e);
    window.addEventListener("keydown", this._onKey);
    if (this.notice) this.tell(this.notice);
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
      this.groups = graph.groups || [];
      const collapsed = this.collapsedOf;
      const cards = this.groups.filter((g) => g.collapsed).map((g) => ({
        id: GROUP_PREFIX + g.id, type: "nfgroup", position: { ...g.position }, data: g,
      }));
      const wanted = new Map([...graph.nodes.map((n) => [n.id, n]), ...cards.map((c) => [c.id, c])]);
      const gone = unref(store.nodes).filter((n) => !wanted.has(n.id)).map((n) => n.id);
      // what this method removes is the server's document already: not a deletion to send back
      // (an old graph's node ids sent as deletions after loading another graph were refused)
      this.serverRemoved = new Set(gone);
      clearTimeout(this._serverRemovedTimer);
      this._serverRemovedTimer = setTimeout(() => (this.serverRemoved = new Set()), 0);
      if (gone.length) store.removeNodes(gone, false);
      const fresh = [];
      for (const n of [...graph.nodes.map((m) => ({ ...m, type: "nf", hidden: collapsed.has(m.id) })), ...cards]) {
        const have = store.findNode(n.id);
        if (!have) {
          fresh.push({ ...n, position: { ...n.position } });
          continue;
        }
        if (!have.dragging && (have.position.x !== n.position.x || have.position.y !== n.position.y)) {
          have.position = { ...n.position };
        }
        if (!!have.hidden !== !!n.hidden) have.hidden = !!n.hidden;
        if (JSON.stringify(have.data) !== JSON.stringify(n.data)) have.data = n.data;
      }
      if (fresh.length) store.addNodes(fresh);
      const folded = unref(store.getSelectedNodes).filter((n) => n.hidden);  // a collapsed group's members
      if (folded.length) store.removeSelectedNodes(folded);
      this._types = new Map(graph.nodes.map((n) => [n.id, n.data.type]));
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
      return a.source === b.source && a.sourceHandle === b.sourceHandle && a.target === b.target &&
        a.targetHandle === b.targetHandle && !!a.hidden === !!b.hidden;
    },
    edgeOf(e) {
      // an end inside a collapsed group is drawn at the group's card, on the handle of that port
      const spec = this.catalogue[this.typeOf(e.source)] || { outputs: [] };
      const port = spec.outputs.find((p) => p.name === e.source_port);
      const from = this.collapsedOf.get(e.source), to = this.collapsedOf.get(e.target);
      return {
        id: `${e.target}.${e.target_port}`,
        source: from ? GROUP_PREFIX + from : e.source, sourceHandle: from ? `${e.source}.${e.source_port}` : e.source_port,
        target: to ? GROUP_PREFIX + to : e.target, targetHandle: to ? `${e.target}.${e.target_port}` : e.target_port,
        hidden: !!from && from === to,
        style: { stroke: port ? port.color : "#90a4ae" },
      };
    },
    typeOf(nodeId) {
      if (this._types && this._types.has(nodeId)) return this._types.get(nodeId);
      const node = this.store && this.store.findNode(nodeId);
      return node && node.data ? node.data.type : null;
    },
    // A canvas end (a card's id and handle) as the document's node and port.
    realEnd(nodeId, handle) {
      if (nodeId && nodeId.startsWith(GROUP_PREFIX) && handle) {
        const cut = handle.indexOf(".");
        return { node: handle.slice(0, cut), port: handle.slice(cut + 1) };
      }
      return { node: nodeId, port: handle };
    },
    portOf(nodeId, handle, side) {
      const end = this.realEnd(nodeId, handle);
      const spec = this.catalogue[this.typeOf(end.node)];
      return spec ? (side === "out" ? spec.outputs : spec.inputs).find((p) => p.name === end.port) : null;
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
      this.reveal(add);
    },
    // Pan (never zoom) until these cards are in view, when part of one is not: a duplicate placed
    // beside cards at the view's edge is seen where it landed.
    reveal(nodes) {
      const shown = nodes.filter((n) => !n.hidden);
      if (!shown.length) return;
      const el = this.$el.getBoundingClientRect();
      const { x: vx, y: vy, zoom } = unref(this.store.viewport);
      let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
      for (const n of shown) {
        const w = (n.dimensions && n.dimensions.width) || CARD_W, h = (n.dimensions && n.dimensions.height) || CARD_H;
        x0 = Math.min(x0, n.position.x); y0 = Math.min(y0, n.position.y);
        x1 = Math.max(x1, n.position.x + w); y1 = Math.max(y1, n.position.y + h);
      }
      if (x0 * zoom + vx >= 0 && y0 * zoom + vy >= 0 && x1 * zoom + vx <= el.width && y1 * zoom + vy <= el.height) return;
      const margin = 16, bottom = 120;  // clear of the minimap and the zoom buttons
      const along = (lo, hi, v, size, end) => {
        if ((hi - lo) * zoom > size - margin - end) return margin - lo * zoom;  // too big: its start in view
        if (lo * zoom + v < margin) return margin - lo * zoom;
        if (hi * zoom + v > size - end) return size - end - hi * zoom;
        return v;
      };
      this.store.setViewport({ x: along(x0, x1, vx, el.width, margin), y: along(y0, y1, vy, el.height, bottom), zoom });
    },
    // The server's word for the person, once per browser tab: a reload of the page does not say it
    // again (sessionStorage lives as long as the tab), a new tab does, and so does a new word.
    tell(text) {
      const key = "nodeflow-notice";
      try {
        if (window.sessionStorage.getItem(key) === text) return;
        window.sessionStorage.setItem(key, text);
      } catch (err) {
        // storage refused (a privacy setting): say it on each load rather than never
      }
      window.Quasar.Notify.create({ message: text, type: "info", timeout: 10000, closeBtn: true, classes: "nf-notice" });
    },
    async writeClipboard(text) {
      // the server keeps a copy too: where the page may not use the system clipboard (a plain
      // http address off this machine), a paste in this editor still works
      try {
        await navigator.clipboard.writeText(text);
      } catch (err) {
        console.info("nodeflow: the system clipboard is not available here; the copy stays in this editor");
      }
    },
    fit() {
      // Fit the whole graph, but never below a readable zoom: a long pipeline then starts at its
      // left end (its sources) and the minimap shows the rest.
      const store = this.store;
      if (!store) return;
      const nodes = unref(store.nodes).filter((n) => !n.hidden);
      if (!nodes.length) return;
      const el = this.$el.getBoundingClientRect();
      let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
      for (const n of nodes) {
        const w = (n.dimensions && n.dimensions.width) || 220, hgt = (n.dimensions && n.dimensions.height) || 90;
        x0 = Math.min(x0, n.position.x); y0 = Math.min(y0, n.position.y);
        x1 = Math.max(x1, n.position.x + w); y1 = Math.max(y1, n.position.y + hgt);
      }
      for (const f of this.frames) y0 = Math.min(y0, f.y);  // a frame's title bar shows above its cards
      const pad = 40;
      const zoom = Math.min(1.1, Math.max(READABLE_ZOOM, Math.min((el.width - 2 * pad) / (x1 - x0), (el.height - 2 * pad) / (y1 - y0))));
      const x = (x1 - x0) * zoom <= el.width - 2 * pad ? (el.width - (x1 - x0) * zoom) / 2 - x0 * zoom : pad - x0 * zoom;
      const y = (y1 - y0) * zoom <= el.height - 2 * pad ? (el.height - (y1 - y0) * zoom) / 2 - y0 * zoom : pad - y0 * zoom;
      store.setViewport({ x, y, zoom });
      this.fits += 1;  // drawn as data-fits: what is measured or pictured after it sees the fitted view
    },
    // -- canvas -> server ------------------------------------------------------------------------
    send(kind, ops) {
      const rid = ++this.rid;
      this.pending[rid] = { t: performance.now(), kind };
      this.$emit("edit", { rid, kind, base: this.version, ops });
    },
    command(name, args = {}) {
      this.$emit("command", { name, ...args });
    },
    isValidConnection(c) {
      if (c.source === c.target) return false;
      const a = this.realEnd(c.source, c.sourceHandle), b = this.realEnd(c.target, c.targetHandle);
      if (a.node === b.node) return false;
      const out = this.portOf(c.source, c.sourceHandle, "out");
      const inp = this.portOf(c.target, c.targetHandle, "in");
      return !!(out && inp && fits(out.accepts_as, inp.type));
    },
    onConnectStart(params) {
      // The cue is one generated stylesheet rule, so 200 nodes are not re-rendered per drag.
      const side = params.handleType === "source" ? "out" : "in";
      const p = this.portOf(params.nodeId, params.handleId, side);
      if (!p) return;
      const root = `#${this.$el.id} .vue-flow__node`;
      const self = `${root}[data-id="${CSS.escape(params.nodeId)}"]`;
      const ok = "box-shadow: 0 0 0 3px #43a047 !important; width: 14px; height: 14px;";
      let rules;
      if (side === "out") {
        this._connecting = { side, node: params.nodeId, type: p.type, accepts: p.accepts_as };
        const good = [...p.accepts_as, "Any"].map((t) => `${root} .nf-in .nf-handle[data-port-type="${CSS.escape(t)}"]`);
        rules = `${root} .nf-in .nf-handle { opacity: .25; } ${good.join(",")} { opacity: 1; ${ok} }
                 ${self} .nf-in .nf-handle { opacity: .25; box-shadow: none !important; }`;
      } else {
        this._connecting = { side, node: params.nodeId, type: p.type };
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
      const otherPort = other && this.portOf(other, el.dataset.handleid, c.side === "out" ? "in" : "out");
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
      const a = this.realEnd(c.source, c.sourceHandle), b = this.realEnd(c.target, c.targetHandle);
      const edge = { source: a.node, source_port: a.port, target: b.node, target_port: b.port };
      // tell the server first: it checks the edge while this tab draws it
      this.send("connect", [{ op: "connect", ...edge }]);
      const drawn = this.edgeOf(edge);
      if (this.store.findEdge(drawn.id)) this.store.removeEdges([drawn.id]);
      this.store.addEdges([drawn]);
    },
    onDragStop(ev) {
      const nodes = ev.nodes && ev.nodes.length ? ev.nodes : [ev.node];
      this.send("move", nodes.map((n) => {
        const x = Math.round(n.position.x), y = Math.round(n.position.y);
        return n.id.startsWith(GROUP_PREFIX) ? { op: "set_group", id: n.id.slice(GROUP_PREFIX.length), position: { x, y } }
          : { op: "move", id: n.id, x, y };
      }));
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
          const ids = unref(this.store.getSelectedNodes).map((n) => n.id).filter((id) => !id.startsWith(GROUP_PREFIX));
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
        this.removing = { nodes: new Set(), edges: new Set(), groups: false };
        setTimeout(() => this.flushRemove(), 0);
      }
      const group = id.startsWith(GROUP_PREFIX) && this.groupById(id.slice(GROUP_PREFIX.length));
      if (group) {  // a collapsed group's card goes with its nodes
        this.removing.groups = true;
        for (const m of group.members) this.removing.nodes.add(m);
      } else this.removing[kind].add(id);
    },
    flushRemove() {
      const { nodes, edges, groups } = this.removing;
      this.removing = null;
      const ops = [...nodes].map((id) => ({ op: "remove_node", id }));
      for (const edgeId of edges) {
        const cut = edgeId.lastIndexOf(".");
        const target = edgeId.slice(0, cut);
        if (!nodes.has(target)) ops.push({ op: "disconnect", target, target_port: edgeId.slice(cut + 1) });
      }
      // the canvas drew a plain deletion itself; the hidden members of a group card need the server's redraw
      if (ops.length) this.send(groups ? "delete-group" : "delete", ops);
    },
    onPaneClick() {
      if (this.selectedIds.length) {
        this.selectedIds = [];
        this.$emit("select", { ids: [] });
      }
    },
    onDragOver(e) {
      const types = e.dataTransfer ? [...e.dataTransfer.types] : [];
      if (types.includes(DRAG_TYPE) || types.includes(GROUP_DRAG_TYPE)) {
        e.preventDefault();
        e.dataTransfer.dropEffect = "copy";
      }
    },
    onDrop(e) {
      const type = e.dataTransfer && e.dataTransfer.getData(DRAG_TYPE);
      const group = e.dataTransfer && e.dataTransfer.getData(GROUP_DRAG_TYPE);
      if (!(type || group) || !this.store) return;
      e.preventDefault();
      const at = this.inView(this.store.screenToFlowCoordinate({ x: e.clientX, y: e.clientY }));
      if (type) this.send("add", [{ op: "add_node", type, position: at }]);
      else this.command("insert_group", { group, at });
    },
    // A card's top left corner near ``p`` (flow coordinates) such that the whole card lies in the
    // view, clear of its edges, the minimap and the zoom buttons.
    inView(p, w = CARD_W, h = CARD_H) {
      const el = this.$el.getBoundingClientRect();
      const { x: vx, y: vy, zoom } = unref(this.store.viewport);
      const margin = 16 / zoom, bottom = 120 / zoom;
      const x0 = -vx / zoom + margin, y0 = -vy / zoom + margin;
      const x1 = (el.width - vx) / zoom - margin - w, y1 = (el.height - vy) / zoom - bottom - h;
      return { x: Math.round(Math.max(x0, Math.min(p.x, x1))), y: Math.round(Math.max(y0, Math.min(p.y, y1))) };
    },
    onPointer(e) {
      this._pointer = { x: e.clientX, y: e.clientY };
    },
    onCanvasDown(e) {
      if (this.menu && !(e.target.closest && e.target.closest(".nf-menu"))) this.menu = null;
    },
    // -- selection, clipboard, groups --------------------------------------------------------------
    // The nodes an action applies to: the selection (a collapsed group's card stands for its nodes).
    selection() {
      if (!this.store) return [];
      const ids = [];
      for (const n of unref(this.store.getSelectedNodes)) {
        if (n.id.startsWith(GROUP_PREFIX)) ids.push(...n.data.members);
        else ids.push(n.id);
      }
      return [...new Set(ids)];
    },
    groupById(id) {
      return this.groups.find((g) => g.id === id);
    },
    // Where a paste lands: under the pointer when it is over the canvas, else mid-view.
    pastePoint() {
      const el = this.$el.getBoundingClientRect();
      const p = this._pointer;
      const over = p && p.x >= el.left && p.x <= el.right && p.y >= el.top && p.y <= el.bottom;
      const screen = over ? p : { x: el.left + el.width / 3, y: el.top + el.height / 3 };
      return this.inView(this.store.screenToFlowCoordinate(screen));
    },
    copy(ids) {
      if (ids.length) this.command("copy", { ids });
    },
    async paste(at) {
      let text = null;
      try {
        text = await navigator.clipboard.readText();
      } catch (err) {
        text = null;  // not allowed or not available here: the server's copy is used
      }
      this.command("paste", { text, at: at || this.pastePoint() });
    },
    duplicate(ids) {
      if (ids.length) this.command("duplicate", { ids });
    },
    // A new group of these nodes, as one edit; a node is in one group at most, so those in a group
    // leave it first (the group keeps its other members, its title and its place).
    group(ids) {
      if (!ids.length) return;
      const chosen = new Set(ids);
      const ops = [];
      for (const g of this.groups) {
        if (!g.members.some((m) => chosen.has(m))) continue;
        const rest = g.members.filter((m) => !chosen.has(m));
        if (!rest.length && g.members.length === ids.length) return;  // they are a group already
        ops.push({ op: "ungroup", id: g.id });
        if (rest.length) ops.push({ op: "group", id: g.id, title: g.title, members: rest, collapsed: g.collapsed, position: g.position });
      }
      ops.push({ op: "group", members: ids });
      this.send("group", ops);
    },
    // Where a paste from a card's menu lands: beside the cards it was opened on, not on them.
    besides(ids) {
      const nodes = ids.map((id) => this.store.findNode(id)).filter(Boolean);
      if (!nodes.length) return undefined;
      const right = Math.max(...nodes.map((n) => n.position.x + ((n.dimensions && n.dimensions.width) || CARD_W)));
      return this.inView({ x: right + 40, y: Math.min(...nodes.map((n) => n.position.y)) });
    },
    // The groups of these nodes, dissolved in one edit.
    ungroup(groupIds) {
      const ids = [...new Set(groupIds)].filter(Boolean);
      if (ids.length) this.send("group", ids.map((id) => ({ op: "ungroup", id })));
    },
    groupsOf(ids) {
      return ids.map((id) => (this.groups.find((g) => g.members.includes(id)) || {}).id).filter(Boolean);
    },
    setDisabled(ids, disabled) {
      if (ids.length) this.send("disable", ids.map((id) => ({ op: "disable", id, disabled })));
    },
    remove(ids) {
      if (ids.length) this.send("remove", ids.map((id) => ({ op: "remove_node", id })));
    },
    allDisabled(ids) {
      return ids.length > 0 && ids.every((id) => { const n = this.store.findNode(id); return n && n.data.disabled; });
    },
    // What a group's frame, its card and its menu do.
    act(name, groupId, arg) {
      const g = this.groupById(groupId);
      if (!g) return;
      if (name === "collapse") {
        const frame = this.frames.find((f) => f.id === groupId);
        const at = frame ? { x: Math.round(frame.x), y: Math.round(frame.y) } : g.position;
        this.send("group", [{ op: "set_group", id: groupId, collapsed: true, position: at }]);
      } else if (name === "expand") this.send("group", [{ op: "set_group", id: groupId, collapsed: false }]);
      else if (name === "rename") this.send("group", [{ op: "set_group", id: groupId, title: arg }]);
      else if (name === "start-rename") this.ctx.ui.renaming = groupId;
      else if (name === "ungroup") this.ungroup([groupId]);
      else if (name === "save") this.command("save_group", { group: groupId });
    },
    // Dragging a frame's title bar moves its cards; the move is one edit when the pointer is let go.
    onFrameDown(e, frame) {
      if (e.button !== 0 || this.ctx.ui.renaming === frame.id) return;
      e.stopPropagation();
      const zoom = unref(this.store.viewport).zoom;
      const start = { x: e.clientX, y: e.clientY };
      const members = frame.group.members.map((id) => this.store.findNode(id)).filter(Boolean);
      const origin = new Map(members.map((n) => [n.id, { ...n.position }]));
      let moved = false;
      const move = (ev) => {
        const dx = (ev.clientX - start.x) / zoom, dy = (ev.clientY - start.y) / zoom;
        moved = moved || Math.abs(dx) + Math.abs(dy) > 2;
        for (const n of members) n.position = { x: origin.get(n.id).x + dx, y: origin.get(n.id).y + dy };
      };
      const up = () => {
        window.removeEventListener("pointermove", move);
        window.removeEventListener("pointerup", up);
        if (moved) {
          this.send("move", members.map((n) => ({ op: "move", id: n.id, x: Math.round(n.position.x), y: Math.round(n.position.y) })));
        }
      };
      window.addEventListener("pointermove", move);
      window.addEventListener("pointerup", up);
    },
    // -- the right-click menu ----------------------------------------------------------------------
    openMenu(event, title, items) {
      event.preventDefault();
      const el = this.$el.getBoundingClientRect();
      const x = Math.min(event.clientX - el.left, el.width - 210), y = Math.min(event.clientY - el.top, el.height - 40 - 30 * items.length);
      this.menu = { x: Math.max(0, x), y: Math.max(0, y), title, items, at: this.inView(this.store.screenToFlowCoordinate({ x: event.clientX, y: event.clientY })) };
    },
    nodesMenu(ids) {
      const disabled = this.allDisabled(ids);
      const grouped = [...new Set(this.groupsOf(ids))];
      const items = [];
      if (ids.length === 1) items.push({ label: "Run to here", action: "run", run: () => this.$emit("run", { target: ids[0] }) });
      items.push(
        { label: "Duplicate", action: "duplicate", keys: "Ctrl+D", run: () => this.duplicate(ids) },
        { label: "Copy", action: "copy", keys: "Ctrl+C", run: () => this.copy(ids) },
        { label: "Paste", action: "paste", keys: "Ctrl+V", run: () => this.paste(this.besides(ids)) },
        { label: disabled ? "Enable" : "Disable", action: disabled ? "enable" : "disable", run: () => this.setDisabled(ids, !disabled) },
        { label: "Group", action: "group", keys: "Ctrl+G", run: () => this.group(ids) },
      );
      if (grouped.length) items.push({ label: grouped.length > 1 ? "Ungroup their groups" : "Ungroup", action: "ungroup",
                                       run: () => this.ungroup(grouped) });
      items.push({ label: "Delete", action: "delete", keys: "Del", danger: true, run: () => this.remove(ids) });
      return items;
    },
    onNodeMenu({ event, node }) {
      if (node.id.startsWith(GROUP_PREFIX)) return this.openGroupMenu(event, node.data.id);
      const selected = this.selection();
      const ids = selected.includes(node.id) && selected.length > 1 ? selected : [node.id];
      const title = ids.length > 1 ? `${ids.length} selected nodes` : (node.data.title || (this.catalogue[node.data.type] || {}).title || node.id);
      this.openMenu(event, title, this.nodesMenu(ids));
    },
    onSelectionMenu({ event }) {
      const ids = this.selection();
      if (ids.length) this.openMenu(event, `${ids.length} selected nodes`, this.nodesMenu(ids));
    },
    onPaneMenu(event) {
      const ids = this.selection();
      const items = [{ label: "Paste", action: "paste", keys: "Ctrl+V", run: () => this.paste(this._menuAt) }];
      if (ids.length) items.push(...this.nodesMenu(ids).filter((i) => i.action !== "run" && i.action !== "paste"));
      items.push({ label: "Fit view", action: "fit", run: () => this.fit() });
      this.openMenu(event, ids.length ? `canvas · ${ids.length} selected` : "canvas", items);
    },
    openGroupMenu(event, groupId) {
      const g = this.groupById(groupId);
      if (!g) return;
      const disabled = this.allDisabled(g.members);
      this.openMenu(event, `group: ${g.title}`, [
        { label: g.collapsed ? "Expand" : "Collapse", action: g.collapsed ? "expand" : "collapse", run: () => this.act(g.collapsed ? "expand" : "collapse", g.id) },
        { label: "Rename", action: "rename", run: () => this.act("start-rename", g.id) },
        { label: "Ungroup", action: "ungroup", keys: "Ctrl+Shift+G", run: () => this.act("ungroup", g.id) },
        { label: "Save to palette", action: "save", run: () => this.act("save", g.id) },
        { label: "Duplicate", action: "duplicate", run: () => this.duplicate(g.members) },
        { label: "Copy", action: "copy", run: () => this.copy(g.members) },
        { label: disabled ? "Enable" : "Disable", action: disabled ? "enable" : "disable", run: () => this.setDisabled(g.members, !disabled) },
        { label: "Delete the group and its nodes", action: "delete", danger: true, run: () => this.remove(g.members) },
      ]);
    },
    choose(item) {
      this._menuAt = this.menu && this.menu.at;  // a paste from the canvas's menu lands where it was opened
      this.menu = null;
      item.run();
    },
    onKey(e) {
      const t = e.target;
      if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
      if (e.key === "Escape" && this.menu) {
        this.menu = null;
        return;
      }
      const mod = e.ctrlKey || e.metaKey;
      if (!mod) return;
      const key = e.key.toLowerCase();
      const ids = this.selection();
      if (key === "z" && !e.shiftKey) this.$emit("command", { name: "undo" });
      else if ((key === "z" && e.shiftKey) || key === "y") this.$emit("command", { name: "redo" });
      else if (key === "s") this.$emit("command", { name: "save" });
      else if (key === "c" && ids.length && !String(window.getSelection() || "")) this.copy(ids);  // else: the text
      else if (key === "v") this.paste();
      else if (key === "d" && ids.length) this.duplicate(ids);
      else if (key === "g" && !e.shiftKey && ids.length) this.group(ids);
      else if (key === "g" && e.shiftKey && ids.length) this.ungroup(this.groupsOf(ids));
      else return;
      e.preventDefault();
    },
    minimapColor(node) {
      const s = node.id.startsWith(GROUP_PREFIX) ? groupState(this.statusMap, node.data.members, this.states)
        : this.statusMap[node.id];
      const look = this.states[s ? s.state : "idle"] || this.states.idle;
      return look ? look.fill : "#7b8794";
    },
  },
};
