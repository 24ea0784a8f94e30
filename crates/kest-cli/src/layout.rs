//! A layered (Sugiyama-style) layout of a DAG, for the pictures of
//! `kest viz --format svg|html`.
//!
//! Three steps, each small enough to audit:
//! 1. **layers**: a node's layer is the length of the longest path from a
//!    root to it; an edge spanning several layers is cut into a chain of
//!    virtual nodes, one per layer crossed (bounded by [`MAX_VIRTUAL`]);
//! 2. **ordering**: alternate down and up sweeps sort each layer by the
//!    barycentre (mean position) of the neighbours in the previous layer,
//!    keeping the order with the fewest crossings seen;
//! 3. **coordinates**: nodes move towards their neighbours' mean position,
//!    then are packed left and right with the minimum separation and the
//!    two packings averaged (which keeps both the order and the
//!    separation).
//!
//! The input is only indices: no string from a passport reaches this
//! module. Edges that do not point from an earlier node to a later one are
//! ignored, so a hostile, cyclic "DAG" still lays out (and terminates).
//! Only `std` is used, and nothing indexes out of bounds by construction
//! (every access is checked), so the fuzz targets can mount it with the
//! renderers.

/// At most this many virtual nodes are created for long edges; past it, the
/// remaining long edges are drawn straight across the layers.
pub const MAX_VIRTUAL: usize = 20_000;

/// Ordering sweeps (down and up alternately).
const SWEEPS: usize = 12;

/// Coordinate-smoothing rounds (each a down and an up pass).
const ROUNDS: usize = 6;

/// Width of a real node and of a virtual one, in slot units (a real node
/// takes one slot).
const REAL_WIDTH: f64 = 1.0;
const VIRTUAL_WIDTH: f64 = 0.3;

/// A point of the layout: `layer` counts from the roots (0) downwards, `x`
/// is the horizontal centre in slot units (0 = left edge of the picture).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Layer (row), from 0 at the top.
    pub layer: usize,
    /// Horizontal centre, in slot units.
    pub x: f64,
}

/// One edge as laid out: from a parent to a child through the virtual nodes
/// of the layers in between.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgePath {
    /// Index of the parent node.
    pub from: usize,
    /// Index of the child node.
    pub to: usize,
    /// The parent's point, the virtual points in between, the child's point.
    pub points: Vec<Point>,
}

/// The layout of a whole graph.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Layout {
    /// One point per input node, in input order.
    pub nodes: Vec<Point>,
    /// One path per kept edge, in input order (parents of node 0, then of
    /// node 1, …).
    pub edges: Vec<EdgePath>,
    /// Number of layers.
    pub layers: usize,
    /// Total width in slot units.
    pub width: f64,
}

/// A vertex of the layered graph: a real node or a virtual one.
#[derive(Debug, Clone)]
struct Vertex {
    layer: usize,
    real: bool,
    up: Vec<usize>,
    down: Vec<usize>,
}

impl Vertex {
    fn width(&self) -> f64 {
        if self.real { REAL_WIDTH } else { VIRTUAL_WIDTH }
    }
}

