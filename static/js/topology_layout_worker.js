// The whole graph's layout off the main thread (a module worker: no build step). Receives {id, ids, pairs}
// (pairs: an Int32Array, source and target of each edge as indexes into ids) and answers {id, xy}: x and y
// of ids[i] at xy[2i] and xy[2i + 1], its buffer transferred.
import { layeredPositions } from "./topology_layout.js";

self.addEventListener("message", (event) => {
  const { id, ids, pairs } = event.data;
  const links = [];
  for (let i = 0; i < pairs.length; i += 2) links.push([ids[pairs[i]], ids[pairs[i + 1]]]);
  const positions = layeredPositions(ids, links);
  const xy = new Float64Array(ids.length * 2);
  ids.forEach((node, i) => {
    const p = positions.get(node);
    xy[2 * i] = p.x;
    xy[2 * i + 1] = p.y;
  });
  self.postMessage({ id, xy }, [xy.buffer]);
});
