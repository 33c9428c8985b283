//! Depth-first walk that keeps each node's ancestors, without allocating.
//!
//! `fdt` nodes do not know their parents, but `reg` needs the parent's cells and address
//! translation needs every ancestor's `ranges`. The walk keeps the path from the root on a
//! fixed stack of [`MAX_DEPTH`] entries (the blob validator rejects deeper trees).

use fdt::Fdt;

use super::cells::{base_name, Node};
use super::{DtError, MAX_DEPTH};

/// How to list a node's children: `fdt`'s iterator type is unnameable, so it hides behind this.
pub(crate) trait ChildrenOf<'b, 'a: 'b> {
    /// The children iterator.
    type Iter: Iterator<Item = Node<'b, 'a>>;
    /// The children of `node`.
    fn children_of(&self, node: Node<'b, 'a>) -> Self::Iter;
}

impl<'b, 'a: 'b, F, I> ChildrenOf<'b, 'a> for F
where
    F: Fn(Node<'b, 'a>) -> I,
    I: Iterator<Item = Node<'b, 'a>>,
{
    type Iter = I;
    fn children_of(&self, node: Node<'b, 'a>) -> I {
        self(node)
    }
}

/// A depth-first walk over all nodes; `next_node` lends the ancestors of each node (root first).
pub(crate) struct Walk<'b, 'a: 'b, C: ChildrenOf<'b, 'a>> {
    path: [Node<'b, 'a>; MAX_DEPTH],
    children: [Option<C::Iter>; MAX_DEPTH],
    depth: usize,
    root: Option<Node<'b, 'a>>,
    lister: C,
}

/// Starts a walk at the root of `fdt`.
pub(crate) fn walk<'b, 'a: 'b>(fdt: &'b Fdt<'a>) -> Result<Walk<'b, 'a, impl ChildrenOf<'b, 'a>>, DtError<'a>> {
    let root = fdt.all_nodes().next().ok_or(DtError::NotFound { what: "root node" })?;
    Ok(Walk {
        // Slots past `depth` are stale; the root is just a filler.
        path: [root; MAX_DEPTH],
        children: core::array::from_fn(|_| None),
        depth: 0,
        root: Some(root),
        lister: |node: Node<'b, 'a>| node.children(),
    })
}

/// A path of nodes from the root (first) to a node (last).
pub(crate) type NodePath<'t, 'b, 'a> = &'t [Node<'b, 'a>];

impl<'b, 'a: 'b, C: ChildrenOf<'b, 'a>> Walk<'b, 'a, C> {
    /// The next node in depth-first order, as its path from the root: `chain.last()` is the node,
    /// `chain[0]` the root (for the root itself the chain has one entry).
    #[allow(clippy::type_complexity)]
    pub(crate) fn next_node(&mut self) -> Option<Result<NodePath<'_, 'b, 'a>, DtError<'a>>> {
        if let Some(root) = self.root.take() {
            self.path[0] = root;
            self.children[0] = Some(self.lister.children_of(root));
            self.depth = 1;
            return Some(Ok(&self.path[..1]));
        }
        while self.depth > 0 {
            let top = self.depth - 1;
            match self.children[top].as_mut().and_then(Iterator::next) {
                Some(child) => {
                    if self.depth == MAX_DEPTH {
                        return Some(Err(DtError::TooDeep { node: child.name }));
                    }
                    self.path[self.depth] = child;
                    self.children[self.depth] = Some(self.lister.children_of(child));
                    self.depth += 1;
                    return Some(Ok(&self.path[..top + 2]));
                }
                None => {
                    self.children[top] = None;
                    self.depth -= 1;
                }
            }
        }
        None
    }
}

/// Whether `chain` (root first, node last) is the node `path` names (`/a/b@1`).
///
/// A path component without `@unit-address` matches a node of that base name, as Linux
/// `of_find_node_by_path()` does for `/memory`.
pub(crate) fn path_matches(path: &str, chain: &[Node<'_, '_>]) -> bool {
    let Some(rel) = path.strip_prefix('/') else {
        return false;
    };
    let rel = rel.trim_end_matches('/');
    if rel.is_empty() {
        return chain.len() == 1;
    }
    // chain[0] is the root, which has no path component.
    let names = chain.iter().skip(1).map(|n| n.name);
    let parts = rel.split('/');
    parts.clone().count() == chain.len() - 1
        && parts.zip(names).all(|(part, name)| part == name || (!part.contains('@') && part == base_name(name)))
}
