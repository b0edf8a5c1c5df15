"""What SimpleTrainer and Batches are given is checked where it enters, in words that name
it: the scale against the model's dtype and the features it multiplies, a batch size larger
than the data, the predict node, the features scored, and the article's call with a node
where its list of inputs goes."""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph import distributed
from fastgraph.datasets import Batches
from fastgraph.trainer import ArticleSimpleTrainer, SimpleTrainer


def classifier(dtype=np.float32):
    return fg.models.mlp(4, (3,), 2, "ReLU", dtype=dtype, seed=0)


def trainer_of(model, predict=None, **options):
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    return SimpleTrainer(model.x, model.one_hot, model.predict if predict is None else predict,
                         optimizer, progress=False, log=lambda line: None, seed=0, **options)


def data(samples=12, dtype=np.uint8):
    rng = np.random.default_rng(0)
    features = rng.integers(0, 10, size=(samples, 4)).astype(dtype)  # times 1e37: finite
    return features, np.arange(samples) % 2


# -- 1. the trainer's scale: in the model's dtype, and against integer features -------------
@pytest.mark.parametrize("scale, rounded", [(1e39, "inf"), (1e-50, r"0\.0")])
def test_trainer_scale_must_be_positive_and_finite_in_the_model_dtype(scale, rounded):
    """1e39 is inf in float32 (training then stopped as diverged, blaming the learning
    rate); 1e-50 is 0 (it trained on all-zero inputs without a word)."""
    with pytest.raises(ValueError, match=rf"scale must be a positive number, got {scale!r}, "
                                         rf"which is {rounded} in float32".replace("+", r"\+")):
        trainer_of(classifier(), scale=scale)
    trainer_of(classifier(np.float64), scale=1e-50)  # a float64 model holds it