/// Lays out `parents.len()` nodes where `parents[i]` lists the indices of
/// node `i`'s parents. Only parents with a smaller index are used (a
/// passport lists parents before children); duplicates are dropped.
pub fn layout(parents: &[Vec<usize>]) -> Layout {
    let n = parents.len();
    // 1. Longest-path layering (parents come first, so one pass suffices).
    let kept: Vec<Vec<usize>> = parents
        .iter()
        .enumerate()
        .map(|(i, ps)| {
            let mut ps: Vec<usize> = ps.iter().copied().filter(|&p| p < i).collect();
            ps.sort_unstable();
            ps.dedup();
            ps
        })
        .collect();
    let mut layer = vec![0usize; n];
    for (i, ps) in kept.iter().enumerate() {
        let l = ps.iter().filter_map(|&p| layer.get(p)).map(|l| l + 1).max().unwrap_or(0);
        if let Some(slot) = layer.get_mut(i) {
            *slot = l;
        }
    }
    let layers = layer.iter().max().map_or(0, |m| m + 1);

    let mut vertices: Vec<Vertex> =
        layer.iter().map(|&l| Vertex { layer: l, real: true, up: Vec::new(), down: Vec::new() }).collect();
    let mut chains: Vec<(usize, usize, Vec<usize>)> = Vec::new();
    let mut budget = MAX_VIRTUAL;
    for (child, ps) in kept.iter().enumerate() {
        for &parent in ps {
            let (lp, lc) = (layer.get(parent).copied().unwrap_or(0), layer.get(child).copied().unwrap_or(0));
            let span = lc.saturating_sub(lp);
            let mut chain = vec![parent];
            if span > 1 && span - 1 <= budget {
                budget -= span - 1;
                for l in lp + 1..lc {
                    chain.push(vertices.len());
                    vertices.push(Vertex { layer: l, real: false, up: Vec::new(), down: Vec::new() });
                }
            }
            chain.push(child);
            for pair in chain.windows(2) {
                if let [a, b] = *pair {
                    if let Some(v) = vertices.get_mut(a) {
                        v.down.push(b);
                    }
                    if let Some(v) = vertices.get_mut(b) {
                        v.up.push(a);
                    }
                }
            }
            chains.push((parent, child, chain));
        }
    }

    // 2. Ordering within layers.
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for (v, vertex) in vertices.iter().enumerate() {
        if let Some(row) = rows.get_mut(vertex.layer) {
            row.push(v);
        }
    }
    let mut pos = positions(&rows, vertices.len());
    let mut best = rows.clone();
    let mut best_crossings = crossings(&rows, &vertices, &pos);
    for sweep in 0..SWEEPS {
        let down = sweep % 2 == 0;
        let order: Vec<usize> =
            if down { (1..layers).collect() } else { (0..layers.saturating_sub(1)).rev().collect() };
        for l in order {
            let Some(row) = rows.get_mut(l) else { continue };
            let mut keyed: Vec<(f64, usize)> = row
                .iter()
                .map(|&v| {
                    let own = pos.get(v).copied().unwrap_or(0) as f64;
                    let ns = vertices.get(v).map(|x| if down { &x.up } else { &x.down });
                    (
                        ns.and_then(|ns| mean(ns.iter().filter_map(|&u| pos.get(u).map(|&p| p as f64))))
                            .unwrap_or(own),
                        v,
                    )
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            *row = keyed.into_iter().map(|(_, v)| v).collect();
            for (k, &v) in row.iter().enumerate() {
                if let Some(p) = pos.get_mut(v) {
                    *p = k;
                }
            }
        }
        let c = crossings(&rows, &vertices, &pos);
        if c < best_crossings {
            best_crossings = c;
            best = rows.clone();
        }
    }
    let rows = best;

    // 3. Coordinates.
    let mut x = vec![0f64; vertices.len()];
    for row in &rows {
        let mut at = 0.0;
        for &v in row {
            let w = vertices.get(v).map_or(REAL_WIDTH, Vertex::width);
            if let Some(slot) = x.get_mut(v) {
                *slot = at + w / 2.0;
            }
            at += w;
        }
    }
    for _ in 0..ROUNDS {
        for down in [true, false] {
            let order: Vec<usize> =
                if down { (1..layers).collect() } else { (0..layers.saturating_sub(1)).rev().collect() };
            for l in order {
                let Some(row) = rows.get(l) else { continue };
                let desired: Vec<f64> = row
                    .iter()
                    .map(|&v| {
                        let own = x.get(v).copied().unwrap_or(0.0);
                        let ns = vertices.get(v).map(|x| if down { &x.up } else { &x.down });
                        ns.and_then(|ns| mean(ns.iter().filter_map(|&u| x.get(u).copied()))).unwrap_or(own)
                    })
                    .collect();
                pack(row, &vertices, &mut x, &desired);
            }
        }
    }
    let left = vertices.iter().zip(&x).map(|(v, &x)| x - v.width() / 2.0).fold(f64::INFINITY, f64::min);
    let left = if left.is_finite() { left } else { 0.0 };
    for x in &mut x {
        *x -= left;
    }
    let width = vertices.iter().zip(&x).map(|(v, &x)| x + v.width() / 2.0).fold(0.0, f64::max);

    let point = |v: usize| Point {
        layer: vertices.get(v).map_or(0, |v| v.layer),
        x: x.get(v).copied().unwrap_or(0.0),
    };
    Layout {
        nodes: (0..n).map(point).collect(),
        edges: chains
            .into_iter()
            .map(|(from, to, chain)| EdgePath { from, to, points: chain.into_iter().map(point).collect() })
            .collect(),
        layers,
        width,
    }
}

/// The mean of some numbers, `None` for none.
fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, count) = values.fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    (count > 0).then(|| sum / count as f64)
}

