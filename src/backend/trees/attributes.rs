//! The operators' attributes, as ONNX lists them: node modes, aggregation, and the node and leaf arrays.

/// How a branch node compares the feature with its threshold; `Leaf` ends the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Leaf,
}

impl Mode {
    pub fn parse(name: &str) -> Result<Mode, String> {
        Ok(match name {
            "BRANCH_LEQ" => Mode::Leq,
            "BRANCH_LT" => Mode::Lt,
            "BRANCH_GTE" => Mode::Gte,
            "BRANCH_GT" => Mode::Gt,
            "BRANCH_EQ" => Mode::Eq,
            "BRANCH_NEQ" => Mode::Neq,
            "LEAF" => Mode::Leaf,
            other => return Err(format!("unknown node mode '{other}'")),
        })
    }
}

/// How a regressor combines the trees' values for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregate {
    #[default]
    Sum,
    Average,
    Min,
    Max,
}

impl Aggregate {
    pub fn parse(name: &str) -> Result<Aggregate, String> {
        Ok(match name {
            "SUM" => Aggregate::Sum,
            "AVERAGE" => Aggregate::Average,
            "MIN" => Aggregate::Min,
            "MAX" => Aggregate::Max,
            other => return Err(format!("unknown aggregate_function '{other}'")),
        })
    }
}

/// The node and leaf attributes as the operator lists them: parallel arrays, one entry per node or per leaf vote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TreeAttributes {
    pub tree_ids: Vec<i64>,
    pub node_ids: Vec<i64>,
    pub feature_ids: Vec<i64>,
    pub modes: Vec<Mode>,
    pub values: Vec<f32>,
    pub true_ids: Vec<i64>,
    pub false_ids: Vec<i64>,
    /// Per node: a missing (NaN) feature takes the true branch. Empty means false everywhere.
    pub missing_tracks_true: Vec<bool>,
    pub leaf_tree_ids: Vec<i64>,
    pub leaf_node_ids: Vec<i64>,
    /// The class (classifier) or target (regressor) each vote is for.
    pub leaf_targets: Vec<i64>,
    pub leaf_weights: Vec<f32>,
}
