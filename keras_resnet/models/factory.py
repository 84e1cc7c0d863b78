"""``create_model``: a zoo name plus options in, a plain Keras functional model out."""
from __future__ import annotations

import keras

from keras_resnet.models.resnet import build_resnet
from keras_resnet.models.zoo import get_spec

POOLINGS = ("avg", "max")
SHORTCUTS = ("projection", "avgpool", "zeropad")
STEMS = ("imagenet", "deep", "cifar", "whitening")
CLASSIFIER_ACTIVATIONS = ("softmax", "sigmoid", None)
ACTIVATIONS = ("relu", "gelu", "silu")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _rgb_triple(value, what):
    value = tuple(float(v) for v in value)
    _check(len(value) == 3, f"{what} needs 3 values (R, G, B), got {len(value)}")
    return value


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    input_shape=None,
    include_top: bool = True,
    pooling: str | None = "avg",
    dropout: float = 0.0,
    zero_init_residual: bool = False,
    drop_path_rate: float = 0.0,
    width_multiplier: float = 1.0,
    shortcut: str | None = None,
    stem: str | None = None,
    classifier_activation: str | None = "softmax",
    mean=None,
    std=None,
    preprocessing: bool = True,
    bn_scale: bool = True,
    identity_init: bool = False,
    head_scale: float = 1.0,
    bn_momentum: float = 0.9,
    activation: str = "relu",
    stem_bn: bool = True,
) -> keras.Model:
    """Build the zoo entry ``name`` as a Keras functional model.

    Args:
        name: a zoo entry (``keras_resnet.list_models()``).
        num_classes: classifier outputs; 10 for the CIFAR entries, else 1000.
        input_shape: ``(height, width, 3)``; default ``(None, None, 3)``, any size.
        include_top: add the pooling, dropout and classifier head.
        pooling: ``"avg"`` or ``"max"`` global pooling (also without top; ``None`` there gives
            the last feature map).
        dropout: dropout rate before the classifier.
        zero_init_residual: start every residual branch at zero (last BN gamma, or the last
            conv of a pre-activation block), so each block begins as an identity.
        drop_path_rate: stochastic depth; block ``i`` of ``n`` drops its branch with probability
            ``drop_path_rate * i / (n - 1)``.
        width_multiplier: scales the width of every stage.
        shortcut: override the spec's shortcut, e.g. ``"projection"`` for option B of the CIFAR
            ResNets.
        stem: override the spec's stem: ``"imagenet"``, ``"deep"``, ``"cifar"`` or
            ``"whitening"`` (a frozen 2x2 patch-whitening conv, then BN and ReLU; set its
            filters from data with ``keras_resnet.models.whitening.init_patch_whitening``,
            which ``fit`` does).
        classifier_activation: ``"softmax"`` (probabilities), ``None`` (logits) or ``"sigmoid"``.
        mean, std: per-channel normalisation baked into the model, on the 0-1 scale; the
            default is the spec's (ImageNet or CIFAR-10 statistics). The model takes 0-255 pixels.
        preprocessing: set ``False`` to feed already-normalised inputs.
        bn_scale: give BatchNorm layers a learned scale (``gamma``). ``False`` fixes the scales
            at 1, as airbench does (pair it with a higher learning rate for the BatchNorm
            offsets: ``optimizer.bn_bias_lr_multiplier``); the zero-initialised last BatchNorm
            of a residual branch keeps its scale.
        identity_init: start each conv outside the residual branches (the stem, ResNet-9's
            stage entries, every conv of ``airbench94``) as an identity on its first input
            channels (airbench's dirac initialisation); in ``airbench96`` the convs of the
            residual branches too, as airbench96 does.
        head_scale: multiply the pooled features by this before the classifier (Page's
            ResNet-9 scales its logits by 0.125); 1 adds no layer.
        bn_momentum: BatchNorm moving-statistics momentum, Keras's convention (``moving =
            momentum * moving + (1 - momentum) * batch``). 0.9 is PyTorch's default (its
            ``momentum=0.1``); airbench, at batch 1024, uses 0.6 (its PyTorch ``momentum=0.4``).
        activation: the nonlinearity after every BatchNorm: ``"relu"`` (the ResNet papers),
            ``"gelu"`` (airbench; exact, not the tanh approximation) or ``"silu"``.
        stem_bn: ``False`` sends the whitening stem's output straight to the activation, as
            airbench does, instead of through a BatchNorm first. The whitened channels then
            keep the variances the whitening gave them: the faintest patch directions, which
            the whitening's ``eps`` damps, are not scaled back up to unit variance.
    """
    spec = get_spec(name)
    if num_classes is None:
        num_classes = spec.get("default_classes", 1000)
    _check(isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 1,
           f"num_classes must be a positive integer, got {num_classes!r}")
    input_shape = (None, None, 3) if input_shape is None else tuple(input_shape)
    _check(len(input_shape) == 3 and input_shape[-1] == 3,
           f"input_shape must be (height, width, 3), got {input_shape}")
    for side in input_shape[:2]:
        _check(side is None or (isinstance(side, int) and side >= 8),
               f"input height and width must be integers of at least 8 or None, got {input_shape}")
    _check(pooling in POOLINGS or (pooling is None and not include_top),
           f"pooling must be one of {POOLINGS}" + ("" if include_top else " or None")
           + f", got {pooling!r}")
    _check(0.0 <= bn_momentum < 1.0, f"bn_momentum must be in [0, 1), got {bn_momentum}")
    _check(activation in ACTIVATIONS,
           f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    _check(head_scale > 0, f"head_scale must be positive, got {head_scale}")
    _check(0.0 <= dropout < 1.0, f"dropout must be in [0, 1), got {dropout}")
    _check(0.0 <= drop_path_rate < 1.0, f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
    _check(width_multiplier > 0, f"width_multiplier must be positive, got {width_multiplier}")
    if shortcut is not None:
        _check(shortcut in SHORTCUTS, f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        spec["shortcut"] = shortcut
    if stem is not None:
        _check(stem in STEMS, f"stem must be one of {STEMS}, got {stem!r}")
        spec["stem"] = stem
    _check(not (spec["stem"] == "whitening" and spec["shortcut"] == "zeropad"),
           "the whitening stem gives 24 channels, which zero-padding shortcuts cannot adapt; "
           "use the projection shortcut (shortcut='projection', model.shortcut=projection)")
    _check(bool(stem_bn) or spec["stem"] == "whitening",
           f"stem_bn=False applies to the whitening stem only; {name}'s stem is "
           f"{spec['stem']!r}")
    _check(classifier_activation in CLASSIFIER_ACTIVATIONS,
           f"classifier_activation must be one of {CLASSIFIER_ACTIVATIONS}, "
           f"got {classifier_activation!r}")
    mean = _rgb_triple(spec["mean"] if mean is None else mean, "mean")
    std = _rgb_triple(spec["std"] if std is None else std, "std")
    _check(all(s > 0 for s in std), f"std must be positive, got {std}")
    return build_resnet(
        spec, name=name, num_classes=num_classes, input_shape=input_shape,
        include_top=include_top, pooling=pooling, dropout=float(dropout),
        zero_init_residual=bool(zero_init_residual), drop_path_rate=float(drop_path_rate),
        width_multiplier=float(width_multiplier), classifier_activation=classifier_activation,
        mean=mean, std=std, preprocessing=preprocessing, bn_scale=bool(bn_scale),
        identity_init=bool(identity_init), head_scale=float(head_scale),
        bn_momentum=float(bn_momentum), activation=activation, stem_bn=bool(stem_bn),
    )