def test_trainer_refuses_integer_features_that_overflow_once_scaled():
    features, labels = data()
    features[3, 1] = 254
    with pytest.raises(ValueError, match=r"training features hold 254 \(sample 3\), which "
                                         r"scaled by 1e\+37 is infinite in float32"):
        trainer_of(classifier(), scale=1e37).train(features, labels)
    with pytest.raises(ValueError, match=r"test features hold 254 \(sample 3\), which scaled "
                                         r"by 1e\+37 is infinite in float32"):
        trainer_of(classifier(), scale=1e37).train(features // 255, labels, features, labels)
    huge = np.zeros((4, 4), np.int64)
    huge[2, 0] = -2**62
    with pytest.raises(ValueError, match=r"training features hold -4611686018427387904 "
                                         r"\(sample 2\), which scaled by 1e\+300 is infinite "
                                         r"in float64"):
        trainer_of(classifier(np.float64), scale=1e300).train(huge, np.arange(4) % 2)
    # float32 features in a float32 model that only overflow once scaled
    floats = np.ones((4, 4), np.float32)
    floats[1, 3] = 3e38
    with pytest.raises(ValueError, match=r"training features hold 3e\+38 \(sample 1\), which "
                                         r"scaled by 10 is infinite in float32"):
        trainer_of(classifier(), scale=10).train(floats, np.arange(4) % 2)
    assert len(trainer_of(classifier(), scale=1 / 255).train(features, labels)) == 1


# -- 2. Batches' scale ----------------------------------------------------------------------
@pytest.mark.parametrize("scale, message", [
    (0, r"Batches: scale must not be 0, got 0: every batch would be zeros"),
    (0.0, r"Batches: scale must not be 0, got 0.0"),
    (1e300, r"Batches: scale must be a finite number other than 0 in float32, got 1e\+300, "
            r"which is inf in float32"),
    (1e-50, r"Batches: scale must be a finite number other than 0 in float32, got 1e-50, "
            r"which is 0.0 in float32"),
])
def test_batches_scale_must_be_finite_and_nonzero_in_the_dtype(scale, message):
    features, labels = data(5)
    with pytest.raises(ValueError, match=message):
        Batches(features, labels, 2, classes=2, scale=scale)
    # a negative scale multiplies the features as a positive one does
    batches = Batches(features, labels, 5, classes=2, scale=-1, shuffle=False)
    x, _ = next(iter(batches))
    np.testing.assert_array_equal(x, -features.astype(np.float32))


def test_batches_refuse_features_that_overflow_once_scaled():
    """uint8 pixels times 1e37, and float64 numbers beyond float32's range, were NaN or inf
    in the batches with at most NumPy's overflow warning."""
    features, labels = data(5)
    features[2, 3] = 254
    with pytest.raises(ValueError, match=r"Batches: features hold 254 \(sample 2\), which "
                                         r"scaled by 1e\+37 is infinite in float32"):
        Batches(features, labels, 2, classes=2, scale=1e37)
    floats = np.zeros((5, 4))
    floats[4, 1] = -1e300
    with pytest.raises(ValueError, match=r"Batches: features hold -1e\+300 \(sample 4\), which "
                                         r"scaled by 1 is infinite in float32"):
        Batches(floats, labels, 2, classes=2)
    assert len(Batches(floats, labels, 2, classes=2, dtype=np.float64)) == 3  # float64 holds it


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batches_refuse_features_that_are_not_finite(bad, dtype):
    """NaN or infinite features were taken and batched as they were: NaN in, NaN out."""
    features, labels = data(5)
    floats = features.astype(dtype)
    floats[3, 2] = bad
    with pytest.raises(ValueError, match=rf"Batches: features hold {bad} \(sample 3\): "
                                         r"batches need finite numbers"):
        Batches(floats, labels, 2, classes=2)
    floats[3, 2] = np.finfo(dtype).max  # the largest finite number is a number
    assert len(Batches(floats, labels, 2, classes=2, dtype=dtype)) == 3


# -- 3. a batch size larger than the data ----------------------------------------------------
def test_a_batch_size_larger_than_the_data_allocates_for_the_data_only():
    """Buffers of batch_size rows: a MemoryError of terabytes for 10**12 and 5 samples."""
    features, labels = data(5)
    batches = Batches(features, labels, 10**12, classes=2, shuffle=False)
    assert batches.batch_size == 10**12 and len(batches) == 1
    (x, y), = list(batches)
    assert x.shape == (5, 4) and y.shape == (5, 2)
    np.testing.assert_array_equal(x, features.astype(np.float32))
    model = classifier()
    assert list(batches.feed(model.x, model.one_hot)) == [5]
    shards = [[len(x) for x, _ in distributed.ShardedBatches(features, labels, 10**12, rank, 2,
                                                             classes=2)] for rank in range(2)]
    assert shards == [[2], [3]]
    history = trainer_of(classifier(), batch_size=10**12).train(features, labels)
    assert history[-1]["samples"] == 5


# -- 4. the predict node ------------------------------------------------------------------
def test_predict_must_depend_on_x_alone_and_give_one_number_per_class():
    model = classifier()
    with model.graph:
        bias = fg.Variable(dim=(2, 1), init=True, trainable=True, name="bias")
        other = fg.Variable(dim=(2, 1), init=False, trainable=False, name="other")
        of_other = fg.ops.SoftMax(other, name="of_other")
        of_both = fg.ops.Add(model.logits, model.one_hot, name="of_both")
        three = fg.layer.fc(model.x, 4, 3, None)
    with pytest.raises(ValueError, match=r"SimpleTrainer: predict bias does not depend on the "
                                         r"input x \(it reads no input \(only parameters\)\)"):
        trainer_of(model, bias)
    with pytest.raises(ValueError, match=r"SimpleTrainer: predict of_other does not depend on "
                                         r"the input x \(it reads other\)"):
        trainer_of(model, of_other)
    with pytest.raises(ValueError, match=r"SimpleTrainer: predict of_both depends on the input "
                                         r"one_hot besides x: it must depend on x alone"):
        trainer_of(model, of_both)
    with pytest.raises(ValueError, match=rf"SimpleTrainer: predict {three.name} gives 3 numbers "
                                         r"per sample \(3, 1\), but the labels one_hot have 2 "
                                         r"classes"):
        trainer_of(model, three)
    with pytest.raises(ValueError, match=r"SimpleTrainer: predict loss is the optimizer's "
                                         r"target \(the loss\)"):
        trainer_of(model, model.loss)
    weights = next(node for node in model.graph.nodes if getattr(node, "trainable", False))
    with pytest.raises(ValueError, match=rf"SimpleTrainer: x {weights.name} is not an input "
                                         r"node \(a Variable with trainable=False\)"):
        SimpleTrainer(weights, model.one_hot, model.predict,
                      fg.optimizer.Adam(model.graph, model.loss, 0.01))
    trainer_of(model, model.logits)  # logits: one number per class, of x alone


# -- 5. the features scored ------------------------------------------------------------------
def test_scores_check_their_features_as_training_does():
    """NaN features raised TrainingDiverged (blaming the model), strings NumPy's
    UFuncTypeError, 1e300 in a float32 model TrainingDiverged too."""
    trainer = trainer_of(classifier(), scale=1 / 255)
    features, _ = data(4, np.float64)
    features[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"scores: the features hold nan \(sample 1\): scoring "
                                         r"needs finite numbers"):
        trainer.scores(features)
    with pytest.raises(ValueError, match=r"scores: the features must be numbers, got dtype <U"):
        trainer.scores(np.zeros((2, 4)).astype(str))
    features[1, 2] = 1e300
    with pytest.raises(ValueError, match=r"scores: the features hold 1e\+300 \(sample 1\), "
                                         r"which scaled by 0.00392157 is infinite in float32"):
        trainer.scores(features)
    with pytest.raises(ValueError, match=r"scores: the features have 1 numbers per sample, but "
                                         r"x takes 4 \(4, 1\) \(one sample\? give it as "
                                         r"features\[None\]\)"):
        trainer.scores(np.zeros(4))
    features[1, 2] = 7
    assert trainer.scores(features).shape == (4, 2)


# -- 6. the article's call with a node where its list of inputs goes -------------------------
def article_graph():
    graph = fg.Graph(dtype=np.float64, seed=0)
    with graph:
        x = fg.Variable(dim=(4, 1), init=False, trainable=False, name="x")
        label = fg.Variable(dim=(1, 1), init=False, trainable=False, name="label")
        output = fg.layer.fc(x, 4, 1, None)
        loss = fg.ops.loss.LogLoss(fg.ops.Multiply(label, output))
        optimizer = fg.optimizer.Adam(graph, loss, 0.05)
    return x, label, loss, optimizer


def test_the_articles_call_with_a_node_says_input_x_is_a_list():
    x, label, loss, optimizer = article_graph()
    with pytest.raises(TypeError, match=r"SimpleTrainer: epoches is an option of the article's "
                                        r"SimpleTrainer\(input_x, input_y, loss_op, optimizer, "
                                        r"epoches, \.\.\.\), whose input_x must be a list of "
                                        r"input nodes \(\[x\]\), got the node x"):
        SimpleTrainer(x, label, loss, optimizer, epoches=1)
    with pytest.raises(TypeError, match=r"metrics_ops is an option of the article's"):
        SimpleTrainer(x, label, loss, optimizer, 1, metrics_ops=[])
    with pytest.raises(ValueError, match=r"is the optimizer's target \(the loss\).*takes a "
                                         r"list of input nodes first: \[x\]"):
        SimpleTrainer(x, label, loss, optimizer, 1)  # the article's epoches as batch_size
    trainer = SimpleTrainer(input_x=[x], input_y=label, loss_op=loss, optimizer=optimizer,
                            epoches=1)
    assert isinstance(trainer, ArticleSimpleTrainer)
