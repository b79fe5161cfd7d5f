// The topology's graph as an SVG document, drawn from what cytoscape rendered: positions, sizes,
// endpoints and curves from its geometry, colours, widths, dashes and fonts from each element's computed
// style (so the theme's colours and the selection come along). Everything is built as DOM nodes with
// labels set as textContent, and XMLSerializer writes the escaping: a name from outside stays text.
// What it draws is what meshscope's stylesheet uses: ellipse, rectangle and round-rectangle nodes with
// solid or double borders, straight or bezier edges (solid, dashed or dotted) with triangle or vee
// arrows, and labels with their background; another node shape is drawn as its ellipse, another arrow
// as a triangle.
import { s } from "./util.js";

const XML_NS = "http://www.w3.org/XML/1998/namespace";
const LABEL_ONLY = {
  includeNodes: false, includeEdges: false, includeLabels: true, includeMainLabels: true,
  includeSourceLabels: false, includeTargetLabels: false, includeOverlays: false, includeUnderlays: false,
};
// Cytoscape's arrowheads, in units of the arrow's size, tip at the origin pointing along +x; and how far
// before the tip the line stops, in units of its width times the arrow scale.
const ARROWS = {
  triangle: { points: [[0, 0], [-0.3, -0.15], [-0.3, 0.15]], gap: 2 },
  vee: { points: [[0, 0], [-0.3, -0.15], [-0.15, 0], [-0.3, 0.15]], gap: 1.05 },
};

const num = (value) => Math.round(value * 100) / 100;
// Arrowheads' sizes to the half unit, so that edges of about the same width share a marker.
const half = (value) => Math.round(value * 2) / 2;
const point = (p) => `${num(p.x)} ${num(p.y)}`;

// The whole graph, its bounding box on a background of ``background``: an SVG document as a string.
export function graphSvg(cy, background) {
  const box = cy.elements().boundingBox();
  const svg = s("svg", {
    width: num(box.w), height: num(box.h), viewBox: `${num(box.x1)} ${num(box.y1)} ${num(box.w)} ${num(box.h)}`,
  });
  svg.setAttributeNS(XML_NS, "xml:space", "preserve"); // a name's spaces as they are
  const defs = s("defs");
  svg.append(defs, s("rect", { x: num(box.x1), y: num(box.y1), width: num(box.w), height: num(box.h), fill: background }));
  const markers = new Map();
  const measure = textMeasure();
  // Edges under nodes, each label over its own element, as cytoscape draws them.
  svg.append(
    s("g", { class: "edges" }, cy.edges().filter((edge) => edge.visible()).map((edge) => [edgePath(edge, defs, markers), label(edge, measure)])),
    s("g", { class: "nodes" }, cy.nodes().filter((node) => node.visible()).map((node) => [nodeShapes(node), label(node, measure)])),
  );
  return `<?xml version="1.0" encoding="UTF-8"?>\n${new XMLSerializer().serializeToString(svg)}\n`;
}

// --- nodes ----------------------------------------------------------------------------------------

// The node's body (class "node"), and for a double border its outer ring: cytoscape strokes a double
// border as its outer and inner thirds, the middle third left open.
function nodeShapes(node) {
  const { x, y } = node.position();
  const opacity = node.pstyle("opacity").value;
  const borderWidth = node.pstyle("border-width").pfValue;
  const border = {
    stroke: borderWidth > 0 ? node.style("border-color") : "none",
    "stroke-opacity": num(node.pstyle("border-opacity").value * opacity),
    "stroke-dasharray": dashes(node.pstyle("border-style").value, node.pstyle("border-dash-pattern").value),
  };
  const fill = { fill: node.style("background-color"), "fill-opacity": num(node.pstyle("background-opacity").value * opacity) };
  if (borderWidth > 0 && node.pstyle("border-style").value === "double") {
    const third = borderWidth / 3;
    return [
      shape(node, x, y, -third, { class: "node", ...fill, ...border, "stroke-width": num(third) }),
      shape(node, x, y, third, { class: "node-ring", fill: "none", ...border, "stroke-width": num(third) }),
    ];
  }
  return [shape(node, x, y, 0, { class: "node", ...fill, ...border, "stroke-width": num(borderWidth) })];
}

