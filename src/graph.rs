//! The build graph: builds are nodes, and there is an edge parent → child when
//! the child uses (as its base, or as an additional watched image) one of the
//! parent's tags, compared as normalised references. Pure: no I/O.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use crate::reference::ImageRef;

/// What the graph needs to know of one build.
#[derive(Debug, Clone)]
pub struct Node {
    /// The build's name, which the graph's answers use.
    pub name: String,
    /// The tags the build produces: another build using one is its child.
    pub tags: Vec<ImageRef>,
    /// The images the build watches: one that is another build's tag makes that build its parent.
    pub uses: Vec<ImageRef>,
}

/// A dependency cycle among builds: a config error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dependency cycle among builds {}: each one's base is another's tag; break the cycle by changing a FROM or a tag", .0.join(" → "))]
pub struct CycleError(pub Vec<String>);

/// The dependency graph of a config.
#[derive(Debug, Clone)]
pub struct BuildGraph {
    graph: DiGraph<String, ()>,
    index: HashMap<String, NodeIndex>,
    /// Tag → the node of the build that produces it: the edges come from it, and
    /// the checks ask it whether an image is another build's output.
    producers: HashMap<ImageRef, NodeIndex>,
}

impl BuildGraph {
    /// Builds the graph from `nodes`.
    ///
    /// # Errors
    /// [`CycleError`] naming every build of the first cycle found (by strongly
    /// connected components, so all members are named, not just one).
    pub fn new(nodes: &[Node]) -> Result<Self, CycleError> {
        let mut graph = DiGraph::new();
        let mut index = HashMap::new();
        let mut producers: HashMap<ImageRef, NodeIndex> = HashMap::new();
        for n in nodes {
            let i = graph.add_node(n.name.clone());
            index.insert(n.name.clone(), i);
            for t in &n.tags {
                producers.insert(t.clone(), i);
            }
        }
        for n in nodes {
            let child = index[&n.name];
            for u in &n.uses {
                if let Some(&parent) = producers.get(u) {
                    if graph.find_edge(parent, child).is_none() {
                        graph.add_edge(parent, child, ());
                    }
                }
            }
        }
        for scc in tarjan_scc(&graph) {
            let self_loop = scc.len() == 1 && graph.find_edge(scc[0], scc[0]).is_some();
            if scc.len() > 1 || self_loop {
                let mut names: Vec<String> = scc.iter().map(|&i| graph[i].clone()).collect();
                names.sort();
                return Err(CycleError(names));
            }
        }
        Ok(BuildGraph { graph, index, producers })
    }

    fn neighbours(&self, name: &str, dir: Direction) -> Vec<&str> {
        let Some(&i) = self.index.get(name) else {
            return Vec::new();
        };
        let mut v: Vec<&str> = self.graph.neighbors_directed(i, dir).map(|j| self.graph[j].as_str()).collect();
        v.sort();
        v
    }

    /// Builds whose tags `name` uses, sorted.
    pub fn parents(&self, name: &str) -> Vec<&str> {
        self.neighbours(name, Direction::Incoming)
    }

    /// Builds that use one of `name`'s tags, sorted.
    pub fn children(&self, name: &str) -> Vec<&str> {
        self.neighbours(name, Direction::Outgoing)
    }

    /// Every build in topological order: parents before children, ties broken
    /// by name so the order is stable (Kahn's algorithm).
    pub fn order(&self) -> Vec<String> {
        let mut indegree: HashMap<NodeIndex, usize> =
            self.graph.node_indices().map(|i| (i, self.graph.neighbors_directed(i, Direction::Incoming).count())).collect();
        let mut ready: BinaryHeap<Reverse<(&str, NodeIndex)>> =
            indegree.iter().filter(|(_, &d)| d == 0).map(|(&i, _)| Reverse((self.graph[i].as_str(), i))).collect();
        let mut out = Vec::with_capacity(self.graph.node_count());
        while let Some(Reverse((name, i))) = ready.pop() {
            out.push(name.to_string());
            for j in self.graph.neighbors_directed(i, Direction::Outgoing) {
                let d = indegree.get_mut(&j).expect("every node has an indegree");
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse((self.graph[j].as_str(), j)));
                }
            }
        }
        out
    }

    /// `roots` plus every build reachable from them (their descendants).
    pub fn with_descendants<'a>(&self, roots: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<NodeIndex> = roots.into_iter().filter_map(|r| self.index.get(r).copied()).collect();
        while let Some(i) = stack.pop() {
            if out.insert(self.graph[i].clone()) {
                stack.extend(self.graph.neighbors_directed(i, Direction::Outgoing));
            }
        }
        out
    }

    /// The graph in Graphviz dot, nodes and edges sorted by name; `external(build)`
    /// names the images outside the graph that a build watches, drawn as dashed boxes.
    pub fn to_dot(&self, external: impl Fn(&str) -> Vec<String>) -> String {
        let mut out = String::from("digraph freshen {\n  rankdir=LR;\n");
        for name in self.order() {
            let n = dot_id(&name);
            out.push_str(&format!("  {n};\n"));
            for c in self.children(&name) {
                out.push_str(&format!("  {n} -> {};\n", dot_id(c)));
            }
            for image in external(&name) {
                let i = dot_id(&image);
                out.push_str(&format!("  {i} [shape=box, style=dashed];\n  {i} -> {n} [style=dashed];\n"));
            }
        }
        out.push_str("}\n");
        out
    }

    /// The build that produces `image` as one of its tags, if any.
    pub fn producer_of(&self, image: &ImageRef) -> Option<&str> {
        self.producers.get(image).map(|&i| self.graph[i].as_str())
    }
}

/// `s` as a quoted Graphviz ID, with double quotes and backslashes escaped (Graphviz DOT language, "ID").
fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, tag: &str, base: &str) -> Node {
        Node { name: name.into(), tags: vec![ImageRef::parse(tag).unwrap()], uses: vec![ImageRef::parse(base).unwrap()] }
    }

    #[test]
    fn edges_order_and_descendants() {
        let g = BuildGraph::new(&[
            node("app", "l/app", "l/lib:1"),
            node("lib", "l/lib:1", "docker.io/library/alpine"),
            node("other", "l/other", "alpine:3"),
            node("tool", "l/tool", "l/app:latest"),
        ])
        .unwrap();
        assert_eq!(g.order(), vec!["lib", "app", "other", "tool"]);
        assert_eq!(g.parents("app"), vec!["lib"]);
        assert_eq!(g.with_descendants(["lib"]).into_iter().collect::<Vec<_>>(), vec!["app", "lib", "tool"]);
    }

    #[test]
    fn cycle_names_every_member() {
        let e = BuildGraph::new(&[node("a", "x/a", "x/c"), node("b", "x/b", "x/a"), node("c", "x/c", "x/b"), node("d", "x/d", "alpine")])
            .unwrap_err();
        assert_eq!(e.0, vec!["a", "b", "c"]);
        assert!(BuildGraph::new(&[node("s", "x/s", "x/s")]).is_err());
    }
}
