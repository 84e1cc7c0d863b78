"""One functional builder for every ResNet in the zoo.

The builder reads a spec row (``keras_resnet.models.zoo``) and emits a plain Keras functional
graph of built-in layers only, so a saved ``.keras`` file loads with ``keras.models.load_model``
without this package. Layer names are stable (``stage2_block1_conv2``): weight import, freezing
by stage and feature extraction key on them.

Convolutions that both stride and have a kernel larger than 1 pad explicitly and symmetrically
(``ZeroPadding2D`` + ``"valid"``), as PyTorch and ``keras.applications`` do; TensorFlow's
``"same"`` padding would pad only the bottom/right and shift the features by half a pixel.
"""
from __future__ import annotations

import keras
from keras import layers

from keras_resnet.models.whitening import PATCH_SIZE, WHITENING_FILTERS, WHITENING_LAYER

BOTTLENECK_EXPANSION = 4


def kernel_initializers(kind: str):
    """(conv, classifier) initialisers for a spec's ``kernel_init``. ``"he"``: He normal
    for convs, Keras's Glorot uniform for the classifier. ``"torch"``: PyTorch's default for
    both (uniform within +-1/sqrt(fan_in)), which airbench's tuning assumes: its weights are
    2.4x smaller than He normal's, and with BatchNorm after every conv the weights' size sets
    how fast they move, so the same rates train differently under another initialiser."""
    if kind == "torch":
        # A config, not an instance: each layer then builds its own initialiser (one shared,
        # unseeded instance would give every layer of a shape the same weights).
        torch_default = {"class_name": "VarianceScaling",
                         "config": {"scale": 1.0 / 3.0, "mode": "fan_in",
                                    "distribution": "uniform"}}
        return torch_default, torch_default
    if kind == "he":
        return "he_normal", "glorot_uniform"
    raise ValueError(f"unknown kernel_init {kind!r}: use he or torch")