// The node's shape centred at (x, y), grown by ``offset`` on every side (shrunk if negative).
function shape(node, x, y, offset, attributes) {
  const width = node.width() + 2 * offset;
  const height = node.height() + 2 * offset;
  const kind = node.pstyle("shape").value;
  if (["rectangle", "round-rectangle", "roundrectangle"].includes(kind)) {
    const corner = node.pstyle("corner-radius");
    const radius = kind === "rectangle" ? 0
      : (corner.value === "auto" ? Math.min(node.width() / 4, node.height() / 4, 8) : corner.pfValue) + offset;
    return s("rect", {
      ...attributes, x: num(x - width / 2), y: num(y - height / 2), width: num(width), height: num(height),
      rx: radius > 0 ? num(radius) : null,
    });
  }
  return s("ellipse", { ...attributes, cx: num(x), cy: num(y), rx: num(width / 2), ry: num(height / 2) });
}

// --- edges ----------------------------------------------------------------------------------------

// The edge's line or curve (class "edge") through cytoscape's own points, ending where its arrowhead
// (a marker) begins.
function edgePath(edge, defs, markers) {
  const start = edge.sourceEndpoint();
  const tip = edge.targetEndpoint();
  const controls = edge.controlPoints() || [];
  const bends = controls.length ? controls : edge.segmentPoints() || [];
  const width = edge.pstyle("width").pfValue;
  const arrowShape = edge.pstyle("target-arrow-shape").value;
  const arrow = arrowShape === "none" ? null : ARROWS[arrowShape] ? arrowShape : "triangle";
  const scale = edge.pstyle("arrow-scale").value;
  const before = bends.length ? bends[bends.length - 1] : start;
  const length = Math.hypot(tip.x - before.x, tip.y - before.y) || 1;
  const gap = arrow ? Math.min(half(ARROWS[arrow].gap * width * scale), length) : 0;
  const end = { x: tip.x - ((tip.x - before.x) / length) * gap, y: tip.y - ((tip.y - before.y) / length) * gap };

  let d = `M ${point(start)}`;
  if (controls.length) {
    // Cytoscape's bezier: one quadratic curve per control point, joined halfway between control points.
    controls.forEach((control, i) => {
      const next = controls[i + 1];
      const to = next ? { x: (control.x + next.x) / 2, y: (control.y + next.y) / 2 } : end;
      d += ` Q ${point(control)} ${point(to)}`;
    });
  } else {
    for (const bend of bends) d += ` L ${point(bend)}`;
    d += ` L ${point(end)}`;
  }
  const color = edge.style("line-color");
  return s("path", {
    class: "edge", d, fill: "none", stroke: color, "stroke-width": num(width),
    "stroke-linecap": edge.pstyle("line-cap").value,
    "stroke-dasharray": dashes(edge.pstyle("line-style").value, edge.pstyle("line-dash-pattern").value),
    "stroke-dashoffset": edge.pstyle("line-style").value === "dashed" ? num(edge.pstyle("line-dash-offset").pfValue) : null,
    opacity: num(edge.pstyle("opacity").value * edge.pstyle("line-opacity").value),
    "marker-end": arrow ? `url(#${marker(defs, markers, arrow, edge.style("target-arrow-color"), width, scale, gap)})` : null,
  });
}

// The id of an arrowhead marker, one per shape, colour and size: its tip ``gap`` beyond the line's end.
function marker(defs, markers, arrow, color, width, scale, gap) {
  // Cytoscape's arrow size for a line of this width.
  const size = half(Math.max(Math.pow(13.37 * width, 0.9), 29) * scale);
  const key = [arrow, color, size, gap].join("|");
  if (!markers.has(key)) {
    const id = `arrow-${markers.size}`;
    const side = 0.3 * size;
    defs.append(s("marker", {
      id, markerUnits: "userSpaceOnUse", orient: "auto", refX: 0, refY: 0,
      viewBox: `${num(gap - side)} ${num(-side / 2)} ${num(side)} ${num(side)}`, markerWidth: num(side), markerHeight: num(side),
    }, s("path", {
      d: `M ${ARROWS[arrow].points.map(([x, y]) => `${num(gap + x * size)} ${num(y * size)}`).join(" L ")} Z`, fill: color,
    })));
    markers.set(key, id);
  }
  return markers.get(key);
}

