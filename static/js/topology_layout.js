// The topology's layered layout, left to right, in O(nodes + edges) and stable for the same graph. No DOM
// and no cytoscape: the page runs it itself for the views it draws at once (groups, a focus, an expanded
// group: tens to hundreds of nodes, a few milliseconds), and topology_layout_worker.js runs it off the main
// thread for the whole graph: 5,000 services and 25,000 edges took 75-260 ms there on this 2-core machine
// (page to worker and back included), time the page stays responsive.

// ids: the nodes' ids; links: [source, target] pairs. Returns a Map id -> {x, y}.
export function layeredPositions(ids, links) {
  const out = new Map(ids.map((id) => [id, []]));
  const callers = new Map(ids.map((id) => [id, []]));
  const indeg = new Map(ids.map((id) => [id, 0]));
  for (const [source, target] of links) {
    if (source === target || !out.has(source) || !indeg.has(target)) continue;
    out.get(source).push(target);
    callers.get(target).push(source);
    indeg.set(target, indeg.get(target) + 1);
  }
  const rank = new Map();
  const sorted = [...ids].sort();
  const isolated = sorted.filter((id) => indeg.get(id) === 0 && out.get(id).length === 0);
  const isolatedSet = new Set(isolated);
  // Breadth first from the roots (callers nobody calls), then from whatever a cycle kept unreached.
  const bfs = (starts) => {
    const queue = [...starts];
    for (const id of starts) rank.set(id, 0);
    for (let i = 0; i < queue.length; i++) {
      const id = queue[i];
      for (const next of out.get(id)) {
        if (!rank.has(next)) {
          rank.set(next, rank.get(id) + 1);
          queue.push(next);
        }
      }
    }
  };
  bfs(sorted.filter((id) => indeg.get(id) === 0 && !isolatedSet.has(id)));
  for (const id of sorted) if (!rank.has(id) && !isolatedSet.has(id)) bfs([id]);

  const columns = [];
  for (const id of sorted) {
    if (isolatedSet.has(id)) continue;
    const r = rank.get(id);
    (columns[r] = columns[r] || []).push(id);
  }
  const positions = new Map();
  const perColumn = Math.max(10, Math.ceil(Math.sqrt(ids.length) * 1.2));
  const yOf = new Map();
  let x = 0;
  const dx = 230, dy = 78;
  for (const column of columns) {
    if (!column) continue;
    // Order by the mean position of the callers already placed: fewer crossings, cheaply.
    const weight = (id) => {
      let sum = 0, n = 0;
      for (const source of callers.get(id)) if (yOf.has(source)) { sum += yOf.get(source); n += 1; }
      return n ? sum / n : Infinity;
    };
    const keyed = column.map((id) => [weight(id), id]);
    keyed.sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : 1));
    const slices = Math.ceil(keyed.length / perColumn);
    for (let s = 0; s < slices; s++) {
      const slice = keyed.slice(s * perColumn, (s + 1) * perColumn);
      const top = -((slice.length - 1) * dy) / 2;
      slice.forEach(([, id], i) => {
        const y = top + i * dy + (s % 2 ? dy / 2 : 0);
        positions.set(id, { x, y });
        yOf.set(id, y);
      });
      x += dx;
    }
  }
  // Services without edges: a grid under the graph.
  let maxY = 0;
  for (const p of positions.values()) maxY = Math.max(maxY, p.y);
  const cols = Math.max(4, Math.ceil(Math.sqrt(isolated.length * 2)));
  isolated.forEach((id, i) => positions.set(id, { x: (i % cols) * 170, y: maxY + 140 + Math.floor(i / cols) * 64 }));
  return positions;
}

// The k-hop neighbourhood of `focus`, calls followed both ways: the set of ids at most `hops` calls away.
// `adjacency`: id -> ids it calls or is called by (neighbours below).
export function neighbourhood(adjacency, focus, hops) {
  const near = new Set([focus]);
  let frontier = [focus];
  for (let hop = 0; hop < hops && frontier.length; hop++) {
    const next = [];
    for (const id of frontier) {
      for (const other of adjacency.get(id) || []) {
        if (!near.has(other)) {
          near.add(other);
          next.push(other);
        }
      }
    }
    frontier = next;
  }
  return near;
}

// id -> the ids of its callers and callees, from edge records ({source, target}).
export function neighbours(edges) {
  const adjacency = new Map();
  const link = (a, b) => {
    const list = adjacency.get(a);
    if (list) list.push(b);
    else adjacency.set(a, [b]);
  };
  for (const e of edges) {
    if (e.source === e.target) continue;
    link(e.source, e.target);
    link(e.target, e.source);
  }
  return adjacency;
}