/// Position of each vertex within its row.
fn positions(rows: &[Vec<usize>], count: usize) -> Vec<usize> {
    let mut pos = vec![0; count];
    for row in rows {
        for (k, &v) in row.iter().enumerate() {
            if let Some(p) = pos.get_mut(v) {
                *p = k;
            }
        }
    }
    pos
}

/// Edge crossings between consecutive rows (pairs of edges whose ends are
/// in opposite orders); quadratic per pair of rows, so it stops counting at
/// a cap, which is plenty to compare orderings of a passport.
fn crossings(rows: &[Vec<usize>], vertices: &[Vertex], pos: &[usize]) -> usize {
    const CAP: usize = 1_000_000;
    let mut total = 0usize;
    let mut work = 0usize;
    for row in rows {
        let edges: Vec<(usize, usize)> = row
            .iter()
            .flat_map(|&v| {
                let from = pos.get(v).copied().unwrap_or(0);
                vertices.get(v).map(|x| x.down.as_slice()).unwrap_or_default().iter().map(move |&w| (from, w))
            })
            .map(|(from, w)| (from, pos.get(w).copied().unwrap_or(0)))
            .collect();
        for (i, a) in edges.iter().enumerate() {
            for b in edges.iter().skip(i + 1) {
                work += 1;
                if (a.0 < b.0 && a.1 > b.1) || (a.0 > b.0 && a.1 < b.1) {
                    total += 1;
                }
                if work > CAP {
                    return total;
                }
            }
        }
    }
    total
}

/// Places `row` (left to right) as close to `desired` as the minimum
/// separation allows: packs towards the left and towards the right and
/// averages the two, so order and separation both hold.
fn pack(row: &[usize], vertices: &[Vertex], x: &mut [f64], desired: &[f64]) {
    let width = |v: usize| vertices.get(v).map_or(REAL_WIDTH, Vertex::width);
    let mut left = Vec::with_capacity(row.len());
    let mut prev: Option<(usize, f64)> = None;
    for (&v, &d) in row.iter().zip(desired) {
        let at = match prev {
            Some((p, px)) => d.max(px + (width(p) + width(v)) / 2.0),
            None => d,
        };
        left.push(at);
        prev = Some((v, at));
    }
    let mut right = vec![0.0; row.len()];
    let mut next: Option<(usize, f64)> = None;
    for ((slot, &v), &d) in right.iter_mut().zip(row).zip(desired).rev() {
        let at = match next {
            Some((q, qx)) => d.min(qx - (width(q) + width(v)) / 2.0),
            None => d,
        };
        *slot = at;
        next = Some((v, at));
    }
    for ((&v, l), r) in row.iter().zip(left).zip(right) {
        if let Some(slot) = x.get_mut(v) {
            *slot = (l + r) / 2.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_longest_paths_and_long_edges_get_virtual_points() {
        // 0 → 1 → 2, 0 → 2 (spans two layers), 0 → 3.
        let l = layout(&[vec![], vec![0], vec![0, 1], vec![0]]);
        let layers: Vec<usize> = l.nodes.iter().map(|p| p.layer).collect();
        assert_eq!(layers, [0, 1, 2, 1]);
        assert_eq!(l.layers, 3);
        let long = l.edges.iter().find(|e| e.from == 0 && e.to == 2).unwrap();
        assert_eq!(long.points.len(), 3);
    }

    #[test]
    fn nodes_of_a_layer_keep_their_separation() {
        let l = layout(&[vec![], vec![0], vec![0], vec![0], vec![1, 2, 3]]);
        let mut xs: Vec<f64> = l.nodes.iter().filter(|p| p.layer == 1).map(|p| p.x).collect();
        xs.sort_by(f64::total_cmp);
        assert!(xs.windows(2).all(|w| w[1] - w[0] >= REAL_WIDTH - 1e-9), "{xs:?}");
        // The fan-in node sits under the middle of its parents.
        assert!((l.nodes[4].x - xs[1]).abs() < 1e-9);
    }

    #[test]
    fn barycentres_remove_avoidable_crossings() {
        // Two independent chains whose children are listed crosswise.
        let l = layout(&[vec![], vec![], vec![1], vec![0]]);
        assert!((l.nodes[0].x < l.nodes[1].x) == (l.nodes[3].x < l.nodes[2].x));
    }

    #[test]
    fn hostile_edges_are_ignored_and_empty_is_empty() {
        let l = layout(&[vec![0, 1, 7], vec![1, 0, 0]]);
        assert_eq!(l.edges.len(), 1);
        assert_eq!(layout(&[]), Layout::default());
    }
}
