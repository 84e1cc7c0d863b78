"""Page's ResNet-9 head as options: global max pooling and features scaled before the
classifier (saving and loading: test_airbench_options)."""
from __future__ import annotations

import keras
import numpy as np

from keras_resnet.models import create_model
from keras_resnet.training.freezing import part_of
from keras_resnet.training.sources import replace_head

KWARGS = dict(num_classes=10, input_shape=(32, 32, 3), width_multiplier=0.25)


def _logits(model, images):
    return keras.ops.convert_to_numpy(model(images, training=False))


def test_head_scale_multiplies_the_logits_of_a_bias_free_classifier():
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    plain = create_model("resnet9", pooling="max", classifier_activation=None, **KWARGS)
    scaled = create_model("resnet9", pooling="max", classifier_activation=None, head_scale=0.125,
                          **KWARGS)
    assert isinstance(scaled.get_layer("head_pool"), keras.layers.GlobalMaxPooling2D)
    assert scaled.count_params() == plain.count_params()
    assert "head_scale" not in [layer.name for layer in plain.layers]
    scaled.set_weights(plain.get_weights())
    bias = scaled.get_layer("predictions").bias
    bias.assign(np.zeros(bias.shape, "float32"))
    plain.get_layer("predictions").bias.assign(np.zeros(bias.shape, "float32"))
    np.testing.assert_allclose(_logits(scaled, images), 0.125 * _logits(plain, images),
                               rtol=1e-4, atol=1e-5)


def test_a_new_head_keeps_the_scale():
    model = create_model("resnet9", pooling="max", head_scale=0.125, **KWARGS)
    assert part_of("head_scale") == "head"
    tuned = replace_head(model, 3)
    names = [layer.name for layer in tuned.layers]
    assert names[-4:] == ["head_pool", "head_scale", "predictions", "probabilities"]
    assert tuned.get_layer("head_scale").scale == 0.125
    assert tuned.output.shape[-1] == 3
