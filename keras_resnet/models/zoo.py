"""The model zoo: every ResNet variant is one row of data read by one builder.

A row names the architecture; ``create_model`` options (classes, input size, head, regularisation)
are applied on top. Adding a variant (ResNet-200, a wide ResNet) is adding a row.

Row keys (see ``keras_resnet.models.resnet.build_resnet`` for their meaning):

- ``block``: ``"basic"`` (two 3x3 convs), ``"bottleneck"`` (1x1, 3x3, 1x1 with expansion 4) or
  ``"plain"`` (one 3x3 conv + BN + activation, no shortcut: airbench).
- ``layers``: residual blocks per stage; ``widths``: the base filters of each stage;
  ``stem_width`` (optional): the stem's filters when they differ from the first stage's.
- ``stage_entry`` (optional): ``"block"`` (default: the first block of a stage downsamples) or
  ``"conv_pool"`` (each stage opens with a 3x3 conv + BN + ReLU and a 2x2 max pool, and its
  residual blocks keep the shape: ResNet-9); ``entry_pool``: ``"after_relu"`` (default) or
  ``"before_bn"`` (pool right after the conv, as airbench does).
- ``stem``: ``"imagenet"`` (7x7/2 conv + 3x3/2 max pool), ``"deep"`` (three 3x3 convs + max pool,
  ResNet-C/D), ``"cifar"`` (one 3x3 conv, no pooling) or ``"whitening"`` (a frozen 2x2
  patch-whitening conv initialised from data: ``keras_resnet.models.whitening``).
- ``shortcut``: how a block changes shape on its identity path: ``"projection"`` (1x1 conv + BN),
  ``"avgpool"`` (2x2 average pool, then 1x1 conv + BN: ResNet-D) or ``"zeropad"`` (subsample and
  zero-pad the channels: option A of He et al. 2016).
- ``preact``: pre-activation (ResNet v2) blocks.
- ``stride_in``: which conv of a bottleneck carries the stride: ``"conv2"`` (the 3x3: v1.5 and
  torchvision) or ``"conv1"`` (the first 1x1: the original v1 and ``keras.applications``).
- ``downsample_block``: ``"first"`` or ``"last"`` block of a stage downsamples (Keras's V2 nets
  use the last).
- ``conv_bias``: ``"none"``, ``"all"`` (Keras v1) or ``"unnormalized"`` (only convs not followed
  by their own BN: Keras v2); with ``bn_epsilon``, the exact layouts of ``keras.applications``.
- ``mean``, ``std``: the preprocessing baked into the model, in the 0-1 pixel scale.
- ``classifier_bias`` (optional, default true): ``False`` for a bias-free classifier (airbench).
- ``identity_init_branches`` (optional, default false): ``identity_init`` also starts the convs
  of residual branches as identities, not only the convs outside them (airbench96 does so).
- ``kernel_init`` (optional, default ``"he"``): ``"torch"`` for PyTorch's default
  initialisation, which networks tuned in PyTorch (airbench) expect.
"""
from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# keras.applications ResNet v1 ("caffe" mode) subtracts these means (RGB order) and does not scale.
CAFFE_MEAN = (123.68 / 255.0, 116.779 / 255.0, 103.939 / 255.0)
CAFFE_STD = (1.0 / 255.0,) * 3
# keras.applications ResNet v2 ("tf" mode) maps pixels to [-1, 1].
TF_MEAN = (0.5, 0.5, 0.5)
TF_STD = (0.5, 0.5, 0.5)

IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)

_TORCHVISION = dict(
    stem="imagenet", shortcut="projection", preact=False, stride_in="conv2",
    downsample_block="first", conv_bias="none", bn_epsilon=1e-5,
    widths=IMAGENET_WIDTHS, mean=IMAGENET_MEAN, std=IMAGENET_STD, family="resnet",
)
_RESNET_D = dict(_TORCHVISION, stem="deep", shortcut="avgpool", family="resnet-d")
_PREACT = dict(_TORCHVISION, preact=True, family="resnetv2")
_CIFAR = dict(
    _TORCHVISION, block="basic", stem="cifar", shortcut="zeropad", widths=CIFAR_WIDTHS,
    mean=CIFAR10_MEAN, std=CIFAR10_STD, family="cifar-resnet", default_classes=10,
    default_input_shape=(32, 32, 3),
)
_KERAS_V1 = dict(
    _TORCHVISION, block="bottleneck", stride_in="conv1", conv_bias="all", bn_epsilon=1.001e-5,
    mean=CAFFE_MEAN, std=CAFFE_STD, family="keras-applications",
)
_KERAS_V2 = dict(
    _KERAS_V1, preact=True, stride_in="conv2", downsample_block="last",
    conv_bias="unnormalized", mean=TF_MEAN, std=TF_STD,
)
# ResNet-18/34 with the CIFAR stem (3x3 conv, no max pool), as usually trained on 32x32 images.
_SMALL_INPUT = dict(_TORCHVISION, stem="cifar", mean=CIFAR10_MEAN, std=CIFAR10_STD,
                    default_classes=10, default_input_shape=(32, 32, 3))

