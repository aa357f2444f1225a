//! The tract side of the tree ensembles: reading the ONNX attributes, the shape rules, and the typed operator that
//! evaluates with [`Classifier`] or [`Regressor`]. [`register`] puts both operators into tract's ONNX registry.

use std::sync::Arc;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::tract_ndarray::ArrayD;
use tract_onnx::tract_hir::internal::*;

use super::{Aggregate, Classifier, Mode, PostTransform, Regressor, TreeAttributes};

/// Replaces tract's tree ensemble operators (and adds the regressor, which tract lacks) with ours.
pub fn register(registry: &mut OnnxOpRegister) {
    registry.insert("TreeEnsembleClassifier", parse_classifier);
    registry.insert("TreeEnsembleRegressor", parse_regressor);
}

/// The class labels of a classifier, as the model names them.
#[derive(Debug, Clone, PartialEq)]
enum Labels {
    Int(Vec<i64>),
    Text(Vec<String>),
}

impl Labels {
    fn len(&self) -> usize {
        match self {
            Labels::Int(labels) => labels.len(),
            Labels::Text(labels) => labels.len(),
        }
    }

    fn datum_type(&self) -> DatumType {
        match self {
            Labels::Int(_) => DatumType::I64,
            Labels::Text(_) => DatumType::String,
        }
    }

    /// The labels of the winning classes, as a 1-D tensor.
    fn pick(&self, winners: &[usize]) -> TractResult<Tensor> {
        let n = winners.len();
        Ok(match self {
            Labels::Int(labels) => {
                ArrayD::from_shape_vec(vec![n], winners.iter().map(|&w| labels[w]).collect())?.into_tensor()
            }
            Labels::Text(labels) => {
                ArrayD::from_shape_vec(vec![n], winners.iter().map(|&w| labels[w].clone()).collect())?.into_tensor()
            }
        })
    }
}

#[derive(Debug)]
enum Model {
    Classifier(Classifier, Labels),
    Regressor(Regressor),
}

/// One tree ensemble node of the graph, for both the inference and the typed model.
#[derive(Debug, Clone)]
pub struct TreeEnsemble {
    model: Arc<Model>,
}

impl PartialEq for TreeEnsemble {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.model, &other.model)
    }
}

impl Eq for TreeEnsemble {}

impl TreeEnsemble {
    fn op_name(&self) -> &'static str {
        match &*self.model {
            Model::Classifier(..) => "TreeEnsembleClassifier",
            Model::Regressor(_) => "TreeEnsembleRegressor",
        }
    }
}

fn parse_classifier(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attrs = Attributes(node);
    attrs.refuse_double(&["nodes_values_as_tensor", "class_weights_as_tensor", "base_values_as_tensor"])?;
    let labels = match (attrs.get("classlabels_int64s"), attrs.get("classlabels_strings")) {
        (Some(ints), None) => Labels::Int(ints.ints.clone()),
        (None, Some(strings)) => {
            Labels::Text(strings.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
        }
        _ => bail!("{}: exactly one of classlabels_int64s and classlabels_strings must be set", node.name),
    };
    let model =
        Classifier::new(&attrs.trees("class")?, labels.len(), attrs.floats("base_values"), attrs.post_transform()?)
            .map_err(|e| format_err!("{}: {e}", node.name))?;
    Ok((expand(TreeEnsemble { model: Arc::new(Model::Classifier(model, labels)) }), vec![]))
}

fn parse_regressor(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attrs = Attributes(node);
    attrs.refuse_double(&["nodes_values_as_tensor", "target_weights_as_tensor", "base_values_as_tensor"])?;
    let n_targets = attrs.get("n_targets").map_or(1, |a| a.i);
    let n_targets = usize::try_from(n_targets).map_err(|_| format_err!("{}: n_targets is {n_targets}", node.name))?;
    let aggregate = match attrs.string("aggregate_function")? {
        Some(name) => Aggregate::parse(&name).map_err(|e| format_err!("{}: {e}", node.name))?,
        None => Aggregate::Sum,
    };
    let model = Regressor::new(
        &attrs.trees("target")?,
        n_targets,
        attrs.floats("base_values"),
        attrs.post_transform()?,
        aggregate,
    )
    .map_err(|e| format_err!("{}: {e}", node.name))?;
    Ok((expand(TreeEnsemble { model: Arc::new(Model::Regressor(model)) }), vec![]))
}

/// Attribute lookup on one node; a missing list reads as empty.
struct Attributes<'a>(&'a NodeProto);