class _Builder:
    """Holds the spec and options while the graph is emitted, so each helper stays short."""

    def __init__(self, spec: dict, *, zero_init_residual: bool, drop_path_rate: float,
                 width_multiplier: float, bn_scale: bool = True, bn_momentum: float = 0.9,
                 activation: str = "relu", stem_bn: bool = True):
        self.spec = spec
        self.stem_bn = stem_bn
        self.conv_init, self.classifier_init = kernel_initializers(spec.get("kernel_init", "he"))
        self.activation = activation
        self.bn_momentum = bn_momentum
        self.zero_init_residual = zero_init_residual
        self.bn_scale = bn_scale
        # Convs outside residual branches and shortcuts (stem, ResNet-9 stage entries): the
        # ones identity_init may turn into identities.
        self.plain_convs = []
        # Convs of residual branches: identity_init covers them too where the spec says so
        # (``identity_init_branches``: airbench96 initialises every conv as an identity).
        self.residual_branch_convs = []
        self.drop_path_rate = drop_path_rate
        self.width_multiplier = width_multiplier
        self.total_blocks = sum(spec["layers"])
        self.block_index = 0

    # -- small pieces ------------------------------------------------------------------------
    def width(self, filters: int) -> int:
        return max(1, int(round(filters * self.width_multiplier)))

    def conv(self, x, filters, kernel, stride, name, *, normalized: bool, zero_init=False):
        bias_mode = self.spec["conv_bias"]
        use_bias = bias_mode == "all" or (bias_mode == "unnormalized" and not normalized)
        if stride > 1 and kernel > 1:
            x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
            padding = "valid"
        else:
            padding = "same" if kernel > 1 else "valid"
        return layers.Conv2D(
            filters, kernel, strides=stride, padding=padding, use_bias=use_bias,
            kernel_initializer="zeros" if zero_init else self.conv_init, name=name,
        )(x)

    def bn(self, x, name, *, zero_gamma=False):
        # Without learned scales (bn_scale=False) a zero-initialised branch end keeps its
        # scale: a scale fixed at zero would shut the branch for good.
        return layers.BatchNormalization(
            epsilon=self.spec["bn_epsilon"], momentum=self.bn_momentum,
            scale=self.bn_scale or zero_gamma,
            gamma_initializer="zeros" if zero_gamma else "ones", name=name,
        )(x)

    def act(self, x, name):
        """The network's nonlinearity. ReLU keeps its ``*_relu*`` layer names; another
        activation (airbench's GELU) takes its own name in their place (``stem_gelu``)."""
        if self.activation == "relu":
            return layers.ReLU(name=name)(x)
        return layers.Activation(self.activation, name=name.replace("relu", self.activation))(x)

    def conv_bn_relu(self, x, filters, kernel, stride, name, suffix=""):
        self.plain_convs.append(f"{name}_conv{suffix}")
        x = self.conv(x, filters, kernel, stride, f"{name}_conv{suffix}", normalized=True)
        x = self.bn(x, f"{name}_bn{suffix}")
        return self.act(x, f"{name}_relu{suffix}")

    # -- stem ----------------------------------------------------------------------------------
    def stem(self, x):
        kind, preact = self.spec["stem"], self.spec["preact"]
        stem_width = self.width(self.spec.get("stem_width", self.spec["widths"][0]))
        if kind == "whitening":
            # Frozen 2x2 patch-whitening filters (set from data by init_patch_whitening).
            x = layers.Conv2D(WHITENING_FILTERS, PATCH_SIZE, padding="valid", use_bias=False,
                              trainable=False, name=WHITENING_LAYER)(x)
            if self.stem_bn:
                x = self.bn(x, "stem_bn")
            x = self.act(x, "stem_relu")
        elif kind == "deep":
            x = self.conv_bn_relu(x, self.width(32), 3, 2, "stem", "1")
            x = self.conv_bn_relu(x, self.width(32), 3, 1, "stem", "2")
            x = self.conv_bn_relu(x, stem_width, 3, 1, "stem", "3")
        else:
            kernel, stride = (7, 2) if kind == "imagenet" else (3, 1)
            self.plain_convs.append("stem_conv")
            x = self.conv(x, stem_width, kernel, stride, "stem_conv", normalized=not preact)
            if not preact:
                x = self.bn(x, "stem_bn")
                x = self.act(x, "stem_relu")
        if kind in ("imagenet", "deep"):
            x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
            x = layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
        return x

    # -- residual blocks -----------------------------------------------------------------------
    def shortcut(self, x, out_channels, stride, name):
        """Identity when shapes match, else the spec's way of changing shape."""
        in_channels = x.shape[-1]
        kind = self.spec["shortcut"]
        if in_channels == out_channels:
            if stride == 1:
                return x
            return layers.MaxPooling2D(1, strides=stride, name=f"{name}_shortcut_pool")(x)
        if kind == "zeropad":
            if out_channels != 2 * in_channels:
                raise ValueError("zero-padding shortcuts need stages that double their width")
            if stride > 1:
                x = layers.MaxPooling2D(1, strides=stride, name=f"{name}_shortcut_pool")(x)
            zeros = layers.Rescaling(0.0, name=f"{name}_shortcut_zeros")(x)
            return layers.Concatenate(name=f"{name}_shortcut_pad")([x, zeros])
        if kind == "avgpool" and stride > 1:
            x = layers.AveragePooling2D(stride, strides=stride, padding="same",
                                        name=f"{name}_shortcut_pool")(x)
            stride = 1
        preact = self.spec["preact"]
        x = self.conv(x, out_channels, 1, stride, f"{name}_shortcut_conv", normalized=not preact)
        if not preact:
            x = self.bn(x, f"{name}_shortcut_bn")
        return x

    def branch_convs(self, filters, stride):
        """(filters, kernel, stride) of each conv on the residual branch."""
        if self.spec["block"] == "basic":
            return [(filters, 3, stride), (filters, 3, 1)], filters
        out = filters * BOTTLENECK_EXPANSION
        s1, s2 = (stride, 1) if self.spec["stride_in"] == "conv1" else (1, stride)
        return [(filters, 1, s1), (filters, 3, s2), (out, 1, 1)], out

    def block(self, x, filters, stride, name):
        if self.spec["block"] == "plain":
            # One conv + BN + activation, no shortcut (airbench's second conv of a group).
            return self.conv_bn_relu(x, filters, 3, stride, name, "1")
        convs, out_channels = self.branch_convs(filters, stride)
        preact = self.spec["preact"]
        if preact:
            y = self.bn(x, f"{name}_preact_bn")
            y = self.act(y, f"{name}_preact_relu")
            # The projection sees the normalised input; an identity/pooled shortcut the raw one.
            shortcut_input = y if (x.shape[-1] != out_channels) else x
        else:
            y, shortcut_input = x, x
        shortcut = self.shortcut(shortcut_input, out_channels, stride, name)
        last = len(convs)
        for i, (f, k, s) in enumerate(convs, start=1):
            is_last = i == last
            if preact and is_last:
                y = self.conv(y, f, k, s, f"{name}_conv{i}", normalized=False,
                              zero_init=self.zero_init_residual)
                break
            self.residual_branch_convs.append(f"{name}_conv{i}")
            y = self.conv(y, f, k, s, f"{name}_conv{i}", normalized=True)
            y = self.bn(y, f"{name}_bn{i}", zero_gamma=is_last and self.zero_init_residual)
            if not is_last:
                y = self.act(y, f"{name}_relu{i}")
        rate = self.drop_path_rate * self.block_index / max(1, self.total_blocks - 1)
        self.block_index += 1
        if rate > 0:
            # Stochastic depth: drop the whole branch per sample (built-in Dropout, so saved
            # models need no custom layer).
            y = layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop_path")(y)
        x = layers.Add(name=f"{name}_add")([shortcut, y])
        if not preact:
            x = self.act(x, f"{name}_out")
        return x

    def entry(self, x, filters, name):
        """A conv_pool stage entry: conv, BN, activation and a 2x2 max pool. airbench pools
        right after the conv (``entry_pool: "before_bn"``), so BN and activation run on a
        quarter of the pixels."""
        pool_first = self.spec.get("entry_pool", "after_relu") == "before_bn"
        self.plain_convs.append(f"{name}_conv")
        x = self.conv(x, filters, 3, 1, f"{name}_conv", normalized=True)
        if pool_first:
            x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
        x = self.act(self.bn(x, f"{name}_bn"), f"{name}_relu")
        if not pool_first:
            x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
        return x

    def stages(self, x):
        spec = self.spec
        conv_pool = spec.get("stage_entry", "block") == "conv_pool"
        for s, (blocks, filters) in enumerate(zip(spec["layers"], spec["widths"]), start=1):
            if conv_pool:
                # ResNet-9: conv + pool change the shape; the blocks that follow keep it.
                x = self.entry(x, self.width(filters), f"stage{s}_entry")
                for b in range(1, blocks + 1):
                    x = self.block(x, self.width(filters), 1, f"stage{s}_block{b}")
                continue
            stage_stride = 1 if s == 1 else 2
            if spec["downsample_block"] == "last":
                # keras.applications V2: the last block of every stage but the final one strides.
                stage_stride = 2 if s < len(spec["layers"]) else 1
            for b in range(1, blocks + 1):
                first, final = b == 1, b == blocks
                strides_here = first if spec["downsample_block"] == "first" else final
                stride = stage_stride if strides_here else 1
                x = self.block(x, self.width(filters), stride, f"stage{s}_block{b}")
        if spec["preact"]:
            x = self.bn(x, "post_bn")
            x = self.act(x, "post_relu")
        return x