function dashes(style, pattern) {
  if (style === "dashed" && pattern) return pattern.map(num).join(" ");
  return style === "dotted" ? "1 1" : null;
}

// --- labels ---------------------------------------------------------------------------------------

// The element's label as <text>, a <tspan> a line, on its background, centred where cytoscape placed
// it (the centre of the label's bounding box) and turned as drawn (edges' labels along the edge).
function label(ele, measure) {
  const text = ele.pstyle("label").strValue;
  const opacity = ele.pstyle("opacity").value;
  const textOpacity = ele.pstyle("text-opacity").value * opacity;
  if (!text || textOpacity === 0) return null;
  const size = ele.pstyle("font-size").pfValue;
  const font = {
    "font-family": ele.pstyle("font-family").strValue, "font-size": num(size),
    "font-weight": ele.pstyle("font-weight").strValue, "font-style": ele.pstyle("font-style").strValue,
  };
  const width = (line) => measure(`${font["font-style"]} ${font["font-weight"]} ${size}px ${font["font-family"]}`, line);
  const lines = labelLines(ele, text, width);
  const lineHeight = size * ele.pstyle("line-height").value;
  const textWidth = Math.max(...lines.map(width));
  const textHeight = lines.length * lineHeight;
  const box = ele.boundingBox(LABEL_ONLY);
  const angle = labelAngle(ele);
  const group = s("g", {
    class: ele.isNode() ? "node-label" : "edge-label",
    transform: `translate(${num((box.x1 + box.x2) / 2)} ${num((box.y1 + box.y2) / 2)})${angle ? ` rotate(${num((angle * 180) / Math.PI)})` : ""}`,
  });
  const backgroundOpacity = ele.pstyle("text-background-opacity").value * opacity;
  if (backgroundOpacity > 0) {
    const padding = ele.pstyle("text-background-padding").pfValue;
    group.append(s("rect", {
      x: num(-textWidth / 2 - padding), y: num(-textHeight / 2 - padding),
      width: num(textWidth + 2 * padding), height: num(textHeight + 2 * padding),
      fill: ele.style("text-background-color"), "fill-opacity": num(backgroundOpacity),
    }));
  }
  group.append(s("text", { ...font, fill: ele.style("color"), "fill-opacity": num(textOpacity), "text-anchor": "middle", "dominant-baseline": "central" },
    lines.map((line, i) => s("tspan", { x: 0, y: num(-textHeight / 2 + (i + 0.5) * lineHeight), text: line }))));
  return group;
}

// The label's lines as cytoscape wraps them: at line breaks, then wherever a line is wider than
// text-max-width, between words or (text-overflow-wrap: anywhere) between any two characters.
function labelLines(ele, text, width) {
  if (ele.pstyle("text-wrap").value !== "wrap") return [text];
  const max = ele.pstyle("text-max-width").pfValue;
  const anywhere = ele.pstyle("text-overflow-wrap").value === "anywhere";
  return text.split("\n").flatMap((line) => {
    if (width(line) <= max) return [line];
    const lines = [];
    let current = "";
    for (const piece of anywhere ? Array.from(line) : line.split(/(?<=\s)/)) {
      if (current && width(current + piece) > max) {
        lines.push(current.trimEnd());
        current = piece;
      } else current += piece;
    }
    return current ? [...lines, current] : lines;
  });
}

// The label's rotation in radians: along the edge at its middle (autorotate, kept upright), as styled.
function labelAngle(ele) {
  const rotation = ele.pstyle("text-rotation");
  if (rotation.strValue === "none") return 0;
  if (rotation.strValue !== "autorotate") return rotation.pfValue;
  if (ele.isNode()) return 0;
  const points = [ele.sourceEndpoint(), ...(ele.controlPoints() || ele.segmentPoints() || []), ele.targetEndpoint()];
  const middle = Math.floor(points.length / 2);
  const [from, to] = points.length % 2 ? [points[middle - 1], points[middle + 1]] : [points[middle - 1], points[middle]];
  const dx = to.x - from.x, dy = to.y - from.y;
  return dx === 0 ? Math.PI / 2 : Math.atan(dy / dx);
}

// A text's width in a CSS font, measured as cytoscape measures its labels (a canvas).
function textMeasure() {
  const context = document.createElement("canvas").getContext("2d");
  return (font, text) => {
    context.font = font;
    return context.measureText(text).width;
  };
}