impl Attributes<'_> {
    fn get(&self, name: &str) -> Option<&tract_onnx::pb::AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }

    fn ints(&self, name: &str) -> Vec<i64> {
        self.get(name).map(|a| a.ints.clone()).unwrap_or_default()
    }

    fn floats(&self, name: &str) -> Vec<f32> {
        self.get(name).map(|a| a.floats.clone()).unwrap_or_default()
    }

    fn string(&self, name: &str) -> TractResult<Option<String>> {
        self.get(name)
            .map(|a| String::from_utf8(a.s.clone()).map_err(|_| format_err!("{}: {name} is not UTF-8", self.0.name)))
            .transpose()
    }

    fn post_transform(&self) -> TractResult<PostTransform> {
        match self.string("post_transform")? {
            Some(name) => PostTransform::parse(&name).map_err(|e| format_err!("{}: {e}", self.0.name)),
            None => Ok(PostTransform::None),
        }
    }

    /// Double-precision attributes would be rounded to f32 here and give other answers than the model's own runtime.
    fn refuse_double(&self, names: &[&str]) -> TractResult<()> {
        match names.iter().find(|name| self.get(name).is_some()) {
            Some(name) => bail!(
                "{}: {name} (double-precision trees) is not supported by the embedded backend; serve this model with \
                 backend = \"ort\"",
                self.0.name
            ),
            None => Ok(()),
        }
    }

    /// The nodes and the leaf votes; `leaf` is "class" for classifiers and "target" for regressors.
    fn trees(&self, leaf: &str) -> TractResult<TreeAttributes> {
        let modes = self
            .get("nodes_modes")
            .map(|a| a.strings.iter().map(|s| Mode::parse(&String::from_utf8_lossy(s))).collect::<Result<Vec<_>, _>>())
            .transpose()
            .map_err(|e| format_err!("{}: {e}", self.0.name))?
            .unwrap_or_default();
        Ok(TreeAttributes {
            tree_ids: self.ints("nodes_treeids"),
            node_ids: self.ints("nodes_nodeids"),
            feature_ids: self.ints("nodes_featureids"),
            modes,
            values: self.floats("nodes_values"),
            true_ids: self.ints("nodes_truenodeids"),
            false_ids: self.ints("nodes_falsenodeids"),
            missing_tracks_true: self.ints("nodes_missing_value_tracks_true").iter().map(|&v| v != 0).collect(),
            leaf_tree_ids: self.ints(&format!("{leaf}_treeids")),
            leaf_node_ids: self.ints(&format!("{leaf}_nodeids")),
            leaf_targets: self.ints(&format!("{leaf}_ids")),
            leaf_weights: self.floats(&format!("{leaf}_weights")),
        })
    }
}

impl Expansion for TreeEnsemble {
    fn name(&self) -> StaticName {
        self.op_name().into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(match &*self.model {
            Model::Classifier(..) => 2,
            Model::Regressor(_) => 1,
        })
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        s.equals(&inputs[0].rank, 2)?;
        match &*self.model {
            Model::Classifier(model, labels) => {
                check_output_arity(outputs, 2)?;
                s.equals(&outputs[0].datum_type, labels.datum_type())?;
                s.equals(&outputs[0].rank, 1)?;
                s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
                s.equals(&outputs[1].datum_type, DatumType::F32)?;
                s.equals(&outputs[1].rank, 2)?;
                s.equals(&outputs[1].shape[0], &inputs[0].shape[0])?;
                s.equals(&outputs[1].shape[1], model.n_classes().to_dim())?;
            }
            Model::Regressor(model) => {
                check_output_arity(outputs, 1)?;
                s.equals(&outputs[0].datum_type, DatumType::F32)?;
                s.equals(&outputs[0].rank, 2)?;
                s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
                s.equals(&outputs[0].shape[1], model.n_targets().to_dim())?;
            }
        }
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for TreeEnsemble {
    fn name(&self) -> StaticName {
        self.op_name().into()
    }

    op_as_typed_op!();
}

impl EvalOp for TreeEnsemble {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let &[rows, width] = input.shape() else { bail!("tree ensembles take a 2-D input, got {:?}", input.shape()) };
        let input = input.cast_to::<f32>()?;
        let view = input.to_plain_array_view::<f32>()?;
        let owned;
        let x = match view.as_slice() {
            Some(x) => x,
            None => {
                owned = view.iter().copied().collect::<Vec<f32>>();
                &owned
            }
        };
        match &*self.model {
            Model::Classifier(model, labels) => {
                let (winners, scores) = model.predict(x, rows, width).map_err(|e| format_err!("{e}"))?;
                let scores = ArrayD::from_shape_vec(vec![rows, model.n_classes()], scores)?.into_tensor();
                Ok(tvec!(labels.pick(&winners)?.into_tvalue(), scores.into_tvalue()))
            }
            Model::Regressor(model) => {
                let values = model.predict(x, rows, width).map_err(|e| format_err!("{e}"))?;
                Ok(tvec!(ArrayD::from_shape_vec(vec![rows, model.n_targets()], values)?.into_tensor().into_tvalue()))
            }
        }
    }
}

impl TypedOp for TreeEnsemble {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let rows = inputs[0].shape[0].clone();
        Ok(match &*self.model {
            Model::Classifier(model, labels) => tvec!(
                TypedFact::dt_shape(labels.datum_type(), [rows.clone()]),
                f32::fact([rows, model.n_classes().to_dim()]),
            ),
            Model::Regressor(model) => tvec!(f32::fact([rows, model.n_targets().to_dim()])),
        })
    }

    as_op!();
}