_AIRBENCH = dict(_SMALL_INPUT, block="plain", layers=(1, 1, 1), stem="whitening",
                 stage_entry="conv_pool", entry_pool="before_bn", classifier_bias=False,
                 kernel_init="torch", family="airbench")

ZOO: dict[str, dict] = {
    # ImageNet ResNets, v1.5 (stride on the 3x3 conv, no conv bias): torchvision-equivalent.
    "resnet18": dict(_TORCHVISION, block="basic", layers=(2, 2, 2, 2)),
    "resnet34": dict(_TORCHVISION, block="basic", layers=(3, 4, 6, 3)),
    "resnet50": dict(_TORCHVISION, block="bottleneck", layers=(3, 4, 6, 3)),
    "resnet101": dict(_TORCHVISION, block="bottleneck", layers=(3, 4, 23, 3)),
    "resnet152": dict(_TORCHVISION, block="bottleneck", layers=(3, 8, 36, 3)),
    # ResNet-D (Bag of Tricks): deep stem and average-pool shortcut.
    "resnet50d": dict(_RESNET_D, block="bottleneck", layers=(3, 4, 6, 3)),
    "resnet101d": dict(_RESNET_D, block="bottleneck", layers=(3, 4, 23, 3)),
    # Pre-activation ResNets (He et al., Identity Mappings), timm's resnetv2 layout.
    "resnetv2_50": dict(_PREACT, block="bottleneck", layers=(3, 4, 6, 3)),
    "resnetv2_101": dict(_PREACT, block="bottleneck", layers=(3, 4, 23, 3)),
    "resnetv2_152": dict(_PREACT, block="bottleneck", layers=(3, 8, 36, 3)),
    # CIFAR ResNets of He et al. 2016: 6n+2 layers, 16/32/64 filters.
    "resnet20": dict(_CIFAR, layers=(3, 3, 3)),
    "resnet32": dict(_CIFAR, layers=(5, 5, 5)),
    "resnet44": dict(_CIFAR, layers=(7, 7, 7)),
    "resnet56": dict(_CIFAR, layers=(9, 9, 9)),
    "resnet110": dict(_CIFAR, layers=(18, 18, 18)),
    # ImageNet ResNet-18/34 adapted to 32x32 inputs (3x3 stem, no max pool).
    "resnet18_cifar": dict(_SMALL_INPUT, block="basic", layers=(2, 2, 2, 2)),
    "resnet34_cifar": dict(_SMALL_INPUT, block="basic", layers=(3, 4, 6, 3)),
    # ResNet-9 of Page (2018, "How to train your ResNet"), the DAWNBench CIFAR-10 network: few,
    # wide layers that train to high accuracy in few epochs. The head is global average
    # pooling like every other entry (Page's pools by max and scales the logits by 1/8).
    "resnet9": dict(_SMALL_INPUT, block="basic", layers=(1, 0, 1), widths=(128, 256, 512),
                    stem_width=64, stage_entry="conv_pool", family="resnet9"),
    # airbench94's network (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds"): not residual, but
    # ResNet-9's layout with one plain conv after each stage entry, 64-256-256 wide, a
    # patch-whitening stem, and pooling straight after each entry conv. The fastest known
    # CIFAR-10 trainer; the cifar10_airbench94 recipe's network.
    "airbench94": dict(_AIRBENCH, widths=(64, 256, 256)),
    # airbench95's network: the same at 128-384-384, 2.6x the multiply-adds per image.
    "airbench95": dict(_AIRBENCH, widths=(128, 384, 384)),
    # airbench96's network (its June 2024 revision): each stage entry is followed by a basic
    # residual block instead of one plain conv (10 convs in all), 128-512-512 wide, every conv
    # identity-initialised; 2.0x airbench95's multiply-adds per image.
    "airbench96": dict(_AIRBENCH, block="basic", widths=(128, 512, 512),
                       identity_init_branches=True),
    # Exact layouts of keras.applications (v1: stride on the first 1x1, conv biases).
    "keras_resnet50": dict(_KERAS_V1, layers=(3, 4, 6, 3)),
    "keras_resnet101": dict(_KERAS_V1, layers=(3, 4, 23, 3)),
    "keras_resnet152": dict(_KERAS_V1, layers=(3, 8, 36, 3)),
    "keras_resnet50v2": dict(_KERAS_V2, layers=(3, 4, 6, 3)),
    "keras_resnet101v2": dict(_KERAS_V2, layers=(3, 4, 23, 3)),
    "keras_resnet152v2": dict(_KERAS_V2, layers=(3, 8, 36, 3)),
}


def list_models() -> list[str]:
    """Names of every zoo entry, in table order."""
    return list(ZOO)


def get_spec(name: str) -> dict:
    """The spec row of ``name``; a ``ValueError`` naming the valid choices if unknown."""
    try:
        return dict(ZOO[name])
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown architecture {name!r}; choose one of: {', '.join(ZOO)}"
        ) from None


def depth(spec: dict) -> int:
    """Weighted layer count as in the papers (convs on the main path + the classifier)."""
    convs_per_block = {"plain": 1, "basic": 2, "bottleneck": 3}[spec["block"]]
    entry_convs = len(spec["layers"]) if spec.get("stage_entry") == "conv_pool" else 0
    return convs_per_block * sum(spec["layers"]) + entry_convs + 2