def build_resnet(spec: dict, *, name: str, num_classes: int, input_shape, include_top: bool,
                 pooling, dropout: float, zero_init_residual: bool, drop_path_rate: float,
                 width_multiplier: float, classifier_activation, mean, std,
                 preprocessing: bool, bn_scale: bool = True,
                 identity_init: bool = False, head_scale: float = 1.0,
                 bn_momentum: float = 0.9, activation: str = "relu",
                 stem_bn: bool = True) -> keras.Model:
    """Emit the functional graph of one spec row; arguments are validated by ``create_model``."""
    builder = _Builder(spec, zero_init_residual=zero_init_residual,
                       drop_path_rate=drop_path_rate, width_multiplier=width_multiplier,
                       bn_scale=bn_scale, bn_momentum=bn_momentum, activation=activation,
                       stem_bn=stem_bn)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = inputs
    if preprocessing:
        # Raw 0-255 pixels in, normalised inside the graph: saved and exported models take
        # the same input a camera gives.
        x = layers.Rescaling(
            scale=[1.0 / (255.0 * s) for s in std],
            offset=[-m / s for m, s in zip(mean, std)],
            name="preprocess",
        )(x)
    x = builder.stem(x)
    x = builder.stages(x)
    if include_top or pooling:
        pool = layers.GlobalMaxPooling2D if pooling == "max" else layers.GlobalAveragePooling2D
        x = pool(name="head_pool")(x)
    if include_top:
        if head_scale != 1.0:
            # Page's ResNet-9 multiplies its logits by 1/8; scaling the pooled features instead
            # trains the same way (same logits and gradients for a bias-free classifier) and
            # leaves "predictions" the last weighted layer, where fine-tuning swaps heads.
            x = layers.Rescaling(head_scale, name="head_scale")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name="head_dropout")(x)
        # float32 classifier: logits and probabilities keep full precision under mixed precision.
        x = layers.Dense(num_classes, use_bias=spec.get("classifier_bias", True),
                         kernel_initializer=builder.classifier_init, dtype="float32",
                         name="predictions")(x)
        if classifier_activation is not None:
            x = layers.Activation(classifier_activation, dtype="float32", name="probabilities")(x)
    model = keras.Model(inputs, x, name=name)
    if identity_init:
        convs = builder.plain_convs
        if spec.get("identity_init_branches", False):
            convs = convs + builder.residual_branch_convs
        for conv in convs:
            set_identity_kernel(model.get_layer(conv))
    return model


def set_identity_kernel(conv: layers.Conv2D) -> None:
    """Make the first ``min(in, out)`` filters of a stride-1 conv copy their input channel
    (airbench's dirac initialisation); the other filters keep their random start.

    A plain (non-residual) conv then starts by passing its input through, as a residual block
    does, and deep stacks of them train from the first step. Set on the weights after building,
    so the saved layer config names only Keras's own initialiser.
    """
    kernel = keras.ops.convert_to_numpy(conv.kernel).copy()
    height, width, channels_in, channels_out = kernel.shape
    if conv.strides != (1, 1) or height % 2 == 0 or width % 2 == 0:
        return
    n = min(channels_in, channels_out)
    kernel[:, :, :, :n] = 0.0
    kernel[height // 2, width // 2, range(n), range(n)] = 1.0
    conv.kernel.assign(kernel)
