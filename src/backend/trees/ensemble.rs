//! The trees flattened for evaluation: checking and laying out the attributes, and walking rows to their leaves.

use std::collections::{HashMap, HashSet};

use super::{Aggregate, Mode, TreeAttributes};

/// Most classes or targets per row: scores are allocated per row and output, so a model cannot ask for more.
pub const MAX_OUTPUTS: usize = 1 << 16;

/// A branch or a leaf. For a leaf, `yes..no` is its run in [`Ensemble::votes`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct Node {
    threshold: f32,
    feature: u32,
    yes: u32,
    no: u32,
    mode: Mode,
    missing_yes: bool,
}

/// The trees, flattened, ready to evaluate rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Ensemble {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    votes: Vec<(u32, f32)>,
    n_outputs: usize,
    /// One more than the highest feature index any node reads.
    n_features: usize,
}

impl Ensemble {
    /// Checks and flattens the attributes. `n_outputs` is the number of classes or targets.
    pub fn build(attrs: &TreeAttributes, n_outputs: usize) -> Result<Ensemble, String> {
        let n = attrs.node_ids.len();
        let same_len = |name: &str, len: usize| {
            if len == n { Ok(()) } else { Err(format!("nodes_{name} has {len} entries, nodes_nodeids has {n}")) }
        };
        same_len("treeids", attrs.tree_ids.len())?;
        same_len("featureids", attrs.feature_ids.len())?;
        same_len("modes", attrs.modes.len())?;
        same_len("values", attrs.values.len())?;
        same_len("truenodeids", attrs.true_ids.len())?;
        same_len("falsenodeids", attrs.false_ids.len())?;
        if !attrs.missing_tracks_true.is_empty() {
            same_len("missing_value_tracks_true", attrs.missing_tracks_true.len())?;
        }
        if n == 0 {
            return Err("the ensemble has no nodes".to_owned());
        }
        if n_outputs > MAX_OUTPUTS {
            return Err(format!("the ensemble has {n_outputs} classes or targets; at most {MAX_OUTPUTS} are served"));
        }
        if n >= u32::MAX as usize / 2 {
            return Err(format!("the ensemble has {n} nodes, too many"));
        }
        let votes_len = attrs.leaf_node_ids.len();
        if attrs.leaf_tree_ids.len() != votes_len
            || attrs.leaf_targets.len() != votes_len
            || attrs.leaf_weights.len() != votes_len
        {
            return Err("the leaf attributes (tree ids, node ids, ids, weights) differ in length".to_owned());
        }

        // Flat index of every (tree, node); trees in order of first appearance, each rooted at its first node.
        let mut index: HashMap<(i64, i64), u32> = HashMap::with_capacity(n);
        let mut roots = Vec::new();
        let mut trees_seen: HashSet<i64> = HashSet::new();
        for (ix, (&tree, &node)) in attrs.tree_ids.iter().zip(&attrs.node_ids).enumerate() {
            if index.insert((tree, node), ix as u32).is_some() {
                return Err(format!("tree {tree} lists node {node} twice"));
            }
            if trees_seen.insert(tree) {
                roots.push(ix as u32);
            }
        }

        // Votes grouped by leaf, in attribute order within a leaf.
        let mut leaf_votes: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n];
        for v in 0..votes_len {
            let key = (attrs.leaf_tree_ids[v], attrs.leaf_node_ids[v]);
            let &ix = index
                .get(&key)
                .ok_or_else(|| format!("a leaf weight names tree {} node {}, which does not exist", key.0, key.1))?;
            let target = attrs.leaf_targets[v];
            if target < 0 || target as usize >= n_outputs {
                return Err(format!("a leaf weight is for output {target}, but there are {n_outputs}"));
            }
            leaf_votes[ix as usize].push((target as u32, attrs.leaf_weights[v]));
        }

        let mut nodes = Vec::with_capacity(n);
        let mut votes = Vec::with_capacity(votes_len);
        let mut n_features = 0usize;
        for (ix, leaf) in leaf_votes.iter().enumerate() {
            let tree = attrs.tree_ids[ix];
            let mode = attrs.modes[ix];
            if mode == Mode::Leaf {
                let start = votes.len() as u32;
                votes.extend_from_slice(leaf);
                nodes.push(Node {
                    threshold: 0.0,
                    feature: 0,
                    yes: start,
                    no: votes.len() as u32,
                    mode,
                    missing_yes: false,
                });
                continue;
            }
            if !leaf.is_empty() {
                return Err(format!("tree {tree} node {} is a branch but has leaf weights", attrs.node_ids[ix]));
            }
            let child = |id: i64| {
                index
                    .get(&(tree, id))
                    .copied()
                    .ok_or_else(|| format!("tree {tree} has no node {id}, which a branch points to"))
            };
            let feature = attrs.feature_ids[ix];
            let feature = u32::try_from(feature).map_err(|_| format!("tree {tree} reads feature {feature}"))?;
            n_features = n_features.max(feature as usize + 1);
            nodes.push(Node {
                threshold: attrs.values[ix],
                feature,
                yes: child(attrs.true_ids[ix])?,
                no: child(attrs.false_ids[ix])?,
                mode,
                missing_yes: attrs.missing_tracks_true.get(ix).copied().unwrap_or(false),
            });
        }
        let ensemble = Ensemble { nodes, roots, votes, n_outputs, n_features };
        ensemble.check_acyclic()?;
        Ok(ensemble)
    }

    /// A walk must end: every node is reached from its root at most once.
    fn check_acyclic(&self) -> Result<(), String> {
        let mut seen = vec![false; self.nodes.len()];
        let mut stack = Vec::new();
        for &root in &self.roots {
            stack.push(root);
            while let Some(ix) = stack.pop() {
                if std::mem::replace(&mut seen[ix as usize], true) {
                    return Err("a tree's branches form a cycle or share a node".to_owned());
                }
                let node = &self.nodes[ix as usize];
                if node.mode != Mode::Leaf {
                    stack.push(node.yes);
                    stack.push(node.no);
                }
            }
        }
        Ok(())
    }

    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    pub fn n_outputs(&self) -> usize {
        self.n_outputs
    }

    /// The leaf a row ends in, starting from `root`.
    #[inline]
    fn leaf(&self, root: u32, row: &[f32]) -> &Node {
        let mut node = &self.nodes[root as usize];
        loop {
            let x = row[node.feature as usize];
            let yes = match node.mode {
                Mode::Leq => x <= node.threshold,
                Mode::Lt => x < node.threshold,
                Mode::Gte => x >= node.threshold,
                Mode::Gt => x > node.threshold,
                Mode::Eq => x == node.threshold,
                Mode::Neq => x != node.threshold,
                Mode::Leaf => return node,
            } || (node.missing_yes && x.is_nan());
            node = &self.nodes[if yes { node.yes } else { node.no } as usize];
        }
    }

    /// Aggregates every tree's votes for `rows` rows of `width` features into `scores` (`rows × outputs`, zeroed
    /// by the caller), marking in `has` the outputs that received a vote. Tree-major: each tree is walked for every
    /// row before the next, so its nodes stay in the closest cache. With `first_only`, only a leaf's first vote
    /// counts (the single-target regressor's rule).
    pub(super) fn accumulate_rows(
        &self,
        x: &[f32],
        width: usize,
        aggregate: Aggregate,
        first_only: bool,
        scores: &mut [f32],
        has: &mut [bool],
    ) {
        let outputs = self.n_outputs;
        for &root in &self.roots {
            for (r, row) in x.chunks_exact(width).enumerate() {
                let leaf = self.leaf(root, row);
                let end = if first_only { (leaf.yes + 1).min(leaf.no) } else { leaf.no };
                for &(target, weight) in &self.votes[leaf.yes as usize..end as usize] {
                    let at = r * outputs + target as usize;
                    let (score, seen) = (&mut scores[at], &mut has[at]);
                    match aggregate {
                        Aggregate::Sum | Aggregate::Average => *score += weight,
                        Aggregate::Min => *score = if !*seen || weight < *score { weight } else { *score },
                        Aggregate::Max => *score = if !*seen || weight > *score { weight } else { *score },
                    }
                    *seen = true;
                }
            }
        }
    }
}

pub(super) fn check_input(ensemble: &Ensemble, x: &[f32], rows: usize, width: usize) -> Result<(), String> {
    if x.len() != rows * width {
        return Err(format!("the input holds {} values, not {rows} rows of {width}", x.len()));
    }
    if width < ensemble.n_features {
        return Err(format!("the trees read {} features, the input has {width}", ensemble.n_features));
    }
    Ok(())
}
